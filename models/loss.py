"""The RLE loss (residual log-likelihood with a Laplace base density), importable on its own.

    from models.loss import RLELoss
    criterion = RLELoss(dims=2)
    loss = criterion(mu, sigma, target, target_weight)       # all (B, K, D)

For every coordinate, with bar = (mu - gt) / sigma and log_phi the flow's log density of bar:

    nf_loss = log(sigma) - log_phi
    log_q   = log(sigma * sqrt(2 pi)) + |gt - mu| / (sqrt(2) sigma + 1e-9)
    loss    = sum over B, K, D of (nf_loss * w_nf + log_q * w) / B

with w the (B, K, D) target weight. w_nf: in 2D the u weight broadcast over u and v (the official
``nf_loss * gt_uv_weight[:, :, :1]``; it differs from w where u and v weights differ); in 3D the
full (u, v, d) weight, as the official 3D loss.

This is the official variant (log_q's constant differs from a normalised Laplace; mmpose issue
#1766). Broadcast quirk, kept on purpose: log(sigma) is (B, K, D) while log_phi is one value per
joint (B, K, 1), so -log_phi is counted once per coordinate with a non-zero weight (twice per 2D
joint, three times per 3D joint). The official loss value, and so its gradients' balance,
depends on it.

3D: one 3-D flow for joints with a depth label (weight of d > 0) and a 2-D flow on (u, v) for
2D-only joints (e.g. MPII), chosen per joint as the official code does.

Stability (a documented difference): sigma is clamped at ``sigma_min`` (1e-9) inside the loss, and
the flow and the loss run in float32 even under autocast. For sigma above 1e-9 the value is the
official one exactly; below it the official loss is -inf/NaN.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .flow import RealNVP

SQRT_2PI_LOG = 0.5 * math.log(2 * math.pi)


class RLELossTerms(NamedTuple):
    """Scalar loss terms (already divided by the batch size). total = nf + log_q."""

    total: torch.Tensor
    nf: torch.Tensor
    log_q: torch.Tensor


class RLELoss(nn.Module):
    """RLE loss with its own learned flow(s).

    Args:
        dims: 2 (u, v) or 3 (u, v, d).
        hidden, num_layers: flow size (64, 6 in the paper).
        sigma_min: lower clamp of sigma inside the loss (numerical safety).

    Call with mu, sigma, target, weight of shape (B, K, D); returns the scalar loss. ``terms``
    returns the separate terms for logging.
    """

    def __init__(self, dims: int = 2, hidden: int = 64, num_layers: int = 6,
                 sigma_min: float = 1e-9) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"RLELoss supports dims 2 or 3, got {dims}")
        self.dims = dims
        self.sigma_min = sigma_min
        self.flow2d = RealNVP(2, hidden, num_layers)
        self.flow3d = RealNVP(3, hidden, num_layers) if dims == 3 else None

    def log_phi(self, bar: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Flow log density per joint: bar (B, K, D), weight (B, K, D) -> (B, K, 1)."""
        flat = bar.reshape(-1, self.dims)
        if self.dims == 2:
            return self.flow2d.log_prob(flat).reshape(*bar.shape[:2], 1)
        has_depth = weight.reshape(-1, 3)[:, 2] > 0
        out = flat.new_zeros(flat.shape[0])
        out = out.masked_scatter(has_depth, self.flow3d.log_prob(flat[has_depth]))
        out = out.masked_scatter(~has_depth, self.flow2d.log_prob(flat[~has_depth][:, :2]))
        return out.reshape(*bar.shape[:2], 1)

    def terms(self, mu: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor,
              weight: torch.Tensor) -> RLELossTerms:
        """The loss and its two terms; see the module docstring for the formula."""
        with torch.autocast(device_type=mu.device.type, enabled=False):
            mu, target, weight = mu.float(), target.float(), weight.float()
            sigma = sigma.float().clamp_min(self.sigma_min)
            batch = mu.shape[0]
            bar = (mu - target) / sigma
            nf_weight = weight[..., :1] if self.dims == 2 else weight   # official: u weight in 2D
            nf = (torch.log(sigma) - self.log_phi(bar, weight)) * nf_weight
            log_q = (torch.log(sigma) + SQRT_2PI_LOG
                     + (target - mu).abs() / (math.sqrt(2) * sigma + 1e-9)) * weight
            scale = 1.0 / batch if batch > 0 and weight.sum() > 0 else 1.0
            nf_sum, q_sum = nf.sum() * scale, log_q.sum() * scale
        return RLELossTerms(nf_sum + q_sum, nf_sum, q_sum)

    def forward(self, mu: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
        return self.terms(mu, sigma, target, weight).total
