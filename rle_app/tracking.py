"""Person boxes across frames: IoU, non-maximum suppression, an IoU tracker, and detection
amortised by tracking.

All boxes are ``boxes_xyxy`` (N, 4) in image pixels (x right, y down). ``BoxTracker`` gives each
person a stable integer id and smooths its box exponentially, so the crop fed to the pose model,
and hence the drawn skeleton, does not jitter with the detector's noise. ``KeypointTracker`` (as
MediaPipe's and RTMPose's video pipelines do) derives each person's next box from the current
frame's confident keypoints and runs the person detector only every N frames, when a track loses
confidence, or when no one is tracked.
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

    With ``hold_iou`` set, a matched track whose box overlaps the detection by at least that IoU
    keeps its own box (a box that follows keypoints is steadier than a re-detected one); a smaller
    overlap re-seeds it from the detection.
    """

    def __init__(self, iou_threshold: float = 0.3, alpha: float = 0.5, max_missed: int = 5,
                 hold_iou: float | None = None):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"BoxTracker alpha must be in (0, 1], got {alpha}")
        self.iou_threshold = iou_threshold
        self.alpha = alpha
        self.max_missed = max_missed
        self.hold_iou = hold_iou
        self.reset()

    def reset(self) -> None:
        """Forget all tracks (ids keep counting up, so old ids are never reused)."""
        self._ids = np.zeros(0, np.int64)
        self._boxes = np.zeros((0, 4), np.float64)
        self._scores = np.zeros(0, np.float64)
        self._missed = np.zeros(0, np.int64)
        self._next_id = getattr(self, "_next_id", 0)

    def update(self, boxes_xyxy: np.ndarray, scores: np.ndarray | None = None, reseed_ids=()) -> Tracks:
        """Feed one frame's detections (N, 4) xyxy px and scores (N,) -> the live ``Tracks``. Tracks
        in ``reseed_ids`` take their matched detection's box even above ``hold_iou``."""
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        iou = box_iou(self._boxes, boxes)
        pairs = greedy_match(iou, self.iou_threshold)
        self._missed += 1
        for t, d in pairs:
            if self.hold_iou is None or iou[t, d] < self.hold_iou or int(self._ids[t]) in reseed_ids:
                alpha = self.alpha if self.hold_iou is None else 1.0
                self._boxes[t] = alpha * boxes[d] + (1.0 - alpha) * self._boxes[t]
            self._scores[t], self._missed[t] = scores[d], 0
        new = np.setdiff1d(np.arange(len(boxes)), [d for _, d in pairs])
        ids = np.arange(self._next_id, self._next_id + len(new), dtype=np.int64)
        self._next_id += len(new)
        keep = self._missed <= self.max_missed
        self._ids = np.concatenate([self._ids[keep], ids])
        self._boxes = np.concatenate([self._boxes[keep], boxes[new]])
        self._scores = np.concatenate([self._scores[keep], scores[new]])
        self._missed = np.concatenate([self._missed[keep], np.zeros(len(new), np.int64)])
        return self.current()

    def __len__(self) -> int:
        return len(self._ids)

    def drop(self, track_ids) -> None:
        """Forget the live tracks ``track_ids`` (ids not live are ignored; ids are never reused)."""
        keep = ~np.isin(self._ids, np.asarray(list(track_ids), np.int64))
        self._ids, self._boxes = self._ids[keep], self._boxes[keep]
        self._scores, self._missed = self._scores[keep], self._missed[keep]

    def current(self) -> Tracks:
        """The live tracks as they stand (no new frame)."""
        return Tracks(self._ids.copy(), self._boxes.astype(np.float32), self._scores.astype(np.float32),
                      self._missed.copy())

    def move(self, track_ids: np.ndarray, boxes_xyxy: np.ndarray, alpha: float,
             cover_xyxy: np.ndarray | None = None) -> None:
        """Move the live tracks ``track_ids`` (M,) towards boxes (M, 4) px by ``alpha`` (1: jump),
        then grow each to contain its ``cover_xyxy`` (M, 4) px if given; ids not live are ignored."""
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        cover = boxes if cover_xyxy is None else np.asarray(cover_xyxy, np.float64).reshape(-1, 4)
        for tid, box, inner in zip(np.asarray(track_ids).reshape(-1).tolist(), boxes, cover):
            rows = np.nonzero(self._ids == tid)[0]
            if len(rows):
                moved = alpha * box + (1.0 - alpha) * self._boxes[rows[0]]
                if cover_xyxy is not None:
                    moved = np.concatenate([np.minimum(moved[:2], inner[:2]), np.maximum(moved[2:], inner[2:])])
                self._boxes[rows[0]] = moved


