"""Run directory state: training checkpoints (atomic), resume, and the metrics log.

A training checkpoint is a project checkpoint (``models.checkpoint``: config + weights, loadable
by ``load_model``/``rle-eval``/``rle-app``) plus ``train_config``, ``optimizer``, ``scheduler``,
``epoch`` (last completed, 1-based), ``step`` (global optimiser steps), ``best`` (best validation
metric so far) and ``rng`` (torch CPU/CUDA generator states). Files in a run directory:
``epoch_NNN.pth``, ``last.pth``, ``best.pth``, ``metrics.jsonl``, ``config.yaml``.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from models.build import PoseModel
from models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from models.files import atomic_path, write_bytes_atomic


@dataclass
class ResumeState:
    """What a resumed run continues from."""

    epoch: int          # last completed epoch (0 = none)
    step: int
    best: float | None
    path: Path


def save_training_checkpoint(run_dir: Path, model: PoseModel, optimizer, scheduler, epoch: int,
                             step: int, best: float | None, train_config: dict, is_best: bool) -> Path:
    """Write ``last.pth``, ``epoch_NNN.pth`` (and ``best.pth``) atomically; returns last.pth."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    extra = dict(train_config=train_config, optimizer=optimizer.state_dict(),
                 scheduler=scheduler.state_dict(), epoch=epoch, step=step, best=best, rng=rng)
    last = save_checkpoint(run_dir / "last.pth", model, **extra)
    _link_or_copy(last, run_dir / f"epoch_{epoch:03d}.pth")
    if is_best:
        _link_or_copy(last, run_dir / "best.pth")
    return last


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` atomically (hard link when possible, else a copy)."""
    with atomic_path(dst) as tmp:
        tmp.unlink()                      # os.link needs a free name; atomic_path reserved this one
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def find_resume(resume: str | None, run_dir: Path) -> Path | None:
    """``--resume auto`` -> run_dir/last.pth if present (None to start fresh); a path -> that file."""
    if not resume:
        return None
    if resume == "auto":
        last = run_dir / "last.pth"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint file (use --resume auto to "
                              "continue the run in --out, or omit it to start fresh)")
    return path


def load_training_state(path: Path, model, optimizer, scheduler) -> ResumeState:
    """Restore weights, optimiser, scheduler and RNG from a training checkpoint."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "step") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)}); "
                              "use --init-from to start a new run from its weights")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    rng = ckpt.get("rng", {})
    if "cpu" in rng:
        torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return ResumeState(int(ckpt["epoch"]), int(ckpt["step"]), ckpt.get("best"), path)


class MetricsLog:
    """Append-only JSON-lines log (one flushed line per record) + TensorBoard when installed."""

    def __init__(self, path: Path, tensorboard: bool = True) -> None:
        self.path = path
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(path.parent / "tb"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def write(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record.get("step", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def write_run_config(run_dir: Path, train_config: dict) -> None:
    """The resolved config as YAML in the run directory (atomic)."""
    write_bytes_atomic(run_dir / "config.yaml", yaml.safe_dump(train_config, sort_keys=False).encode("utf-8"))
