"""Device and model loading for the app: which weights, on which device, and the demo notice.

A checkpoint is a path, an http(s) URL or a zoo name (``models.zoo``), fetched once into the
cache. Without ``--checkpoint`` the app opens on a real model (``default_checkpoint``): a cached
zoo model, else the default for the device downloaded once; offline (``--offline``,
``$RLE_POSE_OFFLINE=1``) or when the download fails, on the embedded demo model with its notice.
Nothing is loaded at import. Errors are ``AppError`` (one line naming the option:
``--checkpoint``, ``--checkpoint-3d``, ``--device``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from models import backends, zoo
from models.backbone import BackboneError
from models.checkpoint import CheckpointError, load_model
from rle_app.errors import AppError

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
DEMO_CHECKPOINT = ASSETS_DIR / "demo-coco.pth"
DEMO_NOTICE = ("Demo model: a small MobileNetV3 trained only on the project's generated figures "
               "(assets/README.md), not on real people. For real use: rle-app --checkpoint rle-r50-coco")
DEMO = "demo"
# The zoo model opened without --checkpoint, by device (bench/bench_zoo_default.py, README "Models"):
# on a CPU real time decides (webcam, a free 2-core Space); on a GPU every model is real-time, so accuracy.
DEFAULT_MODELS = {"cpu": "mmpose-rle-mobilenetv2-coco", "cuda": "rle-r50-coco"}


def resolve_device(name: str = "auto") -> torch.device:
    """``models.backends.resolve_device``, its one-line error as an AppError."""
    try:
        return backends.resolve_device(name)
    except backends.DeviceError as err:
        raise AppError(str(err)) from None


def check_backend(backend: str, device: torch.device) -> None:
    """``--backend onnxruntime`` needs onnxruntime (and its CUDA provider on a GPU); else ``AppError``."""
    if backend != "onnxruntime":
        return
    try:
        import onnxruntime
    except ImportError:
        raise AppError("--backend onnxruntime: onnxruntime is not installed (pip install onnxruntime onnx), "
                       "or use --backend torch") from None
    if device.type == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise AppError("--backend onnxruntime on cuda: this onnxruntime has no CUDA provider "
                       "(pip install onnxruntime-gpu), or use --backend torch / --device cpu")


def _load(spec: str | Path, dims: int, option: str, device: torch.device, report=None):
    text = str(spec)
    if text not in zoo.ZOO and not text.startswith(("http://", "https://")) and not Path(text).is_file() \
            and ("/" in text or Path(text).suffix):
        raise AppError(f"{option} {spec}: no such file")
    try:
        path = zoo.resolve_checkpoint(spec, dims, option, report=report)   # a wrong-task name: before any download
        model = load_model(path, device)
    except zoo.ZooError as err:
        raise AppError(f"{err}{' (rle-app --list-models)' if 'known:' in str(err) else ''}") from None
    except CheckpointError as err:
        raise AppError(f"{option}: {err}") from None
    except BackboneError as err:   # a config naming a backbone timm does not have
        raise AppError(f"{option} {Path(text).name}: {err}; this checkpoint needs another timm version "
                       "or a different file") from None
    if model.config.dims != dims:
        other = "--checkpoint-3d" if model.config.dims == 3 else "--checkpoint"
        raise AppError(f"{option} {spec}: a {model.config.dims}D model; pass it as {other}")
    return model


def load_2d(spec: str | None, device: torch.device, report=None):
    """The 2D model for ``spec`` (a path, URL, zoo name, or None / "demo" for the demo model)."""
    return _load(DEMO_CHECKPOINT if spec in (None, DEMO) else spec, 2, "--checkpoint", device, report)


def default_checkpoint(device: torch.device, offline: bool = False, report=None) -> tuple[str, tuple[str, ...]]:
    """What the app opens without ``--checkpoint``: (spec, notices). A cached zoo 2D model (the
    device's default first), else the default downloaded now (``report(done, total)`` follows it),
    else (offline, or the download failed) ``"demo"`` with the demo notice and the reason."""
    preferred = DEFAULT_MODELS.get(device.type, DEFAULT_MODELS["cpu"])
    cached = [n for n in [preferred, *zoo.names(2)] if zoo.is_cached(n)]
    if cached:
        return cached[0], ()
    if offline or zoo.offline():
        return DEMO, (DEMO_NOTICE,)
    try:
        zoo.resolve_checkpoint(preferred, 2, "--checkpoint", report=report)
    except zoo.ZooError as err:
        return DEMO, (DEMO_NOTICE, f"Could not fetch the default model: {err}")
    return preferred, ()


def load_pose_models(checkpoint: str | None, checkpoint_3d: str | None, device: torch.device):
    """The 2D model (``checkpoint``: path, URL, zoo name; None or "demo": the demo model in
    assets/) and the optional 3D model.

    Returns (model_2d, model_3d or None, what the 2D weights are: the path, or the name / URL as
    given). Raises ``AppError`` (one line) for a missing file, an unknown name, a failed download,
    an unreadable checkpoint, or a 2D/3D mix-up.
    """
    label = DEMO_CHECKPOINT if checkpoint in (None, DEMO) else checkpoint
    model = load_2d(checkpoint, device)
    model_3d = _load(checkpoint_3d, 3, "--checkpoint-3d", device) if checkpoint_3d else None
    return model, model_3d, label


def load_app_models(checkpoint: str | None, checkpoint_3d: str | None, device: torch.device,
                    offline: bool = False):
    """``load_pose_models`` for the app: without ``checkpoint`` the ``default_checkpoint``, and the
    demo model (with a notice saying why) if that default does not load.

    Returns (model_2d, model_3d or None, 2D label for the model info, 2D spec: a zoo name, path,
    URL or "demo", notices). Raises ``AppError`` for what the user asked for explicitly.
    """
    notices: tuple[str, ...] = ()
    spec = checkpoint
    if not spec:
        spec, notices = default_checkpoint(device, offline)
    try:
        model = load_2d(spec, device)
    except AppError as err:
        if checkpoint:
            raise
        spec, notices = DEMO, (DEMO_NOTICE, f"The default model did not load: {err}")
        model = load_2d(DEMO, device)
    model_3d = _load(checkpoint_3d, 3, "--checkpoint-3d", device) if checkpoint_3d else None
    label = DEMO_CHECKPOINT if spec == DEMO else spec
    return model, model_3d, label, spec, notices
