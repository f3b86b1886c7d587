"""COCO-format keypoint data (any keypoint count): annotations and the data set.

Annotations follow the reference's rules: crowd annotations and those without labelled keypoints
(``num_keypoints == 0``, all-zero keypoints, area <= 0, an empty box) are skipped; a GT box
[x, y, w, h] becomes (x, y, x + max(w-1, 0), y + max(h-1, 0)) clipped to the image, a detected box
(x, y, x + w, y + h) unclipped. Joint names, flip pairs (``left_``/``right_``, ``l_``/``r_``) and the
skeleton come from the category. Images are decoded only where and as finely as the crop needs
(``trainer/data/jpeg.py``). Loaders: ``trainer/data/loader.py``; annotation checks:
``trainer/data/check.py``.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from models.skeleton import JointSet
from trainer.data.jpeg import ImageReadError, JpegReader, RestartCache
from trainer.data.transforms import EvalTransform, Instance, PoseSample

SIDE_PREFIXES = (("left_", "right_"), ("l_", "r_"))
FAR_BOX_SIZES = 1.0   # a labelled keypoint this many box sizes outside its box is at fault


class DatasetError(RuntimeError):
    """Data on disk is missing or malformed; the message is one line naming the file and a fix."""


class AnnotationWarning(UserWarning):
    """Annotations at fault were found when a COCO file loaded: one warning per file, with the
    count and the first few, named."""


class SkippedSampleWarning(UserWarning):
    """A training sample was skipped (unreadable image); the message carries the running count."""


@dataclass
class CocoInstances:
    """Person instances of one COCO keypoint file. N instances, M images, K joints.

    ``image_files`` (M,) paths relative to the image dir; ``image_wh`` (M, 2) px; ``image_ids`` (M,);
    ``image_index`` (N,) into the image arrays; ``boxes_xyxy`` (N, 4) px; ``joints`` (N, K, 2) px;
    ``joints_vis`` (N, K) (COCO v: 0 unlabelled, 1 occluded, 2 visible); ``scores`` (N,) box scores
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


def load_coco_instances(ann_path: str | Path, skip_at_fault: bool = True) -> CocoInstances:
    """Read a COCO keypoints file into ``CocoInstances`` (GT, skipping as the reference). Of the
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
    return CocoInstances(joint_set, [str(im["file_name"]) for im in images], wh,
                         np.array([im["id"] for im in images], np.int64),
                         np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                         np.array([r[2] for r in rows], np.float64).reshape(-1, 4), kps[..., :2],
                         kps[..., 2].copy(), np.ones(len(rows)), skipped)


def with_detections(gt: CocoInstances, det_path: str | Path, score_threshold: float = 0.0) -> CocoInstances:
    """Instances from a COCO detection-results file (person boxes, score >= threshold) on the
    images of ``gt``; boxes (x, y, x + w, y + h) unclipped, joints zero (unknown)."""
    path = Path(det_path)
    dets = read_json(path, "detection file", "check data.det_file or use GT boxes (data.val_boxes=gt)")
    if not isinstance(dets, list):
        raise DatasetError(f"{path}: expected a list of {{image_id, bbox, score}} detections")
    if not dets:
        raise DatasetError(f"{path}: detection file is empty ([]); run the person detector again or "
                           "use GT boxes (data.val_boxes=gt, rle-eval --boxes gt)")
    index_of = {int(i): n for n, i in enumerate(gt.image_ids)}
    keep = [d for d in dets if d.get("category_id", 1) == 1 and float(d["score"]) >= score_threshold]
    unknown = sum(int(d["image_id"]) not in index_of for d in keep)
    keep = [d for d in keep if int(d["image_id"]) in index_of]
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in keep)], np.float64)
    n, k = len(keep), gt.joint_set.num_joints
    return CocoInstances(gt.joint_set, gt.image_files, gt.image_wh, gt.image_ids,
                         np.array([index_of[int(d["image_id"])] for d in keep], np.int64),
                         np.full(n, -1, np.int64), boxes.reshape(-1, 4), np.zeros((n, k, 2)),
                         np.zeros((n, k)), np.array([float(d["score"]) for d in keep]),
                         {"below_threshold": len(dets) - len(keep) - unknown, "unknown_image": unknown})


def image_cache_dir(cfg, image_dir: str, image_decode: str | None = None) -> Path | None:
    """The restart-copy folder for ``data_root/image_dir`` under ``data.image_cache`` (the same
    relative path; a relative ``data.image_cache`` is under ``data.data_root``, as the other data
    paths), None when ``data.image_cache`` is unset or decoding (``image_decode``, default
    ``data.image_decode``) is "full"."""
    if not cfg.data.image_cache or (image_decode or cfg.data.image_decode) != "reduced":
        return None
    rel = Path(image_dir)
    return Path(cfg.data.data_root) / cfg.data.image_cache / rel.relative_to(rel.anchor)


class CocoPoseDataset(Dataset):
    """One ``PoseSample`` per instance. In training (``skip_unreadable``) an unreadable image is a
    counted ``SkippedSampleWarning`` and another instance is drawn; otherwise a DatasetError.
    ``image_cache``: a folder for the images' restart-marker copies (``jpeg.RestartCache``)."""

    def __init__(self, instances: CocoInstances, image_dir: str | Path, transform: EvalTransform,
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


