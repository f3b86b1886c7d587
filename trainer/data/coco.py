"""COCO-format keypoint data (any keypoint count): annotations -> ``PoseInstances``, and the COCO
``build_*_dataset`` / ``build_*_loader`` functions that read a ``TrainConfig``.

Annotations follow the reference's rules: crowd annotations and those without labelled keypoints
(``num_keypoints == 0``, all-zero keypoints, area <= 0, an empty box) are skipped; a GT box
[x, y, w, h] becomes (x, y, x + max(w-1, 0), y + max(h-1, 0)) clipped to the image, a detected box
(x, y, x + w, y + h) unclipped. Joint names, flip pairs (``left_``/``right_``, ``l_``/``r_``) and the
skeleton come from the category. The data set, batches and loaders are the generic ones
(``trainer/data/dataset.py``); annotation checks: ``trainer/data/check.py``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from models.skeleton import JointSet
from trainer.data.dataset import (PoseInstances, TopDownDataset, DatasetError, image_cache_dir, make_loader,
                                  read_json)
from trainer.data.transforms import EvalTransform, TrainTransform

SIDE_PREFIXES = (("left_", "right_"), ("l_", "r_"))
FAR_BOX_SIZES = 1.0   # a labelled keypoint this many box sizes outside its box is at fault


class AnnotationWarning(UserWarning):
    """Annotations at fault were found when a COCO file loaded: one warning per file, with the
    count and the first few, named."""


def joint_set_from_category(category: dict) -> JointSet:
    """JointSet from a COCO category: names, 1-based skeleton -> 0-based edges, flip pairs by name."""
    names = tuple(str(n) for n in category["keypoints"])
    lower = [n.lower() for n in names]
    pairs = []
    for i, name in enumerate(lower):
        for left, right in SIDE_PREFIXES:
            if name.startswith(left) and right + name[len(left):] in lower:
                pairs.append((i, lower.index(right + name[len(left):])))
    edges = tuple((int(a) - 1, int(b) - 1) for a, b in category.get("skeleton", []))
    return JointSet(str(category.get("name", "person")), names, edges, tuple(pairs))


def gt_box_xyxy(bbox_xywh: list[float], width: int, height: int) -> np.ndarray:
    """GT box (x, y, w, h) -> (x, y, x + max(w-1, 0), y + max(h-1, 0)) clipped to the image."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    box = np.array([x, y, x + max(w - 1, 0.0), y + max(h - 1, 0.0)])
    return np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1])


def person_category(data: dict, path: Path) -> dict:
    cats = [c for c in data.get("categories", []) if c.get("keypoints")]
    if not cats:
        raise DatasetError(f"{path}: no category with 'keypoints'; is this a COCO keypoints file?")
    return next((c for c in cats if c.get("name") == "person"), cats[0])


def skip_reason(ann: dict, kps: np.ndarray, box: np.ndarray) -> str | None:
    """Why the reference skips an annotation (None: keep)."""
    if ann.get("iscrowd", 0):
        return "crowd"
    if not (np.all(np.isfinite(kps)) and np.all(np.isfinite(box))):
        return "non_finite"   # not in the reference (it has none): NaN would poison the loss
    if ann.get("num_keypoints", 1) == 0 or not np.any(kps[:, 2] > 0) or not np.any(kps):
        return "no_keypoints"
    if ann.get("area", 1.0) <= 0 or box[2] <= box[0] or box[3] <= box[1]:
        return "empty_box"
    return None


def annotation_problems(ann: dict, k: int, wh: tuple[int, int] | None, margin: float = FAR_BOX_SIZES) -> list[str]:
    """Problems of one annotation (``wh`` its image's size, None: unknown image id): unknown image,
    wrong value counts, NaN/inf, negative box size, labelled keypoints more than ``margin`` box sizes
    outside the box. One line each; [] when none."""
    name = f"annotation {ann.get('id')} (image {ann.get('image_id')})"
    if wh is None:
        return [f"{name}: image id not in 'images'"]
    box = np.asarray(ann.get("bbox", []), np.float64)
    kps = np.asarray(ann.get("keypoints") or [0.0] * 3 * k, np.float64)
    if box.size != 4 or kps.size != 3 * k:
        return [f"{name}: bbox needs 4 values and keypoints {3 * k}, got {box.size} and {kps.size}"]
    if not (np.all(np.isfinite(box)) and np.all(np.isfinite(kps))):
        return [f"{name}: NaN or inf in bbox or keypoints"]
    if box[2] < 0 or box[3] < 0:
        return [f"{name}: negative box size {box[2]:g} x {box[3]:g}"]
    kps = kps.reshape(k, 3)
    lo, hi = box[:2] - margin * box[2:], box[:2] + (1 + margin) * box[2:]
    far = [j for j in np.flatnonzero(kps[:, 2] > 0) if np.any(kps[j, :2] < lo) or np.any(kps[j, :2] > hi)]
    return [f"{name}: keypoint {j} at ({kps[j, 0]:g}, {kps[j, 1]:g}) px is more than {margin:g} box "
            f"sizes outside its box {box.tolist()}" for j in far]


