"""Person boxes across frames: IoU, non-maximum suppression, and a small IoU tracker.

All boxes are ``boxes_xyxy`` (N, 4) in image pixels (x right, y down). The tracker gives each
person a stable integer id and smooths its box exponentially, so the crop fed to the pose model,
and hence the drawn skeleton, does not jitter with the detector's noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair: (N, 4) and (M, 4) xyxy px -> (N, M) in [0, 1]."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms_xyxy(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression -> indices (M,) of kept boxes, best score first.

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds
    ``iou_threshold``.
    """
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    iou = box_iou(boxes_xyxy, boxes_xyxy)
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def greedy_match(iou: np.ndarray, iou_threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) of an (N, M) IoU matrix, highest IoU first, each row/col used once."""
    rows, cols = np.nonzero(iou >= iou_threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r, used_c, pairs = set(), set(), []
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


@dataclass
class Tracks:
    """Live tracks after one frame, ordered by track id.

    Attributes:
        track_ids: (T,) int64, stable across frames, never reused.
        boxes_xyxy: (T, 4) float32 image px, exponentially smoothed.
        scores: (T,) float32, the score of the last matched detection.
        missed: (T,) int64, frames since the last matched detection (0 = seen this frame).
    """

    track_ids: np.ndarray
    boxes_xyxy: np.ndarray
    scores: np.ndarray
    missed: np.ndarray

    def __len__(self) -> int:
        return len(self.track_ids)


class BoxTracker:
    """Greedy IoU association + exponential smoothing of person boxes.

    Each frame, detections are matched to live tracks by IoU (highest first, threshold
    ``iou_threshold``); a matched box becomes ``alpha * detection + (1 - alpha) * previous``;
    an unmatched detection starts a new track with a fresh id; a track unmatched for more than
    ``max_missed`` consecutive frames is dropped (until then it is reported with its last box and
    ``missed > 0``, so a one-frame detector dropout does not make the skeleton blink).
    """

    def __init__(self, iou_threshold: float = 0.3, alpha: float = 0.5, max_missed: int = 5):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"BoxTracker alpha must be in (0, 1], got {alpha}")
        self.iou_threshold = iou_threshold
        self.alpha = alpha
        self.max_missed = max_missed
        self.reset()

    def reset(self) -> None:
        """Forget all tracks (ids keep counting up, so old ids are never reused)."""
        self._ids = np.zeros(0, np.int64)
        self._boxes = np.zeros((0, 4), np.float64)
        self._scores = np.zeros(0, np.float64)
        self._missed = np.zeros(0, np.int64)
        self._next_id = getattr(self, "_next_id", 0)

    def update(self, boxes_xyxy: np.ndarray, scores: np.ndarray | None = None) -> Tracks:
        """Feed one frame's detections (N, 4) xyxy px and scores (N,) -> the live ``Tracks``."""
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        pairs = greedy_match(box_iou(self._boxes, boxes), self.iou_threshold)
        self._missed += 1
        for t, d in pairs:
            self._boxes[t] = self.alpha * boxes[d] + (1.0 - self.alpha) * self._boxes[t]
            self._scores[t], self._missed[t] = scores[d], 0
        new = np.setdiff1d(np.arange(len(boxes)), [d for _, d in pairs])
        ids = np.arange(self._next_id, self._next_id + len(new), dtype=np.int64)
        self._next_id += len(new)
        keep = self._missed <= self.max_missed
        self._ids = np.concatenate([self._ids[keep], ids])
        self._boxes = np.concatenate([self._boxes[keep], boxes[new]])
        self._scores = np.concatenate([self._scores[keep], scores[new]])
        self._missed = np.concatenate([self._missed[keep], np.zeros(len(new), np.int64)])
        return Tracks(self._ids.copy(), self._boxes.astype(np.float32), self._scores.astype(np.float32),
                      self._missed.copy())
