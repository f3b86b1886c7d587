"""timm as the only door to backbones: any timm model by name, globally pooled to a vector."""
from __future__ import annotations

import timm
import torch
from torch import nn


class BackboneError(RuntimeError):
    """A backbone that cannot be built (unknown name, or pretrained weights out of reach)."""


def create_backbone(name: str, pretrained: bool = False) -> nn.Module:
    """A timm model without its classifier, global average pooled: (N, 3, H, W) -> (N, C).

    ``pretrained=True`` downloads timm's weights; offline (or with ``HF_HUB_OFFLINE=1``) that
    fails with a one-line ``BackboneError`` instead of a hub traceback. The returned module has
    ``num_features`` (C).
    """
    if not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('.')[0]}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise BackboneError(f"unknown timm backbone '{name}'{hint}")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="avg")
    except (OSError, RuntimeError, ValueError) as exc:  # hub/network errors come in many types
        if not pretrained:
            raise
        raise BackboneError(
            f"could not fetch pretrained weights for '{name}' from the hub ({type(exc).__name__}: "
            "offline?); check the network, "
            "or train without them (--no-pretrained) / start from a checkpoint (--init-from)"
        ) from None


def feature_dim(backbone: nn.Module) -> int:
    """Channels C of the pooled feature vector (timm's ``head_hidden_size`` when a model has a
    pre-logits head, e.g. MobileNetV3's conv_head, else ``num_features``)."""
    dim = getattr(backbone, "head_hidden_size", None) or getattr(backbone, "num_features", None)
    if dim is None:
        with torch.no_grad():
            dim = backbone(torch.zeros(1, 3, 64, 64)).shape[1]
    return int(dim)
