"""Device and model loading for the app: which weights, on which device, and the demo notice.

Nothing is loaded at import; ``load_pose_models`` reads the checkpoints when the app starts.
Errors are ``AppError`` (one line naming the option: ``--checkpoint``, ``--checkpoint-3d``,
``--device``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.checkpoint import CheckpointError, load_model
from rle_app.errors import AppError

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
DEMO_CHECKPOINT = ASSETS_DIR / "demo-coco.pth"
DEMO_NOTICE = ("Demo model: a small MobileNetV3 trained only on the project's generated figures "
               "(assets/README.md), not on real people. For real use: rle-app --checkpoint coco-laplace-rle.pth")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AppError(f"--device {name}: not a torch device (auto, cpu, cuda, cuda:N)") from None


def _load(path: str | Path, dims: int, option: str, device: torch.device):
    if not Path(path).is_file():
        raise AppError(f"{option} {path}: no such file")
    try:
        model = load_model(path, device)
    except CheckpointError as err:
        raise AppError(f"{option}: {err}") from None
    if model.config.dims != dims:
        other = "--checkpoint-3d" if model.config.dims == 3 else "--checkpoint"
        raise AppError(f"{option} {path}: a {model.config.dims}D model; pass it as {other}")
    return model


def load_pose_models(checkpoint: str | None, checkpoint_3d: str | None, device: torch.device):
    """The 2D model (``checkpoint`` or the demo model in assets/) and the optional 3D model.

    Returns (model_2d, model_3d or None, path of the 2D weights). Raises ``AppError`` (one line)
    for a missing file, an unreadable checkpoint, or a 2D/3D mix-up.
    """
    path = Path(checkpoint) if checkpoint else DEMO_CHECKPOINT
    model = _load(path, 2, "--checkpoint", device)
    model_3d = _load(checkpoint_3d, 3, "--checkpoint-3d", device) if checkpoint_3d else None
    return model, model_3d, path
