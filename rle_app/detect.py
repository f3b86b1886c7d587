"""Person detectors behind one small interface: RGB image in, person boxes in image pixels out.

Implementations, chosen by name from the plain dict ``DETECTORS`` via ``build_detector``:

* ``torchvision`` a COCO detector from torchvision's zoo, people only (``detect_torchvision.py``;
  default ``ssdlite320_mobilenet_v3_large``, weights fetched once into the torch hub cache).
* ``mediapipe``   MediaPipe Tasks ``PoseLandmarker``; boxes from its 33 landmarks
  (``detect_mediapipe.py``; needs a ``.task`` bundle).
* ``hog``         OpenCV's built-in HOG + linear SVM people detector (upright full bodies); offline.
* ``full-frame``  one box over the frame, for a single person filling a webcam view.

``resolve_detector`` turns the app's ``--detector`` choice (``auto`` included) into one of these
names. Nothing is loaded at import or construction; models are resolved and opened on the first
call. Errors are one line (``DetectorUnavailable``) naming the option and what to do.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from rle_app.detect_mediapipe import (MEDIAPIPE_MODEL_SHA256, MEDIAPIPE_MODEL_URLS, MediaPipeDetector,
                                      TASK_ENV, landmarks_to_boxes, pose_task_from_env,
                                      resolve_pose_task)
from rle_app.detections import Detections, DetectorUnavailable, PersonDetector
from rle_app.errors import AppError
from rle_app.tracking import nms_xyxy

__all__ = ["DETECTORS", "Detections", "DetectorUnavailable", "FullFrameDetector", "HogDetector",
           "MEDIAPIPE_MODEL_SHA256", "MEDIAPIPE_MODEL_URLS", "MediaPipeDetector", "PersonDetector",
           "build_detector", "landmarks_to_boxes", "pose_task_from_env", "resolve_detector", "resolve_pose_task"]


class FullFrameDetector:
    """One box over the whole frame (score 1), or the largest centred box of aspect ``aspect_wh``."""

    name = "full-frame"

    def __init__(self, aspect_wh: float | None = None):
        if aspect_wh is not None and aspect_wh <= 0:
            raise ValueError(f"full-frame aspect_wh must be > 0, got {aspect_wh}")
        self.aspect_wh = aspect_wh

    def __call__(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> Detections:
        h, w = image_rgb.shape[:2]
        bw, bh = float(w), float(h)
        if self.aspect_wh is not None:
            bw, bh = min(w, h * self.aspect_wh), min(h, w / self.aspect_wh)
        x0, y0 = 0.5 * (w - bw), 0.5 * (h - bh)
        return Detections(np.array([[x0, y0, x0 + bw, y0 + bh]], np.float32), np.ones(1, np.float32))


class HogDetector:
    """OpenCV's default HOG people detector (Dalal-Triggs, 64x128 window), with NMS.

    Args:
        downscale: the image is resized by this factor before detection (0.5 = half size, ~4x
            faster); boxes are mapped back to full-resolution pixels.
        min_score: SVM margin below which a window is dropped.
        nms_iou: IoU above which overlapping windows are merged (the best score kept).
        box_shrink: the 64x128 window holds a person about 96 px tall, so boxes are shrunk by this
            factor about their centre to fit the body.
        scale_step: image pyramid step of ``detectMultiScale``.
    """

    name = "hog"

    def __init__(self, downscale: float = 0.5, min_score: float = 0.3, nms_iou: float = 0.45,
                 box_shrink: float = 0.75, scale_step: float = 1.05):
        if not 0.0 < downscale <= 1.0:
            raise ValueError(f"hog downscale must be in (0, 1], got {downscale}")
        self.downscale, self.min_score, self.nms_iou = downscale, min_score, nms_iou
        self.box_shrink, self.scale_step = box_shrink, scale_step
        self._hog: cv2.HOGDescriptor | None = None

    def __call__(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> Detections:
        if self._hog is None:
            self._hog = cv2.HOGDescriptor()
            self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        small = image_rgb if self.downscale == 1.0 else cv2.resize(
            image_rgb, None, fx=self.downscale, fy=self.downscale, interpolation=cv2.INTER_AREA)
        rects, weights = self._hog.detectMultiScale(small, winStride=(8, 8), padding=(16, 16),
                                                    scale=self.scale_step)
        if len(rects) == 0:
            return Detections.empty()
        rects, scores = np.asarray(rects, np.float64) / self.downscale, np.ravel(weights)
        centre, half = rects[:, :2] + rects[:, 2:] / 2, rects[:, 2:] / 2 * self.box_shrink
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keep = scores >= self.min_score
        boxes, scores = boxes[keep], scores[keep]
        keep = nms_xyxy(boxes, scores, self.nms_iou)
        return Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32))


def _torchvision(**options) -> PersonDetector:
    from rle_app.detect_torchvision import TorchvisionDetector  # imports torch(vision): on use only

    return TorchvisionDetector(**options)


DETECTORS: dict[str, Callable[..., PersonDetector]] = {
    "torchvision": _torchvision,
    "mediapipe": MediaPipeDetector,
    "hog": HogDetector,
    "full-frame": FullFrameDetector,
}


def build_detector(name: str, **options) -> PersonDetector:
    """The detector registered as ``name`` built with ``options`` (its constructor's arguments)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name](**options)


def _reason(err: Exception) -> str:
    """The first clause of a detector error (what is missing), without its remedy."""
    return str(err).split("; ")[0]


def resolve_detector(name: str, detector_model: str | None = None, download: bool = True) -> tuple[str, str]:
    """The detector the app starts with, and one notice line saying which runs and why.

    ``auto`` -> ``torchvision`` (default arch) when its weights are cached or downloaded now, else
    ``mediapipe`` when its ``.task`` is found (``detector_model``, ``$RLE_POSE_TASK``, the cache) or
    downloaded, else ``full-frame``; a given ``detector_model`` means ``mediapipe``. An explicit
    ``torchvision`` / ``mediapipe`` is checked now the same way, so a missing model stops the start
    (``AppError``, with the remedy) instead of failing every request. Raises ``AppError`` for a name
    neither ``auto`` nor in ``DETECTORS``.
    """
    from rle_app.detect_torchvision import DEFAULT_ARCH, fetch_coco_weights, weights_url

    if name != "auto" and name not in DETECTORS:
        raise AppError(f"--detector {name}: choose auto, {', '.join(DETECTORS)}")
    task = detector_model or pose_task_from_env()
    source = "--detector-model" if detector_model else f"${TASK_ENV}" if task else "cache"
    if name in ("hog", "full-frame"):
        return name, f"Detector: {name} (--detector {name})"
    if name == "mediapipe" or (name == "auto" and detector_model is not None):
        try:
            path = resolve_pose_task(task, download=download)
        except DetectorUnavailable as err:
            raise AppError(f"--detector mediapipe: {str(err).removeprefix('mediapipe: ')}") from None
        return "mediapipe", f"Detector: mediapipe, model {path} ({source})"
    try:
        path = fetch_coco_weights(weights_url(DEFAULT_ARCH), download)
        return "torchvision", f"Detector: torchvision {DEFAULT_ARCH} (COCO people), weights {path}"
    except DetectorUnavailable as err:
        if name == "torchvision":
            raise AppError(f"--detector torchvision: {str(err).removeprefix('torchvision: ')}") from None
        tv_err = err
    try:
        path = resolve_pose_task(task, download=download)
        return "mediapipe", f"Detector: mediapipe, model {path} ({source}), because {_reason(tv_err)}"
    except DetectorUnavailable as mp_err:
        return "full-frame", (f"Detector: full-frame (one person filling the view), because {_reason(tv_err)} "
                              f"and {_reason(mp_err)}; README 'The app' says how to get either")
