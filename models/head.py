"""RLE regression heads, by checkpoint family (``PoseModelConfig.head_layout``).

``official``: feature-normalised linear for mu, plain linear + sigmoid for sigma.
``mmpose``: one plain linear giving (x, y, sigma_x logit, sigma_y logit) per joint, x and y in
[0, 1] of the crop. Both return (mu, sigma) with mu in [-0.5, 0.5] of the crop.
"""
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


class MMPoseRLEHead(nn.Module):
    """mmpose's ``RLEHead``: pooled features (N, C) -> mu, sigma, each (N, K, 2).

    One plain ``fc = Linear(C, K*4)`` (no feature normalisation), reshaped (N, K, 4) per joint as
    (x, y, sigma_x logit, sigma_y logit) with x, y in [0, 1] of the crop (mmpose's
    ``RegressionLabel``: crop px = x * W). Returned mu = (x, y) - 0.5, this project's normalised
    crop frame; sigma = sigmoid(logits) + ``sigma_eps``. mmpose's init: Normal(0, 0.01), bias 0.
    """

    def __init__(self, in_features: int, num_joints: int, dims: int = 2, sigma_eps: float = 0.0) -> None:
        super().__init__()
        if dims != 2:
            raise ValueError(f"the mmpose RLE head is 2D only, got dims {dims}")
        self.num_joints, self.sigma_eps = num_joints, sigma_eps
        self.fc = nn.Linear(in_features, num_joints * 4)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.fc(feats).reshape(feats.shape[0], self.num_joints, 4)
        return out[..., :2] - 0.5, torch.sigmoid(out[..., 2:]) + self.sigma_eps


# PoseModelConfig.head_layout -> head class (its keys are models.config.HEAD_LAYOUTS)
RLE_HEADS = {"official": RLEHead, "mmpose": MMPoseRLEHead}