def _warn_faults(path: Path, faults: list[tuple[object, object, str]], skipped: bool) -> None:
    """One counted warning naming the first five annotations at fault (as Human3.6M's loader)."""
    if not faults:
        return
    shown = "; ".join(f"annotation {a} (image {i}): {why}" for a, i, why in faults[:5])
    fate = "were skipped" if skipped else "(unusable ones skipped, the others evaluated as given)"
    warnings.warn(f"{path}: {len(faults)} annotation(s) at fault {fate}: {shown}{'; ...' if len(faults) > 5 else ''}"
                  "; fix or remove them (trainer.data.check.validate_annotations lists them all)",
                  AnnotationWarning, stacklevel=3)


def load_coco_instances(ann_path: str | Path, skip_at_fault: bool = True) -> PoseInstances:
    """Read a COCO keypoints file into ``PoseInstances`` (GT, skipping as the reference). Of the
    annotations the reference would use, those at fault (``annotation_problems``: unknown image,
    NaN/inf, keypoints far outside the box) are counted and named in one ``AnnotationWarning`` and
    skipped (``skipped['at_fault']``) when ``skip_at_fault`` (training); evaluation keeps those it
    can use (keypoints far outside the box), so every GT person the scorer sees gets a prediction."""
    path = Path(ann_path)
    data = read_json(path, "annotation file", "check data.data_root and the annotation file name")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: no 'images'/'annotations' lists; is this a COCO keypoints file?")
    category = person_category(data, path)
    joint_set = joint_set_from_category(category)
    k = joint_set.num_joints
    images = data["images"]
    index_of = {im["id"]: i for i, im in enumerate(images)}
    wh = np.array([[im["width"], im["height"]] for im in images], np.int64).reshape(-1, 2)
    rows, skipped, faults = [], {}, []
    for ann in data["annotations"]:
        if ann.get("category_id", category["id"]) != category["id"]:
            skipped["other"] = skipped.get("other", 0) + 1
            continue
        kps = np.asarray(ann.get("keypoints") or [0.0] * 3 * k, np.float64)
        if kps.size != 3 * k:
            raise DatasetError(f"{path}: annotation {ann.get('id')} has {kps.size // 3} keypoints, "
                               f"the category {k}; fix the file")
        i = index_of.get(ann.get("image_id"))
        box = None if i is None else gt_box_xyxy(ann.get("bbox", [0, 0, 0, 0]), *wh[i])
        reason = None if i is None else skip_reason(ann, kps.reshape(k, 3), box)
        problems = [] if reason not in (None, "non_finite") else \
            annotation_problems(ann, k, None if i is None else tuple(wh[i]))
        if problems:
            faults.append((ann.get("id"), ann.get("image_id"), problems[0]))
            if skip_at_fault or i is None or reason:
                skipped["at_fault"] = skipped.get("at_fault", 0) + 1
                continue
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        rows.append((i, ann.get("id", -1), box, kps.reshape(k, 3)))
    _warn_faults(path, faults, skip_at_fault)
    kps = np.array([r[3] for r in rows], np.float64).reshape(-1, k, 3)
    return PoseInstances(joint_set, [str(im["file_name"]) for im in images], wh,
                         np.array([im["id"] for im in images], np.int64),
                         np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                         np.array([r[2] for r in rows], np.float64).reshape(-1, 4), kps[..., :2],
                         kps[..., 2].copy(), np.ones(len(rows)), skipped)


