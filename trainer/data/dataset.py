"""Batches and loaders for the pose data sets: ``PoseBatch``, ``collate``, per-worker seeding,
``make_loader`` (training shuffled or distributed, evaluation in order and split across ranks), and
the COCO ``build_*_dataset`` / ``build_*_loader`` functions that read a ``TrainConfig``."""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from trainer.data.coco import (CocoInstances, CocoPoseDataset, DatasetError, image_cache_dir,
                               load_coco_instances, with_detections)
from trainer.data.transforms import EvalTransform, PoseSample, TrainTransform


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
                      multiprocessing_context=WORKER_START if workers > 0 else None)


def _root(cfg) -> Path:
    root = Path(cfg.data.data_root)
    if cfg.data.dataset != "coco":
        raise DatasetError(f"data.dataset '{cfg.data.dataset}': this loader reads COCO-format data only")
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found; set data.data_root to the folder holding "
                           "annotations/ and the image folders")
    return root


def _check_joints(instances: CocoInstances, cfg, path: Path) -> None:
    have = tuple(n.lower() for n in instances.joint_set.joints)
    want = tuple(n.lower() for n in cfg.model.joint_names)
    if have != want:
        raise DatasetError(f"{path}: its {len(have)} joints ({', '.join(have[:3])}, ...) differ from "
                           f"model.joint_names ({len(want)}: {', '.join(want[:3])}, ...); set model.joint_names")


def build_train_dataset(cfg, rank: int = 0) -> CocoPoseDataset:
    """Training ``CocoPoseDataset`` from a ``TrainConfig`` (augmented, unreadable images skipped)."""
    root = _root(cfg)
    path = root / cfg.data.train_annotation_file
    instances = load_coco_instances(path)
    _check_joints(instances, cfg, path)
    transform = TrainTransform(cfg.model, cfg.augment, instances.joint_set.flip_pairs)
    return CocoPoseDataset(instances, root / cfg.data.train_image_dir, transform, cfg.data.image_decode,
                           skip_unreadable=True, seed=cfg.seed + 1000 * rank,
                           image_cache=image_cache_dir(cfg, cfg.data.train_image_dir))


def build_val_dataset(cfg, boxes: str | None = None, det_file: str | None = None) -> CocoPoseDataset:
    """Evaluation ``CocoPoseDataset``: ``boxes`` "gt" (every kept GT person) or "det" (the
    detection file, ``data.det_score_threshold``); default ``data.val_boxes``. No augmentation."""
    root = _root(cfg)
    path = root / cfg.data.val_annotation_file
    instances = load_coco_instances(path, skip_at_fault=False)
    _check_joints(instances, cfg, path)
    if (boxes or cfg.data.val_boxes) == "det":
        instances = with_detections(instances, det_file or root / cfg.data.det_file,
                                    cfg.data.det_score_threshold)
    decode = cfg.data.val_image_decode
    return CocoPoseDataset(instances, root / cfg.data.val_image_dir, EvalTransform(cfg.model), decode,
                           image_cache=image_cache_dir(cfg, cfg.data.val_image_dir, decode))


def build_train_loader(cfg, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Training loader: ``data.batch_size_per_gpu`` per process, ``data.workers`` workers."""
    return make_loader(build_train_dataset(cfg, rank), cfg.data.batch_size_per_gpu, True,
                       cfg.data.workers, cfg.seed, rank, world_size)


def build_val_loader(cfg, rank: int = 0, world_size: int = 1, boxes: str | None = None,
                     det_file: str | None = None) -> DataLoader:
    """Evaluation loader: ``data.val_batch_size``, in order, each instance once across ranks."""
    return make_loader(build_val_dataset(cfg, boxes, det_file), cfg.data.val_batch_size, False,
                       cfg.data.workers, cfg.seed, rank, world_size)
