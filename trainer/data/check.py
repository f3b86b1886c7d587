"""Annotation checks: ``validate_annotations`` says which annotations of a COCO keypoints file are
at fault (unknown images, NaN/inf, negative box sizes, keypoints far outside their box) and counts
what training would skip."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.coco import (DatasetError, gt_box_xyxy, joint_set_from_category, person_category, read_json,
                               skip_reason)


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
    k = joint_set_from_category(person_category(data, path)).num_joints
    sizes = {im.get("id"): (im.get("width", 0), im.get("height", 0)) for im in data.get("images", [])}
    problems, skipped, kept = [], {}, 0
    for ann in data["annotations"]:
        found = _annotation_problems(ann, k, sizes.get(ann.get("image_id")), margin)
        problems += found
        if found and not ann.get("iscrowd", 0):
            skipped["at_fault"] = skipped.get("at_fault", 0) + 1
            continue
        kps = np.asarray(ann.get("keypoints") or [0.0] * 3 * k, np.float64).reshape(k, 3)
        reason = skip_reason(ann, kps, gt_box_xyxy(ann["bbox"], *sizes[ann["image_id"]]))
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        kept += reason is None
    return DataReport(str(path), len(data["annotations"]), kept, skipped, problems)
