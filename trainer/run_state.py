"""Run directory state: training checkpoints (atomic), resume, and the metrics log.

A training checkpoint is a project checkpoint (``models.checkpoint``: config + weights, loadable
by ``load_model``/``rle-eval``/``rle-app``) plus ``train_config``, ``optimizer``, ``scheduler``,
``epoch`` (last completed, 1-based), ``step`` (global optimiser steps), ``best`` (best validation
metric so far), ``best_epoch`` (the epoch that reached it), ``record`` (the epoch's metrics line)
and ``rng`` (torch CPU/CUDA generator states). Files in a run directory: ``last.pth``,
``best.pth``, ``epoch_NNN.pth`` (every ``save_every_epochs`` epochs, when set), ``metrics.jsonl``,
``config.yaml``.

An epoch ends in four steps, each atomic: (1) ``last.pth`` is replaced, the commit point; (2)
``best.pth`` is linked to it when the epoch is the best; (3) ``epoch_NNN.pth`` is linked when kept;
(4) the epoch's line is appended to ``metrics.jsonl``. A kill between any two steps is repaired on
resume (``repair_run``): steps 2-4 are redone from ``last.pth`` (idempotent), and log lines of work
after ``last.pth`` (an interrupted epoch's steps) are dropped, so each epoch has one line.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from models.build import PoseModel
from models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from models.files import atomic_path, write_bytes_atomic

# temporary files of atomic_path (".NAME.XXXXXXXX.tmp") for the files a run directory holds
RUN_TEMP = re.compile(r"^\.(last\.pth|best\.pth|epoch_\d+\.pth|metrics\.jsonl|config\.yaml)\..+\.tmp$")


@dataclass
class ResumeState:
    """What a resumed run continues from (``record``: the last epoch's metrics line, None in
    checkpoints written before it was stored; ``train_config``: the run's stored config)."""

    epoch: int          # last completed epoch (0 = none)
    step: int
    best: float | None
    path: Path
    best_epoch: int | None = None
    record: dict | None = None
    train_config: dict | None = None


def save_training_checkpoint(run_dir: Path, model: PoseModel, optimizer, scheduler, epoch: int,
                             step: int, best: float | None, train_config: dict, is_best: bool,
                             record: dict | None = None, best_epoch: int | None = None) -> Path:
    """Steps 1-3 of an epoch's end (module doc): ``last.pth``, then ``best.pth`` when ``is_best``,
    then ``epoch_NNN.pth`` when ``train_config['save_every_epochs']`` divides ``epoch``; returns
    last.pth. A full disk raises one ``CheckpointError`` line; the previous last.pth stays whole."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    best_epoch = epoch if is_best else best_epoch
    extra = dict(train_config=train_config, optimizer=optimizer.state_dict(),
                 scheduler=scheduler.state_dict(), epoch=epoch, step=step, best=best,
                 best_epoch=best_epoch, record=record, rng=rng)
    last = run_dir / "last.pth"
    with _full_disk_is_one_line(last, _tensor_bytes([model.state_dict(), extra]), "the previous last.pth is intact"):
        save_checkpoint(last, model, **extra)
    link_epoch_files(run_dir, epoch, best_epoch, train_config.get("save_every_epochs", 0))
    return last


def link_epoch_files(run_dir: Path, epoch: int, best_epoch: int | None, save_every: int) -> None:
    """Steps 2 and 3: best.pth and epoch_NNN.pth as links to last.pth (idempotent)."""
    last = run_dir / "last.pth"
    if best_epoch == epoch:
        _link_or_copy(last, run_dir / "best.pth")
    if save_every and epoch % save_every == 0:
        _link_or_copy(last, run_dir / f"epoch_{epoch:03d}.pth")


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors in nested dicts/lists (the size of a checkpoint, near enough)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


@contextmanager
def _full_disk_is_one_line(path: Path, need_bytes: int, intact: str):
    """Run the block writing ``path`` (~``need_bytes``); a full disk in it becomes one
    ``CheckpointError`` line (``_disk_error``) ending with ``intact`` (what the failed write left
    whole); other errors propagate unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        full = _disk_error(err, path, need_bytes, intact)
        if full is None:
            raise
        raise full from None


def _disk_error(err: Exception, path: Path, need_bytes: int, intact: str) -> CheckpointError | None:
    """A one-line error when ``err`` is a full disk (ENOSPC, or torch's writer failing with too
    little free space left for the file), else None (the error is not about space)."""
    free = shutil.disk_usage(path.parent).free
    full = getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err) or (
        isinstance(err, RuntimeError) and "write" in str(err).lower() and free < need_bytes)
    if not full:
        return None
    return CheckpointError(f"{path}: no space left on device (need ~{_size(need_bytes)}, {_size(free)} free); "
                           f"{intact}: free space and resume with --resume auto")


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.0f} MB" if n_bytes >= 1e6 else f"{math.ceil(n_bytes / 1e3)} kB"


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` atomically (hard link when possible, else a copy);
    a full disk is one line (``dst`` keeps its previous content)."""
    with _full_disk_is_one_line(dst, src.stat().st_size, f"{src.name} and any previous {dst.name} are intact"):
        with atomic_path(dst) as tmp:
            tmp.unlink()                      # os.link needs a free name; atomic_path reserved this one
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)


def remove_temp_files(run_dir: Path) -> tuple[int, int]:
    """Delete the temporary files interrupted saves left in ``run_dir`` (``RUN_TEMP`` names);
    returns (count, bytes). Call before training starts: no save of this run is in flight."""
    count = size = 0
    for path in run_dir.glob(".*.tmp") if run_dir.is_dir() else ():
        if RUN_TEMP.match(path.name) and path.is_file():
            size += path.stat().st_size
            path.unlink(missing_ok=True)
            count += 1
    return count, size


def repair_run(run_dir: Path, state: ResumeState) -> list[str]:
    """Make the run's files agree with its last.pth after a kill at any step (module doc):
    relink best.pth / epoch_NNN.pth, drop log lines after the checkpoint, add its epoch line if
    missing. Returns one line per repair made."""
    notes = []
    save_every = (state.train_config or {}).get("save_every_epochs", 0)
    if state.epoch and state.best_epoch == state.epoch and not (run_dir / "best.pth").is_file():
        notes.append(f"best.pth relinked to epoch {state.epoch}")
    if state.epoch:
        link_epoch_files(run_dir, state.epoch, state.best_epoch, save_every)
    log = run_dir / "metrics.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    kept = [line for line in lines if _within(line, state.epoch, state.step)]
    if state.record is not None and not any(_is_epoch_line(line, state.epoch) for line in kept):
        kept.append(json.dumps(state.record))
        notes.append(f"metrics.jsonl: epoch {state.epoch}'s line added")
    if kept != lines:
        dropped = len(lines) - sum(line in kept for line in lines)
        if dropped:
            notes.append(f"metrics.jsonl: {dropped} lines after the checkpoint dropped")
        data = "".join(line + "\n" for line in kept).encode("utf-8")
        with _full_disk_is_one_line(log, len(data), "the previous metrics.jsonl is intact"):
            write_bytes_atomic(log, data)
    return notes


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:   # a line cut by a kill
        return None
    return record if isinstance(record, dict) else None


def _within(line: str, epoch: int, step: int) -> bool:
    record = _record(line)
    return record is not None and record.get("epoch", 0) <= epoch and record.get("step", 0) <= step


def _is_epoch_line(line: str, epoch: int) -> bool:
    record = _record(line)
    return record is not None and record.get("kind") == "epoch" and record.get("epoch") == epoch


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


def read_training_state(path: Path) -> tuple[dict, ResumeState]:
    """The raw training checkpoint and its ``ResumeState`` (one-line error if not one)."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "step") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)}); "
                              "use --init-from to start a new run from its weights")
    best_epoch = ckpt.get("best_epoch")
    return ckpt, ResumeState(int(ckpt["epoch"]), int(ckpt["step"]), ckpt.get("best"), path,
                             None if best_epoch is None else int(best_epoch), ckpt.get("record"),
                             ckpt.get("train_config"))


def load_training_state(ckpt: dict, model, optimizer, scheduler) -> None:
    """Restore weights, optimiser, scheduler and RNG from a training checkpoint's dict (its
    config already checked against the model's: ``trainer.resume.check_resume``)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    rng = ckpt.get("rng", {})
    if "cpu" in rng:
        torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


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
        """Append ``record`` as one line; a full disk is one line and leaves no part-line behind."""
        line = (json.dumps(record) + "\n").encode("utf-8")
        with _full_disk_is_one_line(self.path, len(line), "its earlier lines are intact"):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size, rest = os.fstat(fd).st_size, memoryview(line)
                try:
                    while rest:
                        rest = rest[os.write(fd, rest):]
                except OSError:
                    os.ftruncate(fd, size)   # no part-line (freeing space cannot fail for want of it)
                    raise
            finally:
                os.close(fd)
        if self._tb is not None:
            step = record.get("step", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def write_run_config(run_dir: Path, train_config: dict) -> None:
    """The resolved config as YAML in the run directory (atomic; a full disk is one line)."""
    data = yaml.safe_dump(train_config, sort_keys=False).encode("utf-8")
    with _full_disk_is_one_line(run_dir / "config.yaml", len(data), "any previous config.yaml is intact"):
        write_bytes_atomic(run_dir / "config.yaml", data)
