"""MediaPipe Tasks ``PoseLandmarker`` as a person detector: boxes from its 33 landmarks.

Needs a ``.task`` bundle: ``model_path`` (the app also takes ``$RLE_POSE_TASK``), else the cache (``$RLE_POSE_CACHE`` or
``~/.cache/rle-pose``), else a one-time download from Google's model storage
(``models.files.download_file``: verified, atomic). Offline, ``python -m rle_app.build_pose_task``
builds an equivalent bundle from the mediapipe 0.10.21 wheel. The model is resolved and opened on
the first call, never at import or construction.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import weakref
from pathlib import Path

import numpy as np

from models.files import DownloadError, default_cache_dir, download_file
from rle_app.detections import Detections, DetectorUnavailable

# Version 1 of the float16 bundles ("latest" may change under a pinned checksum).
MEDIAPIPE_MODEL_URLS = {
    "lite": "https://storage.googleapis.com/mediapipe-models/pose_landmarker/pose_landmarker_lite/float16/1/"
            "pose_landmarker_lite.task",
    "full": "https://storage.googleapis.com/mediapipe-models/pose_landmarker/pose_landmarker_full/float16/1/"
            "pose_landmarker_full.task",
}
# sha256 of those files (5,777,746 bytes for lite, as recorded by several independent projects);
# None = not verified. The full bundle's checksum could not be confirmed from here.
MEDIAPIPE_MODEL_SHA256: dict[str, str | None] = {
    "lite": "59929e1d1ee95287735ddd833b19cf4ac46d29bc7afddbbf6753c459690d574a",
    "full": None,
}
DOWNLOAD_TIMEOUT_S = 20.0
TASK_ENV = "RLE_POSE_TASK"  # the app's default .task file (rle-app --detector-model overrides it)


VERBOSE_ENV = "RLE_POSE_VERBOSE"  # 1: let mediapipe / LiteRT log to the terminal


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence file descriptor 2 (where LiteRT's C++ logs go: 38 "Sparsity tensors" warnings per
    model load) for the block, unless ``$RLE_POSE_VERBOSE`` is set. Python's own stderr is flushed
    first, so nothing of ours is lost."""
    if os.environ.get(VERBOSE_ENV):
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def pose_task_from_env() -> str | None:
    """``$RLE_POSE_TASK`` when set and non-empty, else None."""
    return os.environ.get(TASK_ENV) or None




