"""MPII as 2D-only supervision of the 3D model, and the H36M + MPII mixing data set.

``<data_root>/mpii/annotations/annot_mpii.json`` is COCO-style (16 MPII joints, x y v per joint),
images in ``<data_root>/mpii/images/``. Each person becomes an 18-joint H36M-order instance through
``models.skeleton.MPII_TO_H36M``: joints with no MPII counterpart (Torso, Nose) and unlabelled ones
get weight 0 on u, v and d; every joint's depth weight is 0, so the loss sends MPII joints through
the 2-D flow on (u, v) (``RLELoss.log_phi`` picks the flow per joint by the depth weight).
The mixed set (as the reference) has length 2 x len(H36M): index i < len(H36M) is H36M sample i;
every draw of the second half is a random MPII sample.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from models.skeleton import H36M18, MPII_TO_H36M
from trainer.data.coco import load_coco_instances
from trainer.data.dataset import PoseInstances, TopDownDataset, DatasetError, image_cache_dir
from trainer.data.transforms import PoseSample, TrainTransform

MPII_ANNOTATION_FILE = "mpii/annotations/annot_mpii.json"   # relative to data.data_root
MPII_IMAGE_DIR = "mpii/images"
MPII_NUM_JOINTS = 16


def mpii_as_h36m(instances: PoseInstances) -> PoseInstances:
    """MPII instances (joints (N, 16, 2) px, vis (N, 16)) -> H36M order: ``joints`` (N, 18, 3)
    (x px, y px, d = 0) and ``joints_vis`` (N, 18, 3) with (v, v, 0) per joint, 0 where missing."""
    n = len(instances)
    have = np.array([i >= 0 for i in MPII_TO_H36M])
    src = np.array([max(i, 0) for i in MPII_TO_H36M])
    joints = np.zeros((n, len(MPII_TO_H36M), 3))
    joints[:, have, :2] = instances.joints[:, src[have]]
    vis = np.zeros((n, len(MPII_TO_H36M), 3))
    labelled = (instances.joints_vis[:, src] > 0) & have
    vis[..., 0], vis[..., 1] = labelled, labelled
    return dataclasses.replace(instances, joint_set=H36M18, joints=joints, joints_vis=vis)


def load_mpii_instances(ann_path: str | Path) -> PoseInstances:
    """Read ``annot_mpii.json`` (COCO rules: crowd/unlabelled/empty boxes skipped) in H36M order."""
    path = Path(ann_path)
    instances = load_coco_instances(path)
    if instances.joint_set.num_joints != MPII_NUM_JOINTS:
        raise DatasetError(f"{path}: {instances.joint_set.num_joints} joints per person; MPII has "
                           f"{MPII_NUM_JOINTS} (r_ankle ... l_wrist)")
    if len(instances) == 0:
        raise DatasetError(f"{path}: no usable MPII annotations (skipped: {instances.skipped})")
    return mpii_as_h36m(instances)


def build_mpii_dataset(cfg, rank: int = 0) -> TopDownDataset:
    """Augmented MPII training set under ``data.data_root`` (H36M's augmentation and model)."""
    root = Path(cfg.data.data_root)
    instances = load_mpii_instances(root / MPII_ANNOTATION_FILE)
    return TopDownDataset(instances, root / MPII_IMAGE_DIR, TrainTransform(cfg.model, cfg.augment),
                           cfg.data.image_decode, skip_unreadable=True, seed=cfg.seed + 1000 * rank + 1,
                           image_cache=image_cache_dir(cfg, MPII_IMAGE_DIR))


class MixedDataset(Dataset):
    """Length 2 x len(first): index i < len(first) -> ``first[i]``, else a random ``second`` sample
    (drawn from this data set's own stream; ``reseed`` reseeds it and both parts per worker)."""

    def __init__(self, first: Dataset, second: Dataset, seed: int = 0) -> None:
        if len(second) == 0:
            raise DatasetError("the MPII part of the H36M + MPII mix is empty; check mpii/annotations")
        self.first, self.second = first, second
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 0])
        for i, part in enumerate((self.first, self.second), start=1):
            if hasattr(part, "reseed"):
                part.reseed(int(np.random.default_rng([seed, i]).integers(2**63)))

    def __len__(self) -> int:
        return 2 * len(self.first)

    def __getitem__(self, index: int) -> PoseSample:
        if index < len(self.first):
            return self.first[index]
        return self.second[int(self.rng.integers(len(self.second)))]
