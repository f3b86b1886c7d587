"""What may change when a run is resumed: the rules, checked against the checkpoint's config.

A resumed run continues the run stored in its checkpoint (``train_config``). The new resolved
config (preset, config file and options of the resuming command) is compared key by key:

- the model and what it learns (``model.*``, ``loss``, ``data.dataset``, augmentation, batch size,
  optimiser kind, weight decay, clipping, seed, the training data) cannot change: the first
  differing key is named in one ``ConfigError`` line with both values and how to proceed;
- ``optim.epochs`` may grow (more epochs than done; fewer is refused, equal has nothing to do);
- ``optim.lr`` may change explicitly: the new base lr is applied (times the schedule's decay so
  far), said in one line and recorded in ``config.yaml`` and the next checkpoint;
- ``optim.milestones`` may change only where the schedule's past stays true (as many milestones
  at or before the last finished epoch as the run had): a changed ``--epochs`` rescales a
  preset's milestones, which is refused when it would rewrite decays already made;
- the run's environment may change freely (``ENVIRONMENT_KEYS``: device, workers, folders,
  logging and validation cadence, checkpoint keeping).
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.config import ConfigError, TrainConfig

ENVIRONMENT_KEYS = ("device", "amp", "compile", "channels_last", "out_dir", "log_every_steps",
                    "val_every_epochs", "save_every_epochs", "pretrained", "init_from", "data.workers",
                    "data.data_root", "data.image_cache", "data.image_decode", "data.val_image_decode",
                    "data.val_batch_size", "data.val_boxes", "data.det_file", "data.det_score_threshold")
ADJUSTABLE_KEYS = ("optim.epochs", "optim.lr", "optim.milestones")


@dataclass
class ResumeChanges:
    """What the resuming command changes: the new base lr (None: unchanged), new milestones
    (None: unchanged) and one line per change to print."""

    lr: float | None
    milestones: tuple[int, ...] | None
    notes: list[str]


def flat_config(config: dict, prefix: str = "") -> dict:
    """A nested config dict as {"optim.lr": 0.001, ...} (lists kept as tuples)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = tuple(value) if isinstance(value, list) else value
    return out


def check_resume(stored: dict, cfg: TrainConfig, done_epochs: int, source: str) -> ResumeChanges:
    """Compare the run's stored ``train_config`` with the resuming ``cfg`` (rules above).

    ``done_epochs``: epochs the checkpoint completed; ``source``: the checkpoint path (for
    messages). Raises ``ConfigError`` (one line) for a change the rules refuse."""
    old = flat_config(TrainConfig.from_dict(stored, f"{source} (stored train_config)").to_dict())
    new = flat_config(cfg.to_dict())
    for key in new:
        if key in ENVIRONMENT_KEYS or key in ADJUSTABLE_KEYS or old.get(key) == new[key]:
            continue
        raise ConfigError(f"--resume {source}: {key} is {old.get(key)!r} in the run but {new[key]!r} now; "
                          f"it cannot change mid-run: resume with the run's settings (--config "
                          f"{cfg.out_dir}/config.yaml, or the same options) or start a new run in another --out")
    epochs = cfg.optim.epochs
    if epochs < done_epochs:
        raise ConfigError(f"--resume {source}: the run already finished {done_epochs} epochs, more than "
                          f"optim.epochs {epochs}; give --epochs {done_epochs + 1} or more to continue it")
    notes = []
    if epochs != old["optim.epochs"]:
        notes.append(f"optim.epochs: {old['optim.epochs']} -> {epochs}")
    milestones = None
    if new["optim.milestones"] != old["optim.milestones"]:
        passed_old = sum(m <= done_epochs for m in old["optim.milestones"])
        passed_new = sum(m <= done_epochs for m in new["optim.milestones"])
        if passed_old != passed_new:
            raise ConfigError(f"--resume {source}: optim.milestones {list(new['optim.milestones'])} would "
                              f"rewrite the lr decays already made after epoch {done_epochs} (the run has "
                              f"{list(old['optim.milestones'])}); keep them with --set optim.milestones="
                              f"{list(old['optim.milestones'])} (a changed --epochs rescales a preset's)")
        milestones = cfg.optim.milestones
        notes.append(f"optim.milestones: {list(old['optim.milestones'])} -> {list(milestones)}")
    lr = None
    if new["optim.lr"] != old["optim.lr"]:
        lr = cfg.optim.lr
        notes.append(f"optim.lr: {old['optim.lr']} -> {lr} (applied from epoch {done_epochs + 1}, "
                     "times the schedule's decay so far)")
    return ResumeChanges(lr, milestones, notes)


def apply_changes(changes: ResumeChanges, optimizer, scheduler) -> None:
    """Set the new base lr (keeping the decay factor reached) and milestones on a restored
    optimiser and ``MultiStepLR`` scheduler."""
    if changes.lr is not None:
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = changes.lr * group["lr"] / base
            group["initial_lr"] = changes.lr
        scheduler.base_lrs = [changes.lr for _ in scheduler.base_lrs]
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    if changes.milestones is not None:
        from collections import Counter
        scheduler.milestones = Counter(changes.milestones)