def resolve_pose_task(model_path: str | os.PathLike | None, variant: str = "lite",
                      cache_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of a PoseLandmarker ``.task``: ``model_path``, else the cache, else a download.

    Raises ``DetectorUnavailable`` (one line, saying how to get the file) when none works.
    """
    if model_path is not None:
        if not Path(model_path).is_file():
            raise DetectorUnavailable(f"mediapipe model_path {model_path} does not exist")
        return Path(model_path)
    if variant not in MEDIAPIPE_MODEL_URLS:
        raise ValueError(f"mediapipe variant {variant!r} unknown; choose one of {sorted(MEDIAPIPE_MODEL_URLS)}")
    dest = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = dest / f"pose_landmarker_{variant}.task"
    if dest.is_file():
        return dest
    url = MEDIAPIPE_MODEL_URLS[variant]
    how = (f"put {url} at {dest} (or give --detector-model FILE.task or ${TASK_ENV}; offline: python -m "
           f"rle_app.build_pose_task --wheel download --out {dest}), or use --detector hog or full-frame")
    if not download:
        raise DetectorUnavailable(f"mediapipe: {dest} is missing; {how}")
    try:
        return download_file(url, dest, MEDIAPIPE_MODEL_SHA256[variant], timeout_s=DOWNLOAD_TIMEOUT_S)
    except DownloadError as err:
        why = str(err).split("; ")[0].replace(f"{url}: ", "").replace(url, "it")   # the URL is in ``how``
        raise DetectorUnavailable(f"mediapipe: {dest} is missing and {why}; {how}") from None


def landmarks_to_boxes(landmarks_norm: np.ndarray, image_hw: tuple[int, int], min_visibility: float = 0.5,
                       pad: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes from BlazePose's 33 landmarks (MediaPipe order: 1-6 eyes, 9-10 mouth).

    The landmarks stop at the eyes, so a head-top point, eye centre + 1.5 x (eye centre - mouth
    centre), is added; then the box spans the visible points, each side padded by ``pad`` of the
    box's width/height, clipped to the image.

    Args:
        landmarks_norm: (N, 33, 3) x, y normalised to [0, 1] by image width/height, visibility.
        image_hw: (H, W) of the image in pixels.
        min_visibility: landmarks below it are ignored (all are used if fewer than 2 pass).

    Returns:
        boxes_xyxy (N, 4) float32 image px; scores (N,) float32, mean visibility of points used.
    """
    h, w = image_hw
    lms = np.asarray(landmarks_norm, np.float64).reshape(-1, 33, 3)
    xy = lms[..., :2] * np.array([w, h], np.float64)
    vis = lms[..., 2]
    eyes, mouth = xy[:, 1:7].mean(axis=1), xy[:, 9:11].mean(axis=1)
    head_vis = np.minimum(vis[:, 1:7].min(axis=1), vis[:, 9:11].min(axis=1))
    xy = np.concatenate([xy, (eyes + 1.5 * (eyes - mouth))[:, None]], axis=1)
    vis = np.concatenate([vis, head_vis[:, None]], axis=1)
    use = vis >= min_visibility
    use[use.sum(axis=1) < 2] = True
    lo = np.where(use[..., None], xy, np.inf).min(axis=1)
    hi = np.where(use[..., None], xy, -np.inf).max(axis=1)
    margin = (hi - lo) * pad
    boxes = np.clip(np.concatenate([lo - margin, hi + margin], axis=1), 0.0, np.array([w, h, w, h], np.float64))
    scores = (vis * use).sum(axis=1) / use.sum(axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32)


class MediaPipeDetector:
    """MediaPipe Tasks PoseLandmarker as a person detector (boxes from its 33 landmarks).

    Args:
        model_path: a ``.task`` bundle; None = the cache or a one-time download (see module doc).
        variant: ``"lite"`` or ``"full"`` bundle name when downloading.
        num_poses: most people returned per frame (6: a group; the landmarker's own person
            detector, not this cap, limits what it finds: see the README).
        running_mode: ``"image"`` (independent frames) or ``"video"`` (tracks between frames,
            faster; needs increasing timestamps: a missing or non-increasing ``timestamp_ms`` is
            replaced by the previous one + 1 ms, or by a monotonic clock when None).
        min_detection_confidence: the landmarker's person-detection threshold.
        min_visibility, box_pad: see ``landmarks_to_boxes``.
        cache_dir, download: where to cache the bundle; whether a download may be tried. Without
            ``download`` each call only looks for the file (no network); with it, a failed download
            is tried once per detector, and later calls repeat its error at once.
    """

    name = "mediapipe"

    def __init__(self, model_path: str | os.PathLike | None = None, variant: str = "lite",
                 num_poses: int = 6, running_mode: str = "image", min_detection_confidence: float = 0.5,
                 min_visibility: float = 0.5, box_pad: float = 0.1,
                 cache_dir: str | os.PathLike | None = None, download: bool = True):
        if running_mode not in ("image", "video"):
            raise ValueError(f"mediapipe running_mode must be 'image' or 'video', got {running_mode!r}")
        if model_path is not None and not Path(model_path).is_file():
            raise DetectorUnavailable(f"mediapipe model_path {model_path} does not exist; "
                                      "build one with python -m rle_app.build_pose_task, or use --detector hog")
        self.model_path, self.variant, self.num_poses = model_path, variant, num_poses
        self.running_mode, self.min_detection_confidence = running_mode, min_detection_confidence
        self.min_visibility, self.box_pad = min_visibility, box_pad
        self.cache_dir, self.download = cache_dir, download
        self._landmarker = None
        self._download_error: DetectorUnavailable | None = None
        self._last_ts = -1

    def _load(self):
        if self._download_error is not None:
            raise self._download_error
        try:
            path = resolve_pose_task(self.model_path, self.variant, self.cache_dir, self.download)
        except DetectorUnavailable as err:
            if self.download:
                self._download_error = err
            raise
        from mediapipe.tasks.python import BaseOptions, vision  # heavy import, first call only

        mode = vision.RunningMode.VIDEO if self.running_mode == "video" else vision.RunningMode.IMAGE
        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)), running_mode=mode,
            num_poses=self.num_poses, min_pose_detection_confidence=self.min_detection_confidence)
        try:
            with quiet_native_stderr():
                return vision.PoseLandmarker.create_from_options(options)
        except (ValueError, RuntimeError) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DetectorUnavailable(f"mediapipe: cannot open {path} ({msg}); rebuild or re-download it") from None

    def __call__(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> Detections:
        first = self._landmarker is None
        if first:
            self._landmarker = self._load()
            # closed when this detector is collected; not at exit, where mediapipe's executor is gone
            self._finalizer = weakref.finalize(self, self._landmarker.close)
            self._finalizer.atexit = False
        import mediapipe as mp  # already imported by _load

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image_rgb, np.uint8))
        with quiet_native_stderr() if first else contextlib.nullcontext():   # LiteRT's first-run notes
            if self.running_mode == "video":
                ts = int(time.monotonic() * 1000) if timestamp_ms is None else int(timestamp_ms)
                self._last_ts = max(ts, self._last_ts + 1)
                result = self._landmarker.detect_for_video(image, self._last_ts)
            else:
                result = self._landmarker.detect(image)
        if not result.pose_landmarks:
            return Detections.empty()
        lms = np.array([[(p.x, p.y, p.visibility if p.visibility is not None else 1.0) for p in pose]
                        for pose in result.pose_landmarks], np.float64)
        boxes, scores = landmarks_to_boxes(lms, image_rgb.shape[:2], self.min_visibility, self.box_pad)
        return Detections(boxes, scores)

    def close(self) -> None:
        """Release the landmarker now (a later call reopens it). Call it (or use ``with``) when done:
        mediapipe 1.2 prints an ignored exception if a landmarker is still open at interpreter exit."""
        if self._landmarker is not None:
            with quiet_native_stderr():
                self._finalizer()
            self._landmarker = None

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
