"""RealNVP density on 2-D or 3-D residuals, laid out as the official RLE code.

Six affine coupling layers with alternating binary masks. Each layer has a scale net
``Linear(D,64)-LeakyReLU-Linear(64,64)-LeakyReLU-Linear(64,D)-Tanh`` and a translation net
(the same without Tanh); parameter names ``s.{i}.{0,2,4}`` / ``t.{i}.{0,2,4}`` and the ``mask``
buffer match the official state dict. The prior is a standard normal, written out in closed form
so nothing has to be moved between devices by hand.
"""
from __future__ import annotations

import math

import torch
from torch import nn

MASKS = {
    2: ((0.0, 1.0), (1.0, 0.0)),
    3: ((0.0, 0.0, 1.0), (1.0, 1.0, 0.0)),
}


def _coupling_net(dims: int, hidden: int, bounded: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(dims, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden),
                               nn.LeakyReLU(), nn.Linear(hidden, dims)]
    if bounded:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class RealNVP(nn.Module):
    """Normalising flow x <-> z with ``log_prob(x)`` = log N(z; 0, I) + log|det dz/dx|.

    Args:
        dims: 2 or 3 (the residual's dimension D).
        hidden: width of the coupling nets (64 in the paper).
        num_layers: number of coupling layers (6 in the paper); masks alternate.

    The nets keep PyTorch's default init: the official ``_init`` (Xavier) is never called.
    """

    def __init__(self, dims: int = 2, hidden: int = 64, num_layers: int = 6) -> None:
        super().__init__()
        if dims not in MASKS:
            raise ValueError(f"RealNVP supports dims 2 or 3, got {dims}")
        self.dims = dims
        pattern = MASKS[dims] * (num_layers // 2)
        self.register_buffer("mask", torch.tensor(pattern, dtype=torch.float32))
        self.s = nn.ModuleList(_coupling_net(dims, hidden, bounded=True) for _ in range(num_layers))
        self.t = nn.ModuleList(_coupling_net(dims, hidden, bounded=False) for _ in range(num_layers))

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> latent: x (M, D) -> (z (M, D), log|det dz/dx| (M,)). Layers run last to first."""
        z = x
        log_det = x.new_zeros(x.shape[0])
        for i in reversed(range(len(self.s))):
            keep = self.mask[i]
            z_kept = keep * z
            s = self.s[i](z_kept) * (1 - keep)
            t = self.t[i](z_kept) * (1 - keep)
            z = (1 - keep) * (z - t) * torch.exp(-s) + z_kept
            log_det = log_det - s.sum(dim=1)
        return z, log_det

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> data (sampling direction): z (M, D) -> x (M, D)."""
        x = z
        for i in range(len(self.s)):
            keep = self.mask[i]
            x_kept = x * keep
            s = self.s[i](x_kept) * (1 - keep)
            t = self.t[i](x_kept) * (1 - keep)
            x = x_kept + (1 - keep) * (x * torch.exp(s) + t)
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density of points x (M, D) -> (M,), in nats."""
        z, log_det = self.inverse(x)
        log_prior = -0.5 * (z * z).sum(dim=1) - 0.5 * self.dims * math.log(2 * math.pi)
        return log_prior + log_det
