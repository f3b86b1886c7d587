"""``fit``: one training run from a resolved TrainConfig, as a readable sequence."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from models.build import build_model
from trainer.config import ConfigError, TrainConfig, model_head_for_loss
from trainer.data.coco import AnnotationWarning
from trainer.data.dataset import truncated_note
from trainer.data.h36m import H36MDataWarning
from trainer.engine import Runtime, build_optimizer, is_better, setup_runtime, train_one_epoch
from trainer.init_from import init_backbone_from
from trainer.resume import apply_changes, check_resume
from trainer.run_state import (MetricsLog, find_resume, load_training_state, read_training_state,
                               remove_temp_files, repair_run, save_training_checkpoint, write_run_config)
from trainer.tasks import TASKS


@dataclass
class FitResult:
    """Where the run ended: run directory, epochs done, best validation value, last metrics
    (``best`` and ``last_val`` are None on ranks other than 0, and only rank 0 ``is_main``)."""

    run_dir: Path
    epochs_done: int
    best: float | None
    last_val: dict | None
    is_main: bool = True


def fit(cfg: TrainConfig, resume: str | None = None, max_steps_per_epoch: int | None = None,
        echo=print) -> FitResult:
    """Train ``cfg``; ``resume`` is None, 'auto' (the run dir's last.pth) or a checkpoint path."""
    if cfg.model.head != model_head_for_loss(cfg.loss):
        raise ConfigError(f"model.head '{cfg.model.head}' does not fit loss '{cfg.loss}' (it trains "
                          f"'{model_head_for_loss(cfg.loss)}'); build the config with resolve_config")
    torch.manual_seed(cfg.seed)
    rt = setup_runtime(cfg.device, cfg.amp, cfg.channels_last)
    if not rt.is_main:   # only rank 0 speaks: the others load the same annotations, warn alike
        echo = _silent
        warnings.simplefilter("ignore", AnnotationWarning)
        warnings.simplefilter("ignore", H36MDataWarning)
    run_dir = Path(cfg.out_dir)
    task = TASKS[cfg.data.dataset]
    resume_path, ckpt, state, changes = find_resume(resume, run_dir), None, None, None
    if resume_path is not None:   # the rules of trainer/resume.py, before anything is built
        ckpt, state = read_training_state(resume_path)
        if state.train_config is not None:
            changes = check_resume(state.train_config, cfg, state.epoch, str(resume_path))
    # the data first: a missing data root is said before any download of pretrained weights
    train_loader = task.train_loader(cfg, rt.rank, rt.world_size)
    note = truncated_note(train_loader.dataset, "trained on") if rt.is_main else None
    if note:   # once per run: a tail check per image, nothing in the data pipeline
        echo(note)
    model = build_model(cfg.model, pretrained=cfg.pretrained and not cfg.init_from and not resume)
    if cfg.init_from:
        echo(init_backbone_from(model, cfg.init_from))
    model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, cfg.optim)
    if state is not None:
        load_training_state(ckpt, model, optimizer, scheduler)
        echo(f"resumed from {resume_path} after epoch {state.epoch} (step {state.step})")
        if changes is not None:
            apply_changes(changes, optimizer, scheduler)
            for note in changes.notes:
                echo(f"resume: {note}")
        if state.epoch >= cfg.optim.epochs:
            echo(f"resume: the run already finished its {state.epoch} epochs; nothing to train "
                 "(give --epochs N to extend it)")
    del ckpt
    train_model = _wrap(model, rt, cfg.compile)
    if rt.is_main and cfg.data.image_decode == "reduced":
        if cfg.data.image_cache:   # (a relative cache is under the data root)
            echo(f"images: restart-marker copies in {Path(cfg.data.data_root) / cfg.data.image_cache} "
                 "(made on first use; then only each crop is decoded)")
        else:
            echo("images: region decoding; --image-cache DIR decodes only each crop from the second "
                 "epoch on (x2 samples/s per core, bench/bench_data.py; a lossless copy of the images)")
    log = None
    if rt.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        echo(f"run folder: {run_dir} (config.yaml, metrics.jsonl, last.pth, best.pth)")
        count, size = remove_temp_files(run_dir)
        if count:
            echo(f"removed {count} temporary files ({size / 1e6:.0f} MB) left by interrupted saves")
        if state is not None and resume_path.resolve() == (run_dir / "last.pth").resolve():
            for note in repair_run(run_dir, state):
                echo(f"repaired after an interrupted save: {note}")
        write_run_config(run_dir, cfg.to_dict())
        log = MetricsLog(run_dir / "metrics.jsonl")
    start_epoch = state.epoch + 1 if state else 1
    step, best, best_epoch = (state.step, state.best, state.best_epoch) if state else (0, None, None)
    done = state.epoch if state else 0
    last_val = None
    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        seed_epoch(train_loader, cfg.seed, rt.rank, epoch)
        tic = time.perf_counter()
        stats, step = train_one_epoch(train_model, train_loader, optimizer, rt, epoch, step, cfg.loss,
                                      cfg.optim.grad_clip_norm, cfg.optim.grad_clip_mode, log,
                                      cfg.log_every_steps, max_steps_per_epoch)
        scheduler.step()
        record = {"kind": "epoch", "epoch": epoch, "step": step, "time_s": time.perf_counter() - tic, **stats}
        is_best = False
        if epoch % cfg.val_every_epochs == 0 or epoch == cfg.optim.epochs:
            last_val = task.validate(model, cfg, rt)
            if last_val is not None:
                value = last_val[task.best_key]
                is_best = is_better(value, best, task.higher_is_better)
                best = value if is_best else best
                record.update({f"val_{k}": v for k, v in last_val.items() if isinstance(v, (int, float))})
        is_best = is_best or best is None
        best_epoch = epoch if is_best else best_epoch
        if rt.is_main:   # the order of run_state's module doc: checkpoint first, log line last
            save_training_checkpoint(run_dir, model, optimizer, scheduler, epoch, step, best,
                                     cfg.to_dict(), is_best, record, best_epoch)
            log.write(record)
            echo(_summary(epoch, stats, last_val if "val_" + task.best_key in record else None, task.best_key))
        done = epoch
        if rt.world_size > 1:
            dist.barrier()
    if log is not None:
        log.close()
    return FitResult(run_dir, done, best, last_val, rt.is_main)