def with_detections(gt: PoseInstances, det_path: str | Path, score_threshold: float = 0.0) -> PoseInstances:
    """Instances from a COCO detection-results file (person boxes, score >= threshold) on the
    images of ``gt``; boxes (x, y, x + w, y + h) unclipped, joints zero (unknown).

    A bad detection (not a dict, no or non-numeric ``image_id`` / ``score``, a NaN score, a box
    that is not 4 finite numbers with w, h > 0) is skipped and counted in ``skipped`` with the
    threshold's and unknown images' counts; one ``AnnotationWarning`` line sums up the bad ones.
    ``DatasetError`` (one line) when no detection is left."""
    path = Path(det_path)
    dets = read_json(path, "detection file", "check data.det_file or use GT boxes (data.val_boxes=gt)")
    if not isinstance(dets, list):
        raise DatasetError(f"{path}: expected a list of {{image_id, bbox, score}} detections")
    if not dets:
        raise DatasetError(f"{path}: detection file is empty ([]); run the person detector again or "
                           "use GT boxes (data.val_boxes=gt, rle-eval --boxes gt)")
    index_of = {int(i): n for n, i in enumerate(gt.image_ids)}
    skipped: dict[str, int] = {}
    rows = []   # (image index, box xyxy, score)
    for det in dets:
        row, reason = _detection_row(det, index_of, score_threshold)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            rows.append(row)
    bad = {k: v for k, v in skipped.items() if k not in ("below_threshold", "unknown_image", "not_person")}
    if bad:
        warnings.warn(f"{path}: skipped {sum(bad.values())} of {len(dets)} detections at fault "
                      f"({', '.join(f'{k}: {v}' for k, v in bad.items())})", AnnotationWarning, stacklevel=2)
    if not rows:
        raise DatasetError(f"{path}: none of its {len(dets)} detections is usable ("
                           f"{', '.join(f'{k}: {v}' for k, v in skipped.items())}); check the file's image "
                           "ids against the annotations and --score-threshold, or use --boxes gt")
    n, k = len(rows), gt.joint_set.num_joints
    return PoseInstances(gt.joint_set, gt.image_files, gt.image_wh, gt.image_ids,
                         np.array([r[0] for r in rows], np.int64), np.full(n, -1, np.int64),
                         np.array([r[1] for r in rows], np.float64).reshape(-1, 4), np.zeros((n, k, 2)),
                         np.zeros((n, k)), np.array([r[2] for r in rows]),
                         {"below_threshold": 0, "unknown_image": 0, **skipped})


def _detection_row(det, index_of: dict, score_threshold: float) -> tuple[tuple | None, str | None]:
    """(image index, (x0, y0, x1, y1), score) of one detection, or (None, why it is skipped)."""
    if not isinstance(det, dict):
        return None, "not_an_object"
    if det.get("category_id", 1) != 1:
        return None, "not_person"
    try:
        image_id, score = int(det["image_id"]), float(det["score"])
    except (KeyError, TypeError, ValueError):
        return None, "no_numeric_image_id_or_score"
    box = det.get("bbox")
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        return None, "bad_bbox"
    if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
        return None, "bad_bbox"
    if not np.isfinite(score):
        return None, "non_finite_score"
    if score < score_threshold:
        return None, "below_threshold"
    if image_id not in index_of:
        return None, "unknown_image"
    return (index_of[image_id], (x, y, x + w, y + h), score), None


def _root(cfg) -> Path:
    root = Path(cfg.data.data_root)
    if cfg.data.dataset != "coco":
        raise DatasetError(f"data.dataset '{cfg.data.dataset}': this loader reads COCO-format data only")
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found; set data.data_root to the folder holding "
                           "annotations/ and the image folders")
    return root


def _check_joints(instances: PoseInstances, cfg, path: Path) -> None:
    have = tuple(n.lower() for n in instances.joint_set.joints)
    want = tuple(n.lower() for n in cfg.model.joint_names)
    if have != want:
        raise DatasetError(f"{path}: its {len(have)} joints ({', '.join(have[:3])}, ...) differ from "
                           f"model.joint_names ({len(want)}: {', '.join(want[:3])}, ...); set model.joint_names")


def build_train_dataset(cfg, rank: int = 0) -> TopDownDataset:
    """Training ``TopDownDataset`` from a ``TrainConfig`` (augmented, unreadable images skipped)."""
    root = _root(cfg)
    path = root / cfg.data.train_annotation_file
    instances = load_coco_instances(path)
    _check_joints(instances, cfg, path)
    transform = TrainTransform(cfg.model, cfg.augment, instances.joint_set.flip_pairs)
    return TopDownDataset(instances, root / cfg.data.train_image_dir, transform, cfg.data.image_decode,
                           skip_unreadable=True, seed=cfg.seed + 1000 * rank,
                           image_cache=image_cache_dir(cfg, cfg.data.train_image_dir))


def build_val_dataset(cfg, boxes: str | None = None, det_file: str | None = None) -> TopDownDataset:
    """Evaluation ``TopDownDataset``: ``boxes`` "gt" (every kept GT person) or "det" (the
    detection file, ``data.det_score_threshold``); default ``data.val_boxes``. No augmentation."""
    root = _root(cfg)
    path = root / cfg.data.val_annotation_file
    instances = load_coco_instances(path, skip_at_fault=False)
    _check_joints(instances, cfg, path)
    if (boxes or cfg.data.val_boxes) == "det":
        instances = with_detections(instances, det_file or root / cfg.data.det_file,
                                    cfg.data.det_score_threshold)
    decode = cfg.data.val_image_decode
    return TopDownDataset(instances, root / cfg.data.val_image_dir, EvalTransform(cfg.model), decode,
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
