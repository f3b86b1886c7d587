"""Annotation checks: ``validate_annotations`` says which annotations of a COCO keypoints file are
at fault (unknown images, NaN/inf, negative box sizes, keypoints far outside their box) and counts
what training would skip."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.coco import (annotation_problems, gt_box_xyxy, joint_set_from_category, person_category,
                               skip_reason)
from trainer.data.dataset import DatasetError, read_json


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
        found = annotation_problems(ann, k, sizes.get(ann.get("image_id")), margin)
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
