"""``--init-from``: start a run from the backbone of another checkpoint, and from its conventions.

Accepted files: this project's checkpoints (RLE or heatmap stage 1), the official RLE state dicts
and mmpose's RLE checkpoints (1.x and 0.x layouts, ResNet and MobileNetV2), all converted key by
key exactly as ``models.checkpoint.load_model`` converts them; and plain torchvision/timm
classification weights (``conv1.``, ``layer1.`` ..., matched by name under the prefix that fits
most; the classifier is ignored). Only the backbone is copied, tensor by tensor with shape checks;
the report line says what was taken, what did not fit and what kept its initial value.

Conventions: the normalisation the backbone was trained with (``mean_rgb``, ``std_rgb``), the RLE
head layout and the crop warp of a checkpoint with a config (project, official, mmpose) become the
run's model defaults: above the dataset's defaults, below everything the user states (preset,
config file, options, ``--set``). A run from an mmpose checkpoint thus trains an mmpose-layout model
with ImageNet mean/std unless told otherwise; mmpose's head layout is kept for 2D RLE runs only.
"""
from __future__ import annotations


from models import mmpose
from models.checkpoint import CheckpointError, config_and_state, read_checkpoint
from models.config import PoseModelConfig

PREFIXES = ("backbone.", "preact.", "module.backbone.", "module.preact.", "module.", "")
# PoseModelConfig fields a run takes from its --init-from checkpoint unless the user sets them
CONVENTIONS = ("mean_rgb", "std_rgb", "head_layout", "warp")


def _state_dict(obj: dict) -> dict:
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def source_model(path: str) -> tuple[PoseModelConfig | None, dict]:
    """The config and state dict (this project's key names) of ``path``; (None, raw state dict)
    for plain weights. An mmpose file that does not convert is an error, not plain weights."""
    obj = read_checkpoint(path)
    try:
        return config_and_state(obj, path)
    except CheckpointError:
        if mmpose.mmpose_layout(_state_dict(obj)) is not None:
            raise
        return None, _state_dict(obj)


def checkpoint_conventions(path: str) -> dict:
    """``CONVENTIONS`` of the checkpoint at ``path`` as {field: value}; {} for plain weights and for
    a file that cannot be read (the run's init step reports that one)."""
    try:
        config, _ = source_model(path)
    except CheckpointError:
        return {}
    return {} if config is None else {name: getattr(config, name) for name in CONVENTIONS}


def with_conventions(model: PoseModelConfig, conventions: dict, given: set[str]) -> PoseModelConfig:
    """``model`` with the ``conventions`` whose field is not in ``given`` (the user's); mmpose's
    head layout only where the model can have it (2D RLE), other runs keep their own."""
    changes = {k: v for k, v in conventions.items() if k not in given}
    if changes.get("head_layout") == "mmpose" and (model.head != "rle" or model.dims != 2):
        changes.pop("head_layout")
    return model.replace(**changes)


def _candidates(config: PoseModelConfig | None, state: dict, own: dict) -> tuple[dict, str]:
    """Backbone tensors of ``state`` under the backbone's own names, and where they came from."""
    if config is not None:
        return ({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")},
                f"{config.source}, backbone {config.backbone}")
    best, best_prefix = {}, ""
    for prefix in PREFIXES:
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in own}
        if len(found) > len(best):
            best, best_prefix = found, prefix
    return best, f"plain weights, prefix '{best_prefix}'"


def init_backbone_from(model, path: str) -> str:
    """Copy the backbone tensors of ``path`` that fit ``model.backbone`` by name and shape;
    returns a one-line report. No weight fitting is a ``CheckpointError``."""
    own = model.backbone.state_dict()
    config, state = source_model(path)
    candidates, origin = _candidates(config, state, own)
    taken = {k: v for k, v in candidates.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    misfit = [k for k in candidates if k in own and k not in taken]
    unused = [k for k in candidates if k not in own]
    if not any(v.dim() for v in taken.values()):   # (BatchNorm's scalar step counters fit anything)
        raise CheckpointError(f"{path}: no tensor fits the backbone '{model.config.backbone}' ({origin}; "
                              "expected keys like backbone.conv1.weight, preact.conv1.weight or conv1.weight)")
    model.backbone.load_state_dict(taken, strict=False)
    parts = [f"init-from {path} ({origin}): took {len(taken)}/{len(own)} backbone tensors"]
    if misfit:
        parts.append(f"{len(misfit)} skipped for their shape (first {misfit[0]})")
    if unused:
        parts.append(f"{len(unused)} unused (first {unused[0]})")
    if len(own) > len(taken):
        parts.append(f"{len(own) - len(taken)} left at their initial values")
    return "; ".join(parts)