def _silent(*_args, **_kwargs) -> None:
    """``echo`` on ranks other than 0."""


def seed_epoch(loader, seed: int, rank: int, epoch: int) -> None:
    """Make epoch ``epoch``'s shuffle and (in-process) augmentation draws a function of (seed,
    rank, epoch) alone, so a resumed run sees the same batches as an uninterrupted one. Exact with
    ``data.workers 0``; persistent workers keep their own augmentation streams across epochs."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    epoch_seed = int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(epoch_seed)
    if hasattr(loader.dataset, "reseed"):
        loader.dataset.reseed(epoch_seed)


def _wrap(model, rt: Runtime, compile_model: bool):
    wrapped = model
    if rt.world_size > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if compile_model:
        wrapped = torch.compile(wrapped)
    return wrapped


def format_metric(key: str, value: float | None) -> str:
    """A validation metric as ``rle-eval`` prints it: AP in percent (1 decimal), MPJPE in mm."""
    if value is None:
        return f"val {key} n/a"
    return f"val {key} {100 * value:.1f} %" if key.startswith("AP") else f"val {key} {value:.1f} mm"


def _summary(epoch: int, stats: dict, val: dict | None, key: str) -> str:
    text = f"epoch {epoch}: loss {stats.get('loss', float('nan')):.4f}, {stats.get('img_s', 0):.1f} img/s"
    if val is not None:
        text += f", {format_metric(key, val[key])}"
    return text
