"""What differs between data sets in training: loaders and validation, behind one small interface.

``TASKS`` maps ``data.dataset`` to a Task; the loop in ``trainer.fit`` knows nothing else about them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from trainer.data import coco, h36m
from trainer.evaluate import predict_sharded, score_coco, score_h36m


@dataclass(frozen=True)
class Task:
    """train_loader(cfg, rank, world_size); validate(model, cfg, rt) -> metrics dict or None
    (every rank predicts its shard, rank 0 gathers them and computes the metrics; other ranks
    get None); ``best_key`` and its direction pick ``best.pth``."""

    train_loader: Callable
    validate: Callable
    best_key: str
    higher_is_better: bool


def validate_coco(model, cfg, rt) -> dict | None:
    """COCO AP on the val annotation file with ``data.val_boxes`` boxes (sharded; rank 0 scores)."""
    loader = coco.build_val_loader(cfg, rt.rank, rt.world_size)
    preds = predict_sharded(model, loader, rt, flip=False)
    if preds is None:
        return None
    gt_json = Path(cfg.data.data_root) / cfg.data.val_annotation_file
    metrics, _ = score_coco(preds, gt_json, cfg.data.val_boxes == "det", loader.dataset.instances)
    return metrics.to_dict()


def validate_h36m(model, cfg, rt) -> dict | None:
    """Protocol-2 MPJPE / PA-MPJPE (mm) on the test annotation file, no flip (sharded; rank 0 scores)."""
    loader = h36m.build_val_loader(cfg, rt.rank, rt.world_size)
    preds = predict_sharded(model, loader, rt, flip=False)
    if preds is None:
        return None
    metrics = score_h36m(preds, loader.dataset.instances, model.config.root_index)
    return {"MPJPE": metrics.mpjpe, "PA_MPJPE": metrics.pa_mpjpe, "num_samples": metrics.num_samples}


TASKS: dict[str, Task] = {
    "coco": Task(coco.build_train_loader, validate_coco, "AP", True),
    "h36m": Task(h36m.build_train_loader, validate_h36m, "MPJPE", False),
}
