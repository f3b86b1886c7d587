"""Checkpoints: this project's self-describing files and the official released state dicts.

Project file: a dict ``{"format": "rle-pose", "format_version": 1, "config": <PoseModelConfig
dict>, "model": <state dict>, ...}``; the trainer adds optimizer/scheduler/epoch entries. Official
files (``coco-laplace-rle.pth``, ``h36m-laplace-rle.pth``) are plain state dicts with the keys
``preact.*`` (torchvision ResNet), ``fc_coord.linear.*``, ``fc_sigma.linear.*`` (2D) or
``fc_sigma.*`` (3D), ``flow.*`` (2D) or ``flow2d.*`` + ``flow3d.*`` (3D); mmpose's RLE files
(``{"meta", "state_dict"}``, 1.x or 0.x layout) are recognised and renamed in ``models.mmpose``;
all are converted key by key with shape checks. Everything loads with
``torch.load(weights_only=True)``; the only objects allowed beyond tensors and plain data are
numpy arrays, scalars and dtypes (mmpose's ``meta``), so nothing foreign is ever unpickled.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

from . import mmpose
from .build import PoseModel, build_model
from .config import PoseModelConfig, coco_config, h36m_config, mmpose_config
from .file_kinds import is_safetensors, load_failure, read_safetensors, short_line
from .files import atomic_path
from .skeleton import COCO17
from .zoo import ZooError, resolve_checkpoint

FORMAT = "rle-pose"
FORMAT_VERSION = 1
# official prefix -> this project's prefix (first match wins)
OFFICIAL_PREFIXES = (
    ("preact.", "backbone."),
    ("fc_coord.linear.", "head.coord."),
    ("fc_sigma.linear.", "head.sigma."),
    ("fc_sigma.", "head.sigma."),
    ("flow2d.", "criterion.flow2d."),
    ("flow3d.", "criterion.flow3d."),
    ("flow.", "criterion.flow2d."),
)
# layer3 block count -> depth; ResNets with Bottleneck blocks have conv3 in every block
RESNET_BY_BLOCKS = {(2, False): "resnet18", (6, False): "resnet34", (6, True): "resnet50",
                    (23, True): "resnet101", (36, True): "resnet152"}


class CheckpointError(RuntimeError):
    """A file that is not a usable checkpoint; the message names the file and the problem."""


def save_checkpoint(path: str | os.PathLike, model: PoseModel, **extra) -> Path:
    """Write ``model`` (config + weights) and any ``extra`` entries atomically (temp + rename)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "config": model.config.to_dict(), "model": model.state_dict(), **extra}
    return save_atomic(payload, path)


