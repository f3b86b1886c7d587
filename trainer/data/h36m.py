"""Human3.6M (PoseNet annotation layout, protocol 2): annotations -> 3D instances, the data check,
and the training (H36M + MPII) and test loaders.

Layout under ``data.data_root`` (the seed README's): ``h36m/annotations/Sample_trainmin_train_
Human36M_protocol_2.json``, ``h36m/annotations/Sample_64_test_Human36M_protocol_2.json``,
``h36m/images/s_SS_act_AA_subact_BB_ca_CC/*.jpg``; ``images[i]`` belongs with ``annotations[i]``.
Per instance, as the official loader: Thorax (the shoulders' midpoint, world mm) is appended as
the 18th joint; joints go world -> camera (``X_cam = R @ (X_world - t)``, mm) -> pixels
(``x = X/Z f_x + c_x``); the depth target is ``d = (Z_joint - Z_root) / depth_range_mm`` (2000);
the box is the reference's GT conversion (``coco.gt_box_xyxy``), cropped with the model's box
factor (1.0). The three sequences the official loader drops are dropped here too.
Instances are ``PoseInstances`` (a subclass) so that ``dataset.TopDownDataset`` reads them unchanged:
``joints`` (N, 18, 3) = (x px, y px, d), and the transforms carry d through (flip swaps the
pairs, never negates d; weights of joints with u, v or d outside [-0.5, 0.5] are zeroed).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from models.geometry import camera_to_pixel, world_to_camera
from models.skeleton import H36M18
from trainer.data.coco import gt_box_xyxy
from trainer.data.dataset import (PoseInstances, TopDownDataset, DatasetError, image_cache_dir, make_loader,
                                  read_json)
from trainer.data.mpii import MixedDataset, build_mpii_dataset
from trainer.data.transforms import EvalTransform, TrainTransform
from trainer.metrics.h36m_eval import parse_h36m_file_name

TRAIN_SUBJECTS = (1, 5, 6, 7, 8)    # protocol 2: train on S1, S5, S6, S7, S8
TEST_SUBJECTS = (9, 11)             # protocol 2: test on S9, S11
EXCLUDED_SEQUENCES = frozenset({(9, 5, 2), (9, 10, 2), (9, 13, 1)})   # (subject, action, subaction)
SHOULDERS = (11, 14)                # L_Shoulder, R_Shoulder: Thorax is their midpoint
FAR_BOX_SIZES = 1.0                 # data check: a joint this many box sizes outside its box is absurd


class H36MDataWarning(UserWarning):
    """Annotations at fault (NaN/inf, joints behind the camera or far outside the box) were skipped;
    one warning per file, with the count and the first ids."""


@dataclass(kw_only=True)
class H36MInstances(PoseInstances):
    """N instances of one Human3.6M file (one per image): ``PoseInstances`` (``joint_set`` H36M18,
    ``image_index`` = arange, ``joints`` (N, 18, 3): x, y px and d = (Z - Z_root) /
    depth_range_mm, ``joints_vis`` and ``scores`` ones) plus ``joints_cam`` (N, 18, 3) camera mm;
    ``f``, ``c`` (N, 2) px; ``subjects``, ``actions``, ``subactions``, ``cameras`` (N,) from the
    file names."""

    joints_cam: np.ndarray
    f: np.ndarray
    c: np.ndarray
    subjects: np.ndarray
    actions: np.ndarray
    subactions: np.ndarray
    cameras: np.ndarray


def add_thorax(joints_world: np.ndarray) -> np.ndarray:
    """(17, 3) H36M joints (mm) -> (18, 3) with Thorax = mean of the two shoulders appended."""
    return np.concatenate([joints_world, joints_world[list(SHOULDERS)].mean(0, keepdims=True)], 0)


def _camera(image: dict, path: Path) -> tuple[np.ndarray, ...]:
    """(R (3, 3), t (3,), f (2,), c (2,)) of an image entry, or a one-line DatasetError."""
    cam = image.get("cam_param")
    need = {"R": (3, 3), "t": (3,), "f": (2,), "c": (2,)}
    where = f"{path}: image {image.get('id')} ({image.get('file_name')})"
    if not isinstance(cam, dict) or any(k not in cam for k in need):
        raise DatasetError(f"{where} has no camera parameters (cam_param with R, t, f, c); use the "
                           "PoseNet-layout Human3.6M files, which carry them")
    try:
        values = tuple(np.asarray(cam[k], np.float64).reshape(shape) for k, shape in need.items())
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: cam_param R, t, f, c must be 3x3, 3, 2 and 2 numbers") from None
    return values


def _fault(joints_cam: np.ndarray, joints_px: np.ndarray, box: np.ndarray, raw_box) -> str | None:
    """Why an annotation is at fault (None: fine): non-finite values, joints behind the camera,
    or joints more than ``FAR_BOX_SIZES`` box sizes outside the box."""
    if not (np.all(np.isfinite(joints_cam)) and np.all(np.isfinite(np.asarray(raw_box, np.float64)))):
        return "non_finite"
    if np.any(joints_cam[:, 2] <= 0):
        return "behind_camera"
    size = np.maximum(box[2:] - box[:2], 1.0)
    if np.any(joints_px < box[:2] - FAR_BOX_SIZES * size) or np.any(joints_px > box[2:] + FAR_BOX_SIZES * size):
        return "far_from_box"
    return None


def _check_subjects(subjects: set[int], split: str, path: Path) -> None:
    """Protocol 2: the test file holds S9/S11 only, the training file none of them."""
    if split == "test" and (not subjects & set(TEST_SUBJECTS) or subjects - set(TEST_SUBJECTS)):
        raise DatasetError(f"{path}: subjects {sorted(subjects)}; a protocol-2 test file holds S9 and "
                           "S11 only (use Sample_64_test_Human36M_protocol_2.json)")
    if split == "train" and subjects & set(TEST_SUBJECTS):
        raise DatasetError(f"{path}: test subjects {sorted(subjects & set(TEST_SUBJECTS))} in a "
                           "training file; protocol 2 trains on S1, S5, S6, S7, S8 only")


def _read_pairs(path: Path) -> list[tuple[dict, dict]]:
    data = read_json(path, "Human3.6M annotation file", "check data.data_root (it holds h36m/ and mpii/)")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{path}: no 'images'/'annotations' lists; is this a Human3.6M annotation file?")
    if len(data["images"]) != len(data["annotations"]):
        raise DatasetError(f"{path}: {len(data['images'])} images but {len(data['annotations'])} "
                           "annotations; the file must pair image i with annotation i")
    return list(zip(data["images"], data["annotations"]))


def _instance_row(image: dict, ann: dict, path: Path) -> tuple:
    """(joints_cam (18, 3) mm, joints_px (18, 2), box_xyxy (4,) px, f (2,), c (2,), the raw bbox)
    of one image/annotation pair; DatasetError on a mismatched pair or a malformed entry."""
    if ann.get("image_id", image.get("id")) != image.get("id"):
        raise DatasetError(f"{path}: annotation {ann.get('id')} is for image {ann.get('image_id')}, "
                           f"paired with image {image.get('id')}; images and annotations must be in the same order")
    world = np.asarray(ann.get("keypoints_world", []), np.float64)
    if world.size not in (17 * 3, 18 * 3):
        raise DatasetError(f"{path}: annotation {ann.get('id')} has keypoints_world of {world.size} "
                           "values, expected 17 joints x 3 (mm)")
    world = world.reshape(-1, 3)
    world = add_thorax(world) if len(world) == 17 else world
    R, t, f, c = _camera(image, path)
    joints_cam = world_to_camera(world[None], R, t)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        joints_px = camera_to_pixel(joints_cam[None], f, c)[0]
    box = gt_box_xyxy(ann.get("bbox", [0, 0, 0, 0]), int(image["width"]), int(image["height"]))
    return joints_cam, joints_px, box, f, c, ann.get("bbox")


def _warn_faults(path: Path, faults: list[tuple[int, int, str]]) -> None:
    if faults:
        shown = ", ".join(f"annotation {a} (image {i}): {why}" for a, i, why in faults[:5])
        warnings.warn(f"{path}: {len(faults)} annotation(s) at fault were skipped ({shown}"
                      f"{', ...' if len(faults) > 5 else ''}); fix or remove them", H36MDataWarning, stacklevel=3)


def load_h36m_instances(ann_path: str | Path, split: str, depth_range_mm: float = 2000.0,
                        root_index: int = 0) -> H36MInstances:
    """Read a Human3.6M file (``split`` 'train' or 'test', checked against protocol 2)."""
    path = Path(ann_path)
    rows, faults, skipped = [], [], {}
    for image, ann in _read_pairs(path):
        try:
            seq = parse_h36m_file_name(str(image.get("file_name", "")))
        except ValueError as err:
            raise DatasetError(f"{path}: image {image.get('id')}: {err}") from None
        if seq[:3] in EXCLUDED_SEQUENCES:
            skipped["excluded_sequence"] = skipped.get("excluded_sequence", 0) + 1
            continue
        joints_cam, joints_px, box, f, c, raw_box = _instance_row(image, ann, path)
        why = _fault(joints_cam, joints_px, box, raw_box)
        if why is None and (box[2] <= box[0] or box[3] <= box[1]):
            skipped["empty_box"] = skipped.get("empty_box", 0) + 1
            continue
        if why is not None:
            faults.append((ann.get("id", -1), image.get("id", -1), why))
            continue
        rows.append((image, ann, joints_cam, joints_px, box, f, c, seq))
    _warn_faults(path, faults)
    skipped.update({"at_fault": len(faults)} if faults else {})
    _check_subjects({r[7][0] for r in rows}, split, path)
    if not rows:
        raise DatasetError(f"{path}: no usable annotations (skipped: {skipped}); check the file")
    return _stack(rows, depth_range_mm, root_index, skipped)


def _stack(rows: list[tuple], depth_range_mm: float, root_index: int, skipped: dict) -> H36MInstances:
    """Rows of ``load_h36m_instances`` -> H36MInstances; d = (Z - Z_root) / depth_range_mm."""
    n = len(rows)
    cam = np.stack([r[2] for r in rows])
    depth = (cam[..., 2] - cam[:, root_index:root_index + 1, 2]) / depth_range_mm
    seq = np.array([r[7] for r in rows], np.int64)
    return H36MInstances(
        joint_set=H36M18, image_files=[str(r[0]["file_name"]) for r in rows],
        image_wh=np.array([[r[0]["width"], r[0]["height"]] for r in rows], np.int64),
        image_ids=np.array([r[0].get("id", -1) for r in rows], np.int64), image_index=np.arange(n),
        ann_ids=np.array([r[1].get("id", -1) for r in rows], np.int64),
        boxes_xyxy=np.stack([r[4] for r in rows]),
        joints=np.concatenate([np.stack([r[3] for r in rows]), depth[..., None]], -1),
        joints_vis=np.ones(cam.shape[:2]), scores=np.ones(n), joints_cam=cam,
        f=np.stack([r[5] for r in rows]), c=np.stack([r[6] for r in rows]), subjects=seq[:, 0],
        actions=seq[:, 1], subactions=seq[:, 2], cameras=seq[:, 3], skipped=skipped)


def h36m_root(cfg) -> Path:
    """``data.data_root`` checked for an H36M run (the folder holding h36m/ and mpii/)."""
    root = Path(cfg.data.data_root)
    if cfg.data.dataset != "h36m" or cfg.model.dims != 3 or cfg.model.num_joints != 18:
        raise DatasetError(f"data.dataset '{cfg.data.dataset}' with a {cfg.model.dims}D, "
                           f"{cfg.model.num_joints}-joint model: the H36M loader needs the 3D 18-joint model")
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found; set data.data_root to the folder holding "
                           "h36m/ (and mpii/ for training)")
    return root


def build_h36m_dataset(cfg, train: bool, rank: int = 0) -> TopDownDataset:
    """H36M training (augmented, ``data.train_annotation_file``) or test (``data.val_*``) data set."""
    root = h36m_root(cfg)
    ann = cfg.data.train_annotation_file if train else cfg.data.val_annotation_file
    instances = load_h36m_instances(root / ann, "train" if train else "test", cfg.model.depth_range_mm,
                                    cfg.model.root_index)
    transform = TrainTransform(cfg.model, cfg.augment) if train else EvalTransform(cfg.model)
    rel = cfg.data.train_image_dir if train else cfg.data.val_image_dir
    decode = cfg.data.image_decode if train else cfg.data.val_image_decode
    return TopDownDataset(instances, root / rel, transform, decode, skip_unreadable=train,
                           seed=cfg.seed + 1000 * rank, image_cache=image_cache_dir(cfg, rel, decode))


def build_train_loader(cfg, rank: int = 0, world_size: int = 1) -> DataLoader:
    """The mixed H36M + MPII training loader (``mpii.MixedDataset``), shuffled."""
    mixed = MixedDataset(build_h36m_dataset(cfg, True, rank), build_mpii_dataset(cfg, rank),
                         seed=cfg.seed + 1000 * rank)
    return make_loader(mixed, cfg.data.batch_size_per_gpu, True, cfg.data.workers, cfg.seed, rank, world_size)


def build_val_loader(cfg, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Protocol-2 test loader (GT boxes, no augmentation), in order, each instance once."""
    return make_loader(build_h36m_dataset(cfg, False), cfg.data.val_batch_size, False,
                       cfg.data.workers, cfg.seed, rank, world_size)
