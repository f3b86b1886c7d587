"""What differs between data sets in training: loaders and validation, behind one small interface.

``TASKS`` maps ``data.dataset`` to a Task; the loop in ``trainer.fit`` knows nothing else about them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from trainer.data import loader as coco_loader
from trainer.data import h36m as h36m_data
from trainer.evaluate import evaluate_coco_loader, evaluate_h36m_loader


@dataclass(frozen=True)
class Task:
    """train_loader(cfg, rank, world_size); validate(model, cfg, rt) -> metrics dict or None
    (rank 0 evaluates; other ranks get None); ``best_key`` and its direction pick ``best.pth``."""

    train_loader: Callable
    validate: Callable
    best_key: str
    higher_is_better: bool


def validate_coco(model, cfg, rt) -> dict | None:
    """COCO AP on the val annotation file with ``data.val_boxes`` boxes (rank 0 only)."""
    if not rt.is_main:
        return None
    loader = coco_loader.build_val_loader(cfg)
    gt_json = Path(cfg.data.data_root) / cfg.data.val_annotation_file
    metrics, _ = evaluate_coco_loader(model, loader, gt_json, rt.device, flip=False,
                                      detected=cfg.data.val_boxes == "det", amp_dtype=rt.amp_dtype)
    return metrics.to_dict()


def validate_h36m(model, cfg, rt) -> dict | None:
    """Protocol-2 MPJPE / PA-MPJPE (mm) on the test annotation file, no flip (rank 0 only)."""
    if not rt.is_main:
        return None
    metrics = evaluate_h36m_loader(model, h36m_data.build_val_loader(cfg), rt.device, flip=False,
                                   amp_dtype=rt.amp_dtype)
    return {"MPJPE": metrics.mpjpe, "PA_MPJPE": metrics.pa_mpjpe, "num_samples": metrics.num_samples}


TASKS: dict[str, Task] = {
    "coco": Task(coco_loader.build_train_loader, validate_coco, "AP", True),
    "h36m": Task(h36m_data.build_train_loader, validate_h36m, "MPJPE", False),
}