def save_atomic(payload: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` through ``models.files.atomic_path`` (temp file beside it, fsync, rename);
    the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _numpy_global(name: str):
    """The numpy object behind an allow-listed pickle global (array reconstruction, scalar, dtype
    classes), else None. Files written under numpy 1 name ``numpy.core``, numpy 2 ``numpy._core``."""
    module, _, attr = name.rpartition(".")
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and attr in ("_reconstruct", "scalar"):
        candidates = ("numpy._core.multiarray", "numpy.core.multiarray")
    elif name in ("numpy.ndarray", "numpy.dtype") or (module == "numpy.dtypes" and attr.endswith("DType")):
        candidates = (module,)
    else:
        return None
    for candidate in candidates:
        try:
            return getattr(importlib.import_module(candidate), attr)
        except (ImportError, AttributeError):
            continue
    return None


def _allowed_globals(path: Path) -> list:
    """(object, name) pairs for the numpy globals ``path`` pickles; a foreign global is refused
    (one line) before anything is unpickled. Legacy (non-zip) files: [] (torch.load decides)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint: weights-only torch.load reports it
        return []
    pairs = [(_numpy_global(name), name) for name in names]
    foreign = [name for obj, name in pairs if obj is None]
    if foreign:
        raise CheckpointError(f"{path}: holds a pickled '{foreign[0]}', which is not loaded (only tensors, "
                              "plain data and numpy arrays are); if you trust the file, re-save its state "
                              "dict alone: torch.save(torch.load(f, weights_only=False)['state_dict'], out)")
    if any(name == "numpy.dtype" for _, name in pairs):   # a dtype is rebuilt as its class (Float64DType ...)
        dtypes = importlib.import_module("numpy.dtypes")
        pairs += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return pairs


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw dict of a checkpoint file, with one-line errors for missing or foreign files.

    Weights-only: numpy arrays/scalars/dtypes are the only objects allowed beyond torch's own
    (mmpose's ``meta`` holds them); any other pickled object refuses the file unexecuted. A
    safetensors file (whatever its name) is read as the state dict it holds."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if is_safetensors(path):
        return read_safetensors(path, CheckpointError)
    try:
        with torch.serialization.safe_globals(_allowed_globals(path)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # torch raises many types for foreign files
        raise CheckpointError(f"{path}: {load_failure(path, exc, _numpy_global)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> PoseModel:
    """Load a project, official or mmpose checkpoint as an eval-mode ``PoseModel`` on ``device``:
    an ``RLEPoseModel``, or a ``HeatmapPoseModel`` when the stored config's ``head`` is "heatmap"
    (files written before that field existed, and official and mmpose files, are "rle").

    2D and 3D, and the checkpoint family (its ``head_layout``, normalisation), are told apart from
    the file itself (its config, or the official / mmpose key names). ``path`` may also be a zoo
    name (``models.zoo``, e.g. "rle-r50-coco") or an http(s) URL: it is fetched once into the cache
    first (a failure is a one-line ``CheckpointError``).
    """
    try:
        path = resolve_checkpoint(path)
    except ZooError as err:
        raise CheckpointError(str(err)) from None
    config, state = config_and_state(read_checkpoint(path), path)
    model = build_model(config)
    _load_state(model, state, path)
    model.checkpoint_path = Path(path)      # where models.export caches the model's ONNX graph
    return model.to(device).eval()


def _project_config_and_state(obj: dict, path) -> tuple[PoseModelConfig, dict]:
    """Config and weights of an rle-pose file, with one-line errors for crafted or future ones."""
    version = obj.get("format_version")
    if not isinstance(obj.get("config"), dict):
        raise CheckpointError(f"{path}: an rle-pose checkpoint without its model config ('config' "
                              f"{'missing' if 'config' not in obj else 'is not a mapping'}); it cannot be built")
    try:
        config = PoseModelConfig.from_dict(obj["config"])
    except (ValueError, TypeError, KeyError) as exc:
        newer = f"; written by a newer rle-pose (format version {version})?" if version != FORMAT_VERSION else ""
        raise CheckpointError(f"{path}: its model config does not load ({short_line(str(exc))}){newer}") from None
    state = obj.get("model")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path}: 'model' is not a state dict (name -> tensor)")
    return config, state


def config_and_state(obj: dict, path: str | os.PathLike) -> tuple[PoseModelConfig, dict]:
    """Config and state dict under this project's key names of a checkpoint dict (from
    ``read_checkpoint`` of ``path``): a project file's own, or an official / mmpose file converted
    key by key (what ``load_model`` builds and loads; ``--init-from`` takes the backbone from it)."""
    if obj.get("format") == FORMAT:
        return _project_config_and_state(obj, path)
    return foreign_config_and_state(_unwrap_state_dict(obj), Path(path).name)


def _unwrap_state_dict(obj: dict) -> dict:
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def foreign_config_and_state(state: dict, file_name: str) -> tuple[PoseModelConfig, dict]:
    """Config and renamed state dict of an official or mmpose state dict (told by its keys)."""
    layout = mmpose.mmpose_layout(state)
    if layout is None:
        return official_config(state, file_name), convert_official_state_dict(state)
    try:
        config = mmpose_model_config(state, layout, file_name)
        return config, mmpose.convert_mmpose_state_dict(state, layout, config.backbone)
    except ValueError as exc:
        raise CheckpointError(f"{file_name}: {exc}") from None


def mmpose_model_config(state: dict, layout: str, file_name: str) -> PoseModelConfig:
    """The PoseModelConfig of an mmpose RLE state dict: backbone (ResNet depth or MobileNetV2),
    COCO-17 joints, crop size from the file name (default 256x192), mmpose's conventions."""
    backbone = mmpose.mmpose_backbone(state) or _resnet_name(state, "backbone.")
    if backbone is None:
        raise ValueError("mmpose backbone is neither a ResNet (backbone.layer1..4) nor MobileNetV2 "
                         "(backbone.conv1.conv)")
    outputs = state[mmpose.LAYOUTS[layout][0] + "weight"].shape[0]
    if outputs != 4 * COCO17.num_joints:
        raise ValueError(f"mmpose head gives {outputs} outputs; supported: COCO-17 (68 = 17 x 4)")
    return mmpose_config(backbone, input_hw=mmpose.input_hw_from_name(file_name),
                         source=f"mmpose-{layout}:{file_name}")


def _resnet_name(state: dict, prefix: str) -> str | None:
    """timm ResNet name from torchvision-style keys under ``prefix`` (None if not a known ResNet)."""
    blocks = {int(k.split(".")[2]) for k in state if k.startswith(prefix + "layer3.")}
    bottleneck = any(k.startswith(prefix + "layer1.0.conv3.") for k in state)
    return RESNET_BY_BLOCKS.get((len(blocks), bottleneck))


def official_config(state: dict, file_name: str) -> PoseModelConfig:
    """The PoseModelConfig of an official state dict: 2D/3D, ResNet depth and joint count."""
    if not any(k.startswith("preact.") for k in state) or "fc_coord.linear.weight" not in state:
        raise CheckpointError(f"{file_name}: neither an rle-pose checkpoint nor an official RLE state dict "
                              "('preact.*', 'fc_coord.linear.weight') nor an mmpose RLE one ('head.fc.weight')")
    dims = 3 if any(k.startswith("flow3d.") for k in state) else 2
    backbone = _resnet_name(state, "preact.")
    if backbone is None:
        blocks = {k.split(".")[2] for k in state if k.startswith("preact.layer3.")}
        raise CheckpointError(f"{file_name}: unrecognised ResNet layout ({len(blocks)} blocks in layer3)")
    outputs = state["fc_coord.linear.weight"].shape[0]
    if outputs % dims:
        raise CheckpointError(f"{file_name}: fc_coord has {outputs} outputs, not a multiple of {dims}")
    build = h36m_config if dims == 3 else coco_config
    config = build(backbone, source=f"official:{file_name}")
    if outputs // dims != config.num_joints:
        raise CheckpointError(f"{file_name}: {outputs // dims} joints; official {dims}D models have "
                              f"{config.num_joints}")
    return config


def convert_official_state_dict(state: dict) -> dict:
    """Rename official keys to this project's; the unused ImageNet classifier (preact.fc) is dropped."""
    out = {}
    for key, value in state.items():
        if key.startswith("preact.fc."):
            continue
        for old, new in OFFICIAL_PREFIXES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            out[key] = value  # left for the strict load to report as unexpected
    return out


def _load_state(model: PoseModel, state: dict, path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"{path}: keys do not fit the model ({'; '.join(parts)})")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)}, "
                                  f"the model expects {tuple(own[key].shape)}")
    model.load_state_dict(state)