def boxes_from_keypoints(keypoints_px: np.ndarray, confidence: np.ndarray, image_hw: tuple[int, int],
                         min_confidence: float = 0.3, min_joints: int = 4,
                         pad: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Each person's box from its confident keypoints: the span of the joints with confidence >=
    ``min_confidence``, each side padded by ``pad`` of the span's larger side (the head top lies
    above the eyes, hands and feet beyond wrists and ankles), clipped to the image.

    Args:
        keypoints_px: (N, K, 2+) image px (x, y first); confidence: (N, K) in [0, 1].
        image_hw: (H, W) of the frame in px.

    Returns:
        boxes_xyxy (N, 4) float32 px, and ok (N,) bool: at least ``min_joints`` confident, finite
        joints (a box that is not ok is all zeros and must not be used).
    """
    xy = np.asarray(keypoints_px, np.float64)[..., :2]
    use = (np.asarray(confidence, np.float64) >= min_confidence) & np.isfinite(xy).all(axis=-1)
    ok = use.sum(axis=-1) >= min_joints
    lo = np.where(use[..., None], xy, np.inf).min(axis=1)
    hi = np.where(use[..., None], xy, -np.inf).max(axis=1)
    lo, hi = np.where(ok[:, None], lo, 0.0), np.where(ok[:, None], hi, 0.0)   # no joints: no inf - inf
    margin = pad * np.max(hi - lo, axis=-1, keepdims=True)
    h, w = image_hw
    boxes = np.clip(np.concatenate([lo - margin, hi + margin], axis=1), 0.0, np.array([w, h, w, h], np.float64))
    ok &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return np.where(ok[:, None], boxes, 0.0).astype(np.float32).reshape(-1, 4), ok


@dataclass
class TrackingPolicy:
    """When the person detector runs in a stream, and how keypoints move the boxes.

    Attributes:
        detect_every: frames between scheduled detections (people who entered are found then);
            1 = detect every frame (no amortisation).
        min_confidence, min_joints, box_pad: see ``boxes_from_keypoints``; a person with fewer
            confident joints has lost its track, and the next frame runs the detector.
        follow_alpha: how far a box moves to its keypoints' box each frame (1: at once).
        hold_iou: a re-detected person keeps its keypoint box above this IoU (``BoxTracker``).
        max_missed: detections a track may miss in a row before it is dropped.
        min_scale: a keypoint box narrower *and* shorter than this fraction of the track's box is
            not believed (no person halves in both directions between two frames; a failing model's
            keypoints collapse towards the crop centre): the track keeps its box and is lost.
    """

    detect_every: int = 10
    min_confidence: float = 0.3
    min_joints: int = 4
    box_pad: float = 0.15
    follow_alpha: float = 0.7
    hold_iou: float = 0.5
    max_missed: int = 2
    min_scale: float = 0.5

    def __post_init__(self):
        if self.detect_every < 1:
            raise ValueError(f"TrackingPolicy detect_every must be >= 1, got {self.detect_every}")
        if not 0.0 < self.follow_alpha <= 1.0:
            raise ValueError(f"TrackingPolicy follow_alpha must be in (0, 1], got {self.follow_alpha}")


class KeypointTracker:
    """Detection amortised by tracking: boxes follow keypoints between detections, ids persist.

    Per frame: ``needs_detection()``; then ``detected(boxes, scores)`` (a detection frame) or
    ``coast()`` (the boxes from the last keypoints); the pose model runs on those boxes; then
    ``follow(ids, keypoints, confidence, image_hw)`` moves each box to its keypoints' box.
    """

    def __init__(self, policy: TrackingPolicy | None = None):
        self.policy = policy or TrackingPolicy()
        self.boxes = BoxTracker(alpha=1.0, max_missed=self.policy.max_missed, hold_iou=self.policy.hold_iou)
        self._since_detect: int | None = None
        self._missed = False                 # the last detection missed a live track
        self._lost = self._lost_before = False   # a track lost its keypoints in the last frame / the one before
        self._unsure: set[int] = set()       # tracks whose last keypoints were not confident
        self.detections_run = 0

    def _scheduled(self) -> bool:
        return (self._since_detect is None or self._missed or len(self.boxes) == 0
                or self._since_detect + 1 >= self.policy.detect_every)

    def needs_detection(self) -> bool:
        """Detect this frame? First frame, no live track, a track missed by the last detection or
        lost in the last frame or the one before (a re-detection is confirmed once more), or
        ``detect_every`` frames since the last detection."""
        return self._scheduled() or self._lost or self._lost_before

    def detection_certain(self) -> bool:
        """Asked after this frame's detect/coast step and before ``follow``: will the next frame
        detect whatever this frame's keypoints say? (``PosePipeline.run_stream`` then detects it
        ahead, on its look-ahead thread.)"""
        return self._scheduled() or self._lost

    def detected(self, boxes_xyxy: np.ndarray, scores: np.ndarray | None = None) -> Tracks:
        """A detection frame: associate (N, 4) px detections -> the live tracks. A track that the
        detector missed and whose last keypoints were not confident either is dropped at once (its
        box has drifted off the person: nothing vouches for it); one with confident keypoints may
        miss ``max_missed`` detections in a row (a detector dropout does not make it blink)."""
        tracks = self.boxes.update(boxes_xyxy, scores, reseed_ids=self._unsure)   # their boxes are not keypoints'
        stale = set(tracks.track_ids[tracks.missed > 0].tolist()) & self._unsure
        if stale:
            self.boxes.drop(stale)
            tracks = self.boxes.current()
        self._since_detect, self.detections_run = 0, self.detections_run + 1
        self._missed = bool((tracks.missed > 0).any())
        return tracks

    def coast(self) -> Tracks:
        """A frame without detection: the tracks with the boxes their last keypoints gave."""
        self._since_detect = (self._since_detect or 0) + 1
        return self.boxes.current()

    def follow(self, track_ids: np.ndarray, keypoints_px: np.ndarray, confidence: np.ndarray,
               image_hw: tuple[int, int]) -> None:
        """Move each track (N,) towards the box of its keypoints (N, K, 2+) px with confidence (N, K)
        by ``follow_alpha``, never leaving a confident joint outside; a track without enough
        confident joints, or whose keypoint box collapsed (``min_scale``), keeps its box and asks
        for a detection."""
        p = self.policy
        boxes, ok = boxes_from_keypoints(keypoints_px, confidence, image_hw, p.min_confidence, p.min_joints, p.box_pad)
        span, _ = boxes_from_keypoints(keypoints_px, confidence, image_hw, p.min_confidence, p.min_joints, 0.0)
        ids = np.asarray(track_ids).reshape(-1)
        current = self.boxes.current()
        for i, tid in enumerate(ids.tolist()):
            row = np.nonzero(current.track_ids == tid)[0]
            if ok[i] and len(row):
                old_wh = current.boxes_xyxy[row[0], 2:] - current.boxes_xyxy[row[0], :2]
                ok[i] = not bool((boxes[i, 2:] - boxes[i, :2] < p.min_scale * old_wh).all())
        self.boxes.move(ids[ok], boxes[ok], p.follow_alpha, span[ok])
        self._unsure = set(ids[~ok].tolist())
        self._lost_before, self._lost = self._lost, not bool(ok.all())
