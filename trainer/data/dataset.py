"""The generic top-down data set, for every data set: instance table, data set, batches, loaders.

``PoseInstances`` is the instance table (boxes and joints in image pixels, one row per person);
``TopDownDataset`` turns each row into a ``PoseSample`` (a reader for the image file, a
transform); ``PoseBatch`` and ``collate`` stack samples; ``make_loader`` builds the DataLoader
(training shuffled or distributed, evaluation in order and split across ranks). Each data set's
module (``coco``, ``h36m``, ``mpii``) reads its annotation files into an instance table and holds
its own ``build_*`` functions.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from models.skeleton import JointSet
from trainer.data.images import ImageReadError, JpegReader, RestartCache, truncated_jpegs
from trainer.data.transforms import EvalTransform, Instance, PoseSample


class DatasetError(RuntimeError):
    """Data on disk is missing or malformed; the message is one line naming the file and a fix."""


class SkippedSampleWarning(UserWarning):
    """A training sample was skipped (unreadable image); the message carries the running count."""


@dataclass
class PoseInstances:
    """Person instances of one annotation file (COCO, MPII; H36M's ``H36MInstances`` adds its
    cameras). N instances, M images, K joints.

    ``image_files`` (M,) paths relative to the image dir; ``image_wh`` (M, 2) px; ``image_ids`` (M,);
    ``image_index`` (N,) into the image arrays; ``boxes_xyxy`` (N, 4) px; ``joints`` (N, K, 2) px
    (or (N, K, 3): x, y px and a depth target); ``joints_vis`` (N, K) (COCO v: 0 unlabelled,
    1 occluded, 2 visible) or (N, K, D) per coordinate; ``scores`` (N,) box scores
    (1 for GT); ``skipped``: annotations left out, by reason.
    """

    joint_set: JointSet
    image_files: list[str]
    image_wh: np.ndarray
    image_ids: np.ndarray
    image_index: np.ndarray
    ann_ids: np.ndarray
    boxes_xyxy: np.ndarray
    joints: np.ndarray
    joints_vis: np.ndarray
    scores: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ann_ids)


def read_json(path: Path, what: str, fix: str) -> object:
    """Load a JSON file or raise a one-line DatasetError naming it and ``fix``."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
        raise DatasetError(f"{path}: {what} is not valid JSON{where}; re-download or regenerate it") from None


def image_cache_dir(cfg, image_dir: str, image_decode: str | None = None) -> Path | None:
    """The restart-copy folder for ``data_root/image_dir`` under ``data.image_cache`` (the same
    relative path; a relative ``data.image_cache`` is under ``data.data_root``, as the other data
    paths), None when ``data.image_cache`` is unset or decoding (``image_decode``, default
    ``data.image_decode``) is "full"."""
    if not cfg.data.image_cache or (image_decode or cfg.data.image_decode) != "reduced":
        return None
    rel = Path(image_dir)
    return Path(cfg.data.data_root) / cfg.data.image_cache / rel.relative_to(rel.anchor)


class TopDownDataset(Dataset):
    """One ``PoseSample`` per instance. In training (``skip_unreadable``) an unreadable image is a
    counted ``SkippedSampleWarning`` and another instance is drawn; otherwise a DatasetError.
    ``image_cache``: a folder for the images' restart-marker copies (``images.RestartCache``)."""

    def __init__(self, instances: PoseInstances, image_dir: str | Path, transform: EvalTransform,
                 image_decode: str = "reduced", skip_unreadable: bool = False, seed: int = 0,
                 image_cache: str | Path | None = None) -> None:
        self.instances, self.image_dir, self.transform = instances, Path(image_dir), transform
        self.image_decode, self.skip_unreadable = image_decode, skip_unreadable
        self.rng = np.random.default_rng(seed)
        self.num_skipped = 0
        if not self.image_dir.is_dir():
            raise DatasetError(f"{self.image_dir}: image folder not found; check data.data_root and "
                               "the image dir (data.train_image_dir / data.val_image_dir)")
        self.cache = None   # (picklable: loader workers get a copy)
        if image_cache is not None:
            if Path(image_cache).resolve() == self.image_dir.resolve():
                raise DatasetError(f"{image_cache}: data.image_cache is the image folder itself; "
                                   "give it a folder of its own")
            self.cache = RestartCache(self.image_dir, image_cache)

    def require_images(self, fix: str) -> None:
        """Before a run: every image an instance needs is a readable file, else one DatasetError
        line with how many are missing and the first three paths; ``fix`` says what to do."""
        names = [self.instances.image_files[i] for i in np.unique(self.instances.image_index)]
        missing = [str(self.image_dir / n) for n in names
                   if not (self.image_dir / n).is_file() or not os.access(self.image_dir / n, os.R_OK)]
        if missing:
            more = ", ..." if len(missing) > 3 else ""
            raise DatasetError(f"{len(missing)} of {len(names)} images missing or unreadable "
                               f"({', '.join(missing[:3])}{more}); {fix}")

    def reseed(self, seed: int) -> None:
        """Give this copy (one per worker) its own augmentation stream."""
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.instances)

    def instance(self, index: int) -> Instance:
        s, i = self.instances, int(self.instances.image_index[index])
        return Instance(s.boxes_xyxy[index], s.joints[index], s.joints_vis[index], tuple(s.image_wh[i]),
                        int(s.image_ids[i]), int(s.ann_ids[index]), float(s.scores[index]))

    def __getitem__(self, index: int) -> PoseSample:
        for _ in range(10):
            inst = self.instance(index)
            name = self.instances.image_files[int(self.instances.image_index[index])]
            path = self.image_dir / name if self.cache is None else self.cache(name)
            try:
                return self.transform(inst, JpegReader(path, self.image_decode), self.rng)
            except ImageReadError as err:
                if not self.skip_unreadable:
                    raise DatasetError(f"{err}; fix or remove it from the annotation file") from None
                self.num_skipped += 1
                warnings.warn(f"{err}: sample skipped ({self.num_skipped} skipped so far in this "
                              "process)", SkippedSampleWarning, stacklevel=2)
                index = int(self.rng.integers(len(self)))
        raise DatasetError(f"{self.image_dir}: 10 unreadable images in a row; check the image folder")


