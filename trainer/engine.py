"""The training step and epoch as plain functions: ``train_one_epoch``, ``compute_loss``, and the
runtime (device, processes, bf16 autocast), optimiser and gradient clipping they use.

``trainer/fit.py`` holds ``fit``, the run's sequence that calls them. On CUDA the forward runs
under bf16 autocast with channels_last inputs (the flow and the loss stay fp32); several GPUs
through ``torchrun`` (DDP; rank 0 alone writes). A non-finite loss stops the run with a message
naming the step (``NonFiniteLossError``), before the optimiser steps on it.
"""
from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from models import backends
from models.build import PoseModel
from trainer.config import ConfigError


# A collective waiting longer than this for a peer raises instead of waiting on (gloo's default
# is 30 min); long enough for rank 0's checkpoint writes and COCO scoring while the others wait.
DIST_TIMEOUT = timedelta(minutes=15)
# Words of gloo / NCCL / c10d errors raised when another process of the run has gone away.
PEER_LOST_WORDS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "gloo", "NCCL")


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN/inf; the message names the epoch and step."""


def peer_lost_message(err: BaseException) -> str | None:
    """One line for a collective that failed because another process of a torchrun run died or
    hung (``err`` raised under an initialised process group), else None (keep the traceback)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not (isinstance(err, dist.DistError) or any(word in text for word in PEER_LOST_WORDS)):
        return None
    reason = text.split("] ", 1)[-1].split(". ", 1)[0][:160]
    return (f"rank {dist.get_rank()}: another process of the run stopped or hung ({reason}); torchrun's "
            "summary names the rank that failed first; fix it and relaunch with --resume auto")


@dataclass
class Runtime:
    """Where and how this process trains."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """``models.backends.resolve_device``, its one-line error as a ConfigError."""
    try:
        return backends.resolve_device(name)
    except backends.DeviceError as err:
        raise ConfigError(str(err)) from None


def setup_runtime(device_name: str, amp: str, channels_last: bool) -> Runtime:
    """Init torch.distributed when launched by torchrun (WORLD_SIZE > 1), pick device and AMP."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=DIST_TIMEOUT)
    use_bf16 = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return Runtime(device, rank, world_size, torch.bfloat16 if use_bf16 else None,
                   channels_last and device.type == "cuda")


def l1_loss(out, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain L1 regression (the paper's baseline): sum |mu - gt| * w / batch, sigma unused."""
    return ((out.mu.float() - target).abs() * weight).sum() / max(len(target), 1)


def clip_gradients(model: nn.Module, max_norm: float | None, mode: str) -> None:
    """'per_tensor' clips each parameter's gradient to ``max_norm`` separately (official H36M);
    'global' clips the norm of all gradients together."""
    if not max_norm:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], max_norm)


def _unwrap(model: nn.Module) -> PoseModel:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def compute_loss(model: nn.Module, loss_kind: str, images: torch.Tensor, target: torch.Tensor,
                 weight: torch.Tensor, rt: Runtime) -> tuple[torch.Tensor, dict]:
    """Forward under autocast, loss in fp32. ``loss_kind`` (TrainConfig.loss): "rle" (RLE loss,
    terms nf and log_q), "l1" (plain regression) or "heatmap" (the model's JointsMSELoss).
    Returns (loss, {term: value})."""
    with torch.autocast(rt.device.type, dtype=rt.amp_dtype or torch.float32, enabled=rt.amp_dtype is not None):
        out = model(images)
    if loss_kind == "l1":
        return l1_loss(out, target, weight), {}
    if loss_kind == "heatmap":  # SimpleBaseline JointsMSELoss on Gaussian targets (models/heatmap.py)
        return _unwrap(model).loss(out, target, weight), {}
    terms = _unwrap(model).loss_terms(out, target, weight)
    return terms.total, {"nf": terms.nf.detach(), "log_q": terms.log_q.detach()}


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, rt: Runtime,
                    epoch: int, step: int, loss_kind: str = "rle", grad_clip_norm: float | None = None,
                    grad_clip_mode: str = "per_tensor", log=None, log_every: int = 50,
                    max_steps: int | None = None) -> tuple[dict, int]:
    """One pass over ``loader``. Returns ({'loss', 'img_s', ...} averages, global step)."""
    model.train()
    totals: dict[str, torch.Tensor] = {}  # summed on the device: no host sync per term and step
    seen, start = 0, time.perf_counter()
    shown = start   # when the progress bar's loss / lr / img/s were last refreshed
    batches = loader if max_steps is None else itertools.islice(loader, max_steps)
    bar = tqdm(batches, desc=f"epoch {epoch}", total=_steps_to_run(loader, max_steps),
               disable=not rt.is_main, dynamic_ncols=True, leave=False)
    for i, batch in enumerate(bar):
        if batch is None:  # every sample of the batch was unreadable (counted by the dataset)
            continue
        images = batch.images.to(rt.device, non_blocking=True)
        if rt.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch.targets.to(rt.device, non_blocking=True)
        weight = batch.weights.to(rt.device, non_blocking=True)
        loss, terms = compute_loss(model, loss_kind, images, target, weight, rt)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at epoch {epoch}, step {i + 1} (global step {step + 1}); "
                "the last good checkpoint is kept. RLE's loss is not robust to wrong labels: check the "
                "annotations (keypoints far outside their boxes), lower --lr or set optim.grad_clip_norm")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(model, grad_clip_norm, grad_clip_mode)
        optimizer.step()
        step += 1
        seen += len(images)
        values = {"loss": loss.detach(), **terms}
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value.detach().float() * len(images)
        to_log = step % log_every == 0 or i == 0
        if rt.is_main and (to_log or time.perf_counter() - shown >= 1.0):   # the bar: about 1/s
            shown = time.perf_counter()
            rate = seen * rt.world_size / max(shown - start, 1e-9)
            lr = optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}", img_s=f"{rate:.1f}")
            if log is not None and to_log:
                log.write({"kind": "train", "epoch": epoch, "step": step, "lr": lr, "img_s": rate,
                           **{k: float(v) for k, v in values.items()}})
    stats = {k: float(v) / max(seen, 1) for k, v in totals.items()}
    stats["img_s"] = seen * rt.world_size / max(time.perf_counter() - start, 1e-9)
    return stats, step


def _steps_to_run(loader, max_steps: int | None) -> int | None:
    """The progress bar's total: the epoch's batches, or ``max_steps`` if fewer (None: unknown)."""
    try:
        batches = len(loader)
    except TypeError:   # an iterable without a length
        return max_steps
    return batches if max_steps is None else min(batches, max_steps)


def build_optimizer(model: nn.Module, optim_cfg) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam/AdamW/SGD over all parameters (the flow included) and the epoch-wise MultiStepLR."""
    params = [p for p in model.parameters() if p.requires_grad]
    makers = {
        "adam": lambda: torch.optim.Adam(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay),
        "adamw": lambda: torch.optim.AdamW(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay),
        "sgd": lambda: torch.optim.SGD(params, lr=optim_cfg.lr, momentum=0.9, weight_decay=optim_cfg.weight_decay),
    }
    optimizer = makers[optim_cfg.optimizer]()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(optim_cfg.milestones), optim_cfg.gamma)
    return optimizer, scheduler


def is_better(value: float | None, best: float | None, higher_is_better: bool) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value > best if higher_is_better else value < best)
