"""``--init-from``: start a run from the backbone of another checkpoint.

Accepted layouts (prefix of the backbone keys): this project's checkpoints (``backbone.``, RLE or
heatmap stage 1), official RLE (``preact.``), mmpose (``backbone.`` under ``state_dict``), and
plain torchvision/timm classification weights (``conv1.``, ``layer1.`` ...; the classifier is
ignored). Only tensors whose names and shapes fit the backbone are taken; the report says how many.
"""
from __future__ import annotations

from models.checkpoint import CheckpointError, read_checkpoint

PREFIXES = ("backbone.", "preact.", "module.backbone.", "module.preact.", "module.", "")


def _state_dict(obj: dict) -> dict:
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def init_backbone_from(model, path: str) -> str:
    """Copy matching backbone tensors from ``path`` into ``model.backbone``; returns a report line.

    The prefix that matches most backbone keys wins; no match at all is an error.
    """
    state = _state_dict(read_checkpoint(path))
    own = model.backbone.state_dict()
    best: dict = {}
    best_prefix = ""
    for prefix in PREFIXES:
        taken = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix) and k[len(prefix):] in own
                 and tuple(v.shape) == tuple(own[k[len(prefix):]].shape)}
        if len(taken) > len(best):
            best, best_prefix = taken, prefix
    if not best:
        raise CheckpointError(f"{path}: no tensor fits the backbone '{model.config.backbone}' "
                              "(expected keys like backbone.conv1.weight, preact.conv1.weight or conv1.weight)")
    model.backbone.load_state_dict(best, strict=False)
    left = len(own) - len(best)
    return (f"init-from {path}: took {len(best)}/{len(own)} backbone tensors (prefix '{best_prefix}')"
            + (f"; {left} left at their initial values" if left else ""))