@dataclass
class PoseBatch:
    """Collated samples: ``images`` (N, 3, H, W) uint8 RGB (convert to float on the device);
    ``targets``, ``weights`` (N, K, D) float32; ``crop_from_image`` (N, 2, 3) float32;
    ``center_px``, ``size_px`` (N, 2) float32; ``image_ids``, ``ann_ids`` (N,) int64; ``scores`` (N,)."""

    images: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    crop_from_image: torch.Tensor
    center_px: torch.Tensor
    size_px: torch.Tensor
    image_ids: torch.Tensor
    ann_ids: torch.Tensor
    scores: torch.Tensor

    def pin_memory(self) -> PoseBatch:
        return PoseBatch(*(t.pin_memory() for t in vars(self).values()))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PoseBatch:
        return PoseBatch(*(t.to(device, non_blocking=non_blocking) for t in vars(self).values()))

    def __len__(self) -> int:
        return len(self.images)


def collate(samples: list[PoseSample | None]) -> PoseBatch | None:
    """Stack ``PoseSample``s into a ``PoseBatch`` (None entries dropped; None if nothing is left)."""
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    def stack(name, dtype):
        return torch.from_numpy(np.stack([getattr(s, name) for s in samples]).astype(dtype))
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
    return PoseBatch(images, stack("target", np.float32), stack("weight", np.float32),
                     stack("crop_from_image", np.float32), stack("center_px", np.float32),
                     stack("size_px", np.float32), stack("image_id", np.int64), stack("ann_id", np.int64),
                     stack("score", np.float32))


def image_paths(dataset: Dataset) -> list[Path]:
    """The image files a data set reads, each once: a ``TopDownDataset``'s, or those of the parts
    of a mix (``first``/``second``, as mpii.MixedDataset) or a ConcatDataset (``datasets``)."""
    if isinstance(dataset, TopDownDataset):
        s = dataset.instances
        return [dataset.image_dir / s.image_files[i] for i in np.unique(s.image_index)]
    parts = [getattr(dataset, n) for n in ("first", "second") if hasattr(dataset, n)]
    return [p for part in parts + list(getattr(dataset, "datasets", ())) for p in image_paths(part)]


def truncated_note(dataset: Dataset, use: str) -> str | None:
    """One warning line counting the data set's cut-off JPEGs (``images.truncated_jpegs``: the end
    marker checked in each file's last 4 kB, no decode), naming three; None when there are none.
    ``use`` says what happens to them ("evaluated", "trained on")."""
    paths = image_paths(dataset)
    bad = truncated_jpegs(paths)
    if not bad:
        return None
    more = ", ..." if len(bad) > 3 else ""
    return (f"warning: {len(bad)} of {len(paths)} images are truncated JPEGs ({', '.join(map(str, bad[:3]))}"
            f"{more}); they are {use} as decoded (grey below the cut)")


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: each worker, each epoch, gets its own stream (torch gives
    workers base_seed + id with a fresh base_seed per iterator; the official code reseeds all
    workers with one constant, repeating augmentations: not copied)."""
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)
    cv2.setNumThreads(1)


# Workers are started from a clean server process, not forked from this one: a fork after torch's
# OpenMP pool or OpenCV's thread pool has run can deadlock the child (seen here: a worker hung
# forever in its first cv2 call). "forkserver" keeps start-up cheap after the first worker.
WORKER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
# Imported once by the fork server (which has run no thread pool), so each worker forked from it
# starts with torch, timm, OpenCV and the data code loaded instead of importing them again.
WORKER_PRELOAD = ["trainer.data.dataset", "trainer.data.mpii"]


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context data-loader workers start from (``WORKER_START``; a fork server
    that preloads ``WORKER_PRELOAD``, when it starts after this call)."""
    ctx = multiprocessing.get_context(WORKER_START)
    if WORKER_START == "forkserver":
        ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ctx


def make_loader(dataset: Dataset, batch_size: int, train: bool, workers: int, seed: int,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """DataLoader over ``dataset``. Training: shuffled (DistributedSampler when world_size > 1:
    call ``loader.sampler.set_epoch(epoch)``), last partial batch dropped. Evaluation: in order,
    rank r takes instances r, r + world_size, ... (each instance exactly once, no padding)."""
    if train and world_size > 1:
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed, drop_last=True)
    elif train:
        sampler = None
    else:
        sampler = list(range(rank, len(dataset), world_size))
    generator = torch.Generator().manual_seed(seed + 1000 * rank)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=collate, pin_memory=torch.cuda.is_available(),
                      drop_last=train and len(dataset) >= batch_size, worker_init_fn=seed_worker,
                      generator=generator, persistent_workers=workers > 0,
                      multiprocessing_context=worker_context() if workers > 0 else None)
