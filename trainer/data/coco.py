"""COCO-format keypoint data (any keypoint count): annotations, fast JPEG decoding, data sets,
collate and loaders.

Annotations follow the reference's rules: crowd annotations and those without labelled keypoints
(``num_keypoints == 0``, all-zero keypoints, area <= 0, an empty box) are skipped; a GT box
[x, y, w, h] becomes (x, y, x + max(w-1, 0), y + max(h-1, 0)) clipped to the image, a detected box
(x, y, x + w, y + h) unclipped. Joint names, flip pairs (``left_``/``right_``, ``l_``/``r_``) and the
skeleton come from the category. Images are decoded only as finely as the crop needs: libjpeg's
DCT scaling (``cv2.IMREAD_REDUCED_COLOR_2/4/8``) at the largest reduction that still gives >= 1
source pixel per crop pixel; ``transforms.warp_crop`` folds the reduction into the affine.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from models.skeleton import JointSet
from trainer.data.transforms import Decoded, EvalTransform, Instance, PoseSample, TrainTransform

REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
SIDE_PREFIXES = (("left_", "right_"), ("l_", "r_"))


class DatasetError(RuntimeError):
    """Data on disk is missing or malformed; the message is one line naming the file and a fix."""


class SkippedSampleWarning(UserWarning):
    """A training sample was skipped (unreadable image); the message carries the running count."""


class ImageReadError(OSError):
    """An image file is missing or cannot be decoded."""


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


def _person_category(data: dict, path: Path) -> dict:
    cats = [c for c in data.get("categories", []) if c.get("keypoints")]
    if not cats:
        raise DatasetError(f"{path}: no category with 'keypoints'; is this a COCO keypoints file?")
    return next((c for c in cats if c.get("name") == "person"), cats[0])


def _skip_reason(ann: dict, kps: np.ndarray, box: np.ndarray) -> str | None:
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


def load_coco_instances(ann_path: str | Path) -> CocoInstances:
    """Read a COCO keypoints file into ``CocoInstances`` (GT, skipping as the reference)."""
    path = Path(ann_path)
    data = read_json(path, "annotation file", "check data.data_root and the annotation file name")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: no 'images'/'annotations' lists; is this a COCO keypoints file?")
    category = _person_category(data, path)
    joint_set = joint_set_from_category(category)
    k = joint_set.num_joints
    images = data["images"]
    index_of = {im["id"]: i for i, im in enumerate(images)}
    wh = np.array([[im["width"], im["height"]] for im in images], np.int64).reshape(-1, 2)
    rows, skipped = [], {}
    for ann in data["annotations"]:
        if ann.get("category_id", category["id"]) != category["id"] or ann.get("image_id") not in index_of:
            skipped["other"] = skipped.get("other", 0) + 1
            continue
        kps = np.asarray(ann.get("keypoints") or [0.0] * 3 * k, np.float64)
        if kps.size != 3 * k:
            raise DatasetError(f"{path}: annotation {ann.get('id')} has {kps.size // 3} keypoints, "
                               f"the category {k}; fix the file")
        i = index_of[ann["image_id"]]
        box = gt_box_xyxy(ann.get("bbox", [0, 0, 0, 0]), *wh[i])
        reason = _skip_reason(ann, kps.reshape(k, 3), box)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        rows.append((i, ann.get("id", -1), box, kps.reshape(k, 3)))
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


def choose_reduction(src_px_per_out_px: float, max_reduction: int = 8) -> int:
    """Largest JPEG reduction r in {1, 2, 4, 8} (<= max) keeping >= 1 source px per crop px."""
    return max(r for r in REDUCED_FLAGS if r <= max_reduction and r <= max(src_px_per_out_px, 1.0))


class JpegReader:
    """``ImageReader`` for an image file: DCT-reduced decode (``reduced``) or full (``full``).
    Returns BGR (h, w, 3) uint8 (grey JPEGs come back as 3 channels); raises ImageReadError."""

    def __init__(self, path: str | Path, image_decode: str = "reduced") -> None:
        self.path, self.max_reduction = str(path), 8 if image_decode == "reduced" else 1

    def __call__(self, src_px_per_out_px: float) -> Decoded:
        r = choose_reduction(src_px_per_out_px, self.max_reduction)
        image = cv2.imread(self.path, REDUCED_FLAGS[r])
        if image is None:
            raise ImageReadError(f"{self.path}: missing or not a decodable image")
        return Decoded(image, r, True)


class CocoPoseDataset(Dataset):
    """One ``PoseSample`` per instance. In training (``skip_unreadable``) an unreadable image is a
    counted ``SkippedSampleWarning`` and another instance is drawn; otherwise a DatasetError."""

    def __init__(self, instances: CocoInstances, image_dir: str | Path, transform: EvalTransform,
                 image_decode: str = "reduced", skip_unreadable: bool = False, seed: int = 0) -> None:
        self.instances, self.image_dir, self.transform = instances, Path(image_dir), transform
        self.image_decode, self.skip_unreadable = image_decode, skip_unreadable
        self.rng = np.random.default_rng(seed)
        self.num_skipped = 0
        if not self.image_dir.is_dir():
            raise DatasetError(f"{self.image_dir}: image folder not found; check data.data_root and "
                               "the image dir (data.train_image_dir / data.val_image_dir)")

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
            path = self.image_dir / self.instances.image_files[int(self.instances.image_index[index])]
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

    def pin_memory(self) -> "PoseBatch":
        return PoseBatch(*(t.pin_memory() for t in vars(self).values()))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "PoseBatch":
        return PoseBatch(*(t.to(device, non_blocking=non_blocking) for t in vars(self).values()))

    def __len__(self) -> int:
        return len(self.images)


def collate(samples: list[PoseSample | None]) -> PoseBatch | None:
    """Stack ``PoseSample``s into a ``PoseBatch`` (None entries dropped; None if nothing is left)."""
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    stack = lambda name, dtype: torch.from_numpy(np.stack([getattr(s, name) for s in samples]).astype(dtype))
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
                      generator=generator, persistent_workers=workers > 0)


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
                           skip_unreadable=True, seed=cfg.seed + 1000 * rank)


def build_val_dataset(cfg, boxes: str | None = None, det_file: str | None = None) -> CocoPoseDataset:
    """Evaluation ``CocoPoseDataset``: ``boxes`` "gt" (every kept GT person) or "det" (the
    detection file, ``data.det_score_threshold``); default ``data.val_boxes``. No augmentation."""
    root = _root(cfg)
    path = root / cfg.data.val_annotation_file
    instances = load_coco_instances(path)
    _check_joints(instances, cfg, path)
    if (boxes or cfg.data.val_boxes) == "det":
        instances = with_detections(instances, det_file or root / cfg.data.det_file,
                                    cfg.data.det_score_threshold)
    return CocoPoseDataset(instances, root / cfg.data.val_image_dir, EvalTransform(cfg.model),
                           cfg.data.image_decode)


def build_train_loader(cfg, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Training loader: ``data.batch_size_per_gpu`` per process, ``data.workers`` workers."""
    return make_loader(build_train_dataset(cfg, rank), cfg.data.batch_size_per_gpu, True,
                       cfg.data.workers, cfg.seed, rank, world_size)


