"""The architecture registry: ``PoseModelConfig.head`` -> model class, and the ``PoseModel``
protocol every architecture satisfies (what the Predictor, evaluation, training and checkpoints
rely on, so they are annotated with it rather than with one class)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .backbone import create_backbone
from .config import PoseModelConfig
from .heatmap import HeatmapPoseModel
from .pose_model import PoseOutput, RLEPoseModel


@runtime_checkable
class PoseModel(Protocol):
    """Any pose model of this project (an ``nn.Module``): RLEPoseModel or HeatmapPoseModel.

    ``config`` rebuilds it (``build_model``); calling it on RGB crops (N, 3, H, W), float in [0, 1]
    or uint8, returns ``PoseOutput`` in the normalised crop frame; ``loss(out, target, weight)``
    is its training loss for targets and weights in that frame (never computed in forward).
    """

    config: PoseModelConfig

    def __call__(self, images: torch.Tensor) -> PoseOutput: ...

    def loss(self, out: PoseOutput, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor: ...


# PoseModelConfig.head -> model class (its keys are models.config.HEADS)
MODEL_CLASSES = {"rle": RLEPoseModel, "heatmap": HeatmapPoseModel}


def build_model(config: PoseModelConfig, pretrained: bool = False) -> PoseModel:
    """The model of ``config.head`` (RLEPoseModel for "rle", HeatmapPoseModel for "heatmap");
    ``pretrained`` loads timm's ImageNet weights for the backbone."""
    backbone = create_backbone(config.backbone, pretrained=pretrained)
    return MODEL_CLASSES[config.head](config, backbone)
