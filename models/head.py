"""The RLE regression head: feature-normalised linear for mu, plain linear + sigmoid for sigma."""
from __future__ import annotations

import torch
from torch import nn


class NormLinear(nn.Linear):
    """``y = (f @ W.T) / ||f||_2 + b``: the official feature-normalised linear layer (``fc_coord``)."""

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out = feats @ self.weight.t()
        out = out / torch.linalg.vector_norm(feats, dim=1, keepdim=True)
        return out + self.bias if self.bias is not None else out


class RLEHead(nn.Module):
    """Pooled features (N, C) -> raw coordinates and sigmas, each (N, K, D).

    Both weights are initialised Xavier-uniform with gain 0.01 (biases keep PyTorch's default),
    as the official code.
    ``coord`` and ``sigma`` correspond to the official ``fc_coord.linear`` and ``fc_sigma(.linear)``.
    """

    def __init__(self, in_features: int, num_joints: int, dims: int, sigma_eps: float = 0.0) -> None:
        super().__init__()
        self.num_joints, self.dims, self.sigma_eps = num_joints, dims, sigma_eps
        self.coord = NormLinear(in_features, num_joints * dims)
        self.sigma = nn.Linear(in_features, num_joints * dims)
        for layer in (self.coord, self.sigma):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (feats.shape[0], self.num_joints, self.dims)
        mu = self.coord(feats).reshape(shape)
        sigma = torch.sigmoid(self.sigma(feats)).reshape(shape) + self.sigma_eps
        return mu, sigma