def build_val_loader(cfg, rank: int = 0, world_size: int = 1, boxes: str | None = None,
                     det_file: str | None = None) -> DataLoader:
    """Evaluation loader: ``data.val_batch_size``, in order, each instance once across ranks."""
    return make_loader(build_val_dataset(cfg, boxes, det_file), cfg.data.val_batch_size, False,
                       cfg.data.workers, cfg.seed, rank, world_size)


@dataclass
class DataReport:
    """What ``validate_annotations`` found: counts, skips by reason, one line per problem."""

    path: str
    num_annotations: int
    num_kept: int
    skipped: dict[str, int]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        state = "OK" if self.ok else f"{len(self.problems)} problem(s), first: {self.problems[0]}"
        return f"{self.path}: {self.num_kept}/{self.num_annotations} annotations used, skipped {self.skipped}; {state}"


def _annotation_problems(ann: dict, k: int, wh: tuple[int, int] | None, margin: float) -> list[str]:
    """Problems of one annotation: unknown image, non-finite or negative box, bad keypoints."""
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


def validate_annotations(ann_path: str | Path, margin: float = 1.0) -> DataReport:
    """Check a COCO keypoints file and say clearly which annotations are at fault: unknown image
    ids, NaN/inf values, negative box sizes, labelled keypoints far (``margin`` box sizes) outside
    their box. Also counts what training would skip (crowd, no keypoints, empty box)."""
    path = Path(ann_path)
    data = read_json(path, "annotation file", "check the path")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{path}: no 'annotations' list; is this a COCO keypoints file?")
    k = joint_set_from_category(_person_category(data, path)).num_joints
    sizes = {im.get("id"): (im.get("width", 0), im.get("height", 0)) for im in data.get("images", [])}
    problems, skipped, kept = [], {}, 0
    for ann in data["annotations"]:
        found = _annotation_problems(ann, k, sizes.get(ann.get("image_id")), margin)
        problems += found
        if found and not ann.get("iscrowd", 0):
            skipped["at_fault"] = skipped.get("at_fault", 0) + 1
            continue
        kps = np.asarray(ann.get("keypoints") or [0.0] * 3 * k, np.float64).reshape(k, 3)
        reason = _skip_reason(ann, kps, gt_box_xyxy(ann["bbox"], *sizes[ann["image_id"]]))
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        kept += reason is None
    return DataReport(str(path), len(data["annotations"]), kept, skipped, problems)
