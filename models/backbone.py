"""timm as the only door to backbones: any timm model by name, globally pooled to a vector."""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import timm
import torch
from huggingface_hub import try_to_load_from_cache   # timm's own dependency
from torch import nn

from .files import host_reachable

HUB_TIMEOUT_S = 3.0   # one connect attempt to the hub before any download (which retries ~50 s)


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
    overlay = {}
    if pretrained:
        cached = require_hub(name)
        if cached is not None:        # hub unreachable, weights cached: read them, no download
            overlay = {"pretrained_cfg_overlay": {"file": cached}}
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="avg", **overlay)
    except (OSError, RuntimeError, ValueError) as exc:  # hub/network errors come in many types
        if not pretrained:
            raise
        raise BackboneError(
            f"could not fetch pretrained weights for '{name}' from the hub ({type(exc).__name__}: "
            "offline?); check the network, "
            "or train without them (--no-pretrained) / start from a checkpoint (--init-from)"
        ) from None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def weights_host(name: str) -> tuple[str, int] | None:
    """(host, port) timm would fetch ``name``'s weights from: the Hugging Face hub (``HF_ENDPOINT``,
    default huggingface.co) when the model has a hub id, else its weights URL; None if neither."""
    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    if cfg is None:
        return None
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if cfg.hf_hub_id else cfg.url
    parts = urlsplit(url or "")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def cached_weights(name: str) -> str | None:
    """Path of ``name``'s pretrained weights in the local Hugging Face cache, or None."""
    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    if cfg is None or not cfg.hf_hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):   # what timm fetches, in its order
        path = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(path, str):
            return path
    return None


def require_hub(name: str, timeout_s: float = HUB_TIMEOUT_S) -> str | None:
    """Before a pretrained download: one TCP connect (``timeout_s``) to the weights' host, so an
    unreachable hub is known at once instead of after a minute of retries. Unreachable with the
    weights in the local cache: returns their path (train on, offline); without them: a one-line
    ``BackboneError``. Skipped with ``HF_HUB_OFFLINE=1`` (timm then reads the local cache)."""
    host = None if _hub_offline() else weights_host(name)
    if host is None:
        return None
    why = host_reachable(f"http://{host[0]}:{host[1]}", timeout_s)
    if why is None:
        return None
    cached = cached_weights(name)
    if cached is not None:
        return cached
    raise BackboneError(
        f"pretrained weights for backbone '{name}': the hub {why} and they are not in the local cache; "
        "connect once to cache them (later runs then work offline, or set HF_HUB_OFFLINE=1), or train "
        "without them (--no-pretrained, config pretrained: false) or from a checkpoint (--init-from)")


def feature_dim(backbone: nn.Module) -> int:
    """Channels C of the pooled feature vector (timm's ``head_hidden_size`` when a model has a
    pre-logits head, e.g. MobileNetV3's conv_head, else ``num_features``)."""
    dim = getattr(backbone, "head_hidden_size", None) or getattr(backbone, "num_features", None)
    if dim is None:
        with torch.no_grad():
            dim = backbone(torch.zeros(1, 3, 64, 64)).shape[1]
    return int(dim)
