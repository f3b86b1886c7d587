"""Backbone + RLE head (official or mmpose layout) + flow + input normalisation, as one module."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .backbone import create_backbone, feature_dim
from .config import PoseModelConfig
from .head import RLE_HEADS
from .loss import RLELoss, RLELossTerms


class PoseOutput(NamedTuple):
    """Model output in the normalised crop frame.

    mu: (N, K, D) coordinates u, v in [-0.5, 0.5] of the crop (and d = depth / depth_range for 3D,
        root-relative in eval mode).
    sigma: (N, K, D) scale of the learned residual distribution, same units as mu (not a
        calibrated standard deviation). Heatmap models: 1 - peak value (see models/heatmap.py).
    heatmaps: (N, K, H/4, W/4) from heatmap models (their training output), else None.
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    heatmaps: torch.Tensor | None = None


class PixelNormalise(nn.Module):
    """(N, 3, H, W) RGB in [0, 1] (float) or [0, 255] (uint8) -> (x - mean) / std, per channel.

    mean and std are non-persistent buffers (they travel with ``.to()``; the checkpoint's config,
    not its state dict, holds them)."""

    def __init__(self, mean_rgb, std_rgb) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean_rgb).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std_rgb).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std


class RLEPoseModel(nn.Module):
    """RLE pose regressor.

    ``forward(x)`` takes RGB crops as float in [0, 1], shape (N, 3, H, W), normalises them with the
    config's mean/std (buffers that travel with ``.to()``), and returns ``PoseOutput``. The loss is
    never computed in forward: call ``model.loss(out, target, weight)``.
    """

    def __init__(self, config: PoseModelConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else create_backbone(config.backbone)
        head_class = RLE_HEADS[config.head_layout]
        self.head = head_class(feature_dim(self.backbone), config.num_joints, config.dims, config.sigma_eps)
        self.criterion = RLELoss(config.dims, config.flow_hidden, config.flow_layers)
        self.normalise = PixelNormalise(config.mean_rgb, config.std_rgb)

    def forward(self, x: torch.Tensor) -> PoseOutput:
        feats = self.backbone(self.normalise(x))
        mu, sigma = self.head(feats.flatten(1))
        if self.config.dims == 3 and not self.training:
            root = self.config.root_index
            mu = torch.cat([mu[..., :2], mu[..., 2:] - mu[:, root:root + 1, 2:]], dim=-1)
        return PoseOutput(mu, sigma)

    def loss(self, out: PoseOutput, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RLE loss of an output against targets/weights (N, K, D) in the normalised crop frame."""
        return self.criterion(out.mu, out.sigma, target, weight)

    def loss_terms(self, out: PoseOutput, target: torch.Tensor, weight: torch.Tensor) -> RLELossTerms:
        return self.criterion.terms(out.mu, out.sigma, target, weight)
