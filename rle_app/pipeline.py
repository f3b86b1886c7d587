"""Frame -> person boxes -> Predictor -> poses, with per-stream tracking and smoothing. No UI, no I/O.

Frames are RGB uint8 (H, W, 3) in image pixels (x right, y down), as the camera really saw them:
a mirrored browser preview is undone by the UI before a frame gets here. Nothing is loaded at
import: ``PosePipeline`` takes models already loaded (``rle_app.loading``). Video files and the
JSON document are ``rle_app.media``; millimetres for the 3D view are ``rle_app.units3d``.

In a stream (a ``StreamState``: webcam session, video) the person detector is amortised by
tracking (``rle_app.tracking.KeypointTracker``): each person's next box comes from this frame's
confident keypoints, and the detector runs every ``detect_every`` frames, when a track loses
confidence, or when no one is tracked; mediapipe then runs in its VIDEO mode, one landmarker per
stream. ``StreamState(follow=None)`` detects every frame; so does the free ``full-frame`` detector.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.predictor import PosePrediction, Predictor
from rle_app.detect import DetectorUnavailable, build_detector
from rle_app.detections import Detections
from rle_app.errors import AppError
from rle_app.smoothing import KeypointSmoother
from rle_app.tracking import BoxTracker, KeypointTracker


@dataclass
class FramePoses:
    """People in one frame (N tracked people, K joints of the 2D model).

    boxes_xyxy (N, 4) px; track_ids (N,); ``pred`` the 2D PosePrediction (keypoints (N, K, 2) px,
    sigma (N, K, 2) px, covariance_px, confidence (N, K)); ``smoothed`` (N, K, 2) px Kalman-filtered
    keypoints (NaN until a joint is seen) or None; ``pred_3d`` the 3D model's PosePrediction on the
    same boxes (x, y px, z root-relative mm; its ``crop_wh_px`` (N, 2) the 3D crops' size) or None.
    """

    boxes_xyxy: np.ndarray
    track_ids: np.ndarray
    pred: PosePrediction
    smoothed: np.ndarray | None = None
    pred_3d: PosePrediction | None = None


@dataclass
class StreamState:
    """Per-stream (webcam session or video) memory: box trackers, keypoint smoother, frame clock.

    ``follow`` (None: detect every frame, ids from ``tracker``) moves boxes with the keypoints;
    ``detectors`` holds this stream's own video-mode detectors (mediapipe keeps state between frames).
    """

    tracker: BoxTracker = field(default_factory=BoxTracker)
    follow: KeypointTracker | None = field(default_factory=KeypointTracker)
    detectors: dict = field(default_factory=dict)
    smoother: KeypointSmoother = field(default_factory=KeypointSmoother)
    last_time_s: float | None = None
    fps: float | None = None
    frames: int = 0

    def tick(self, now_s: float) -> float | None:
        """Frame-rate estimate (exponential average of 1 / frame interval) after a frame at now_s."""
        if self.last_time_s is not None and now_s > self.last_time_s:
            rate = 1.0 / (now_s - self.last_time_s)
            self.fps = rate if self.fps is None else 0.8 * self.fps + 0.2 * rate
        self.last_time_s, self.frames = now_s, self.frames + 1
        return self.fps


class PosePipeline:
    """Detector + box tracker + RLE Predictor (+ 3D model) + keypoint smoother, one lock.

    Args:
        model: a 2D PoseModel; model_3d: an optional 3D PoseModel run on the same boxes.
        detector: default detector name (``DETECTORS`` key); detector_model: mediapipe ``.task``.
        checkpoint, checkpoint_3d: where the weights came from (shown as model info).
        notices: lines the UI shows (demo model, detector fallback).
        download: may a detector fetch its weights on first use (False: ``--no-download``).
        backend: the Predictors' inference backend (auto, torch, onnxruntime: ``models.backends``).
        max_people: the most people a frame may hold (``--max-people``; None: the detector's own
            cap, mediapipe 6): the highest-scoring detections are kept, and mediapipe is asked for
            that many poses (in VIDEO mode it searches for new people only while it tracks fewer).
    """

    def __init__(self, model, model_3d=None, detector: str = "full-frame", detector_model: str | None = None,
                 checkpoint: str | Path | None = None, checkpoint_3d: str | Path | None = None,
                 notices: tuple[str, ...] = (), download: bool = True, backend: str = "torch",
                 max_people: int | None = None):
        if max_people is not None and max_people < 1:
            raise ValueError(f"--max-people must be at least 1, got {max_people}")
        self.backend, self.max_people = backend, max_people
        self.predictor, self.config = Predictor(model, backend=backend), model.config
        self.predictor_3d = Predictor(model_3d, backend=backend) if model_3d is not None else None
        self.default_detector, self.detector_model = detector, detector_model
        self.checkpoint, self.checkpoint_3d, self.notices = checkpoint, checkpoint_3d, tuple(notices)
        self.download = download
        self._detectors: dict[str, object] = {}
        self._lock = threading.Lock()
        self._detect_lock = threading.Lock()       # detectors: one caller at a time
        self.frames_processed = 0
        self.last_input: np.ndarray | None = None  # the last frame the model saw (tests, debugging)

    def swap_model(self, model, checkpoint: str | Path | None, notices: tuple[str, ...] = ()) -> None:
        """Run ``model`` (2D) from now on (the UI's model picker); detectors shaped by the old model's
        input aspect are rebuilt on next use."""
        with self._lock:
            self.predictor, self.config = Predictor(model, backend=self.backend), model.config
            self.checkpoint, self.notices = checkpoint, tuple(notices)
            self._detectors.clear()

    def close(self, state: StreamState | None = None) -> None:
        """Release the detectors that hold native resources (mediapipe): the shared ones, or a
        stream's own with ``state``. A later call reopens them."""
        for det in (self._detectors if state is None else state.detectors).values():
            if hasattr(det, "close"):
                det.close()

    def detector(self, name: str | None):
        """The (cached) detector ``name`` (None: the default). ``full-frame`` is the largest centred
        box of the model's input aspect (a person centred in a webcam view, as the model was trained)."""
        name = name or self.default_detector
        if name not in self._detectors:
            opts = {"mediapipe": {"model_path": self.detector_model, "download": self.download, **self._poses_cap()},
                    "torchvision": {"download": self.download},
                    "full-frame": {"aspect_wh": self.config.input_hw[1] / self.config.input_hw[0]}}.get(name, {})
            self._detectors[name] = build_detector(name, **opts)
        return self._detectors[name]

    def _stream_detector(self, name: str, state: StreamState):
        """This stream's detector ``name``: mediapipe in VIDEO mode (its own landmarker), others shared."""
        if name != "mediapipe":
            return self.detector(name)
        if name not in state.detectors:
            state.detectors[name] = build_detector(name, model_path=self.detector_model, running_mode="video",
                                                   **self._poses_cap())
        return state.detectors[name]

    def _poses_cap(self) -> dict:
        """mediapipe's ``num_poses`` when ``max_people`` is set."""
        return {} if self.max_people is None else {"num_poses": self.max_people}

    def _detect(self, image: np.ndarray, name: str, state: StreamState | None, timestamp_ms: int | None):
        """Detections of ``image``, under the detector lock (a stream's look-ahead thread and other
        callers take turns); DetectorUnavailable becomes AppError (one line)."""
        with self._detect_lock:
            try:
                det = self.detector(name) if state is None else self._stream_detector(name, state)
                found = det(image, timestamp_ms)
            except DetectorUnavailable as err:
                raise AppError(str(err)) from None
        if self.max_people is not None and len(found.scores) > self.max_people:
            keep = np.sort(np.argsort(-np.asarray(found.scores), kind="stable")[:self.max_people])
            found = Detections(found.boxes_xyxy[keep], found.scores[keep])
        return found

    def _boxes(self, image: np.ndarray, name: str, state: StreamState | None, follow: KeypointTracker | None,
               timestamp_ms: int | None, found=None) -> tuple[np.ndarray, np.ndarray]:
        """This frame's (boxes (N, 4) px, track ids (N,)): from ``found`` (detections already made
        for this frame), else from the detector when the stream needs it, else from the keypoints."""
        if follow is not None:
            if found is None and follow.needs_detection():
                found = self._detect(image, name, state, timestamp_ms)
            tracks = follow.coast() if found is None else follow.detected(found.boxes_xyxy, found.scores)
            return tracks.boxes_xyxy, tracks.track_ids
        found = self._detect(image, name, state, timestamp_ms) if found is None else found
        if state is not None:
            tracks = state.tracker.update(found.boxes_xyxy, found.scores)
            return tracks.boxes_xyxy, tracks.track_ids
        return found.boxes_xyxy, np.arange(len(found.boxes_xyxy))

    def _poses(self, image: np.ndarray, boxes, ids, flip: bool, follow: KeypointTracker | None) -> FramePoses:
        """The models on this frame's boxes; the boxes then follow the keypoints (``follow``)."""
        pred = self.predictor(image, boxes, flip=flip)
        if follow is not None:
            follow.follow(ids, pred.keypoints, pred.confidence, image.shape[:2])
        poses = FramePoses(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(ids, np.int64), pred)
        if self.predictor_3d is not None:
            poses.pred_3d = self.predictor_3d(image, boxes, flip=flip)
        self.frames_processed += 1
        self.last_input = image
        return poses

    def _follow(self, name: str, state: StreamState | None) -> KeypointTracker | None:
        return state.follow if state is not None and name != "full-frame" else None

    def run_frame(self, image_rgb: np.ndarray, detector: str | None = None, flip: bool = False,
                  state: StreamState | None = None, smooth: bool = False,
                  timestamp_ms: int | None = None) -> FramePoses:
        """Poses of one RGB uint8 (H, W, 3) frame. ``state`` tracks boxes (following keypoints,
        detecting only when needed; module doc) and smooths keypoints when ``smooth``; without it
        boxes come straight from the detector. ``timestamp_ms``: the frame's time in a video (None:
        now), for detectors with a video mode."""
        image = np.ascontiguousarray(image_rgb, np.uint8)
        name = detector or self.default_detector
        follow = self._follow(name, state)
        with self._lock:
            boxes, ids = self._boxes(image, name, state, follow, timestamp_ms)
            poses = self._poses(image, boxes, ids, flip, follow)
        if state is not None and smooth:
            poses.smoothed = state.smoother.update(ids, poses.pred.keypoints, poses.pred.covariance_px)
        return poses

    def run_stream(self, frames: Iterable[np.ndarray], fps: float, detector: str | None = None, flip: bool = False,
                   state: StreamState | None = None, smooth: bool = True) -> Iterator[tuple[np.ndarray, FramePoses]]:
        """``run_frame`` over a stream of RGB frames (a video, a camera), yielding (frame, poses) in
        order, with the same results, but overlapped: one look-ahead thread reads frame i+1 and,
        when that frame will need the detector (every frame without tracking; a scheduled or
        still-lost detection with it), detects people in it while this thread runs the pose model
        on frame i. Frame i's timestamp is ``1000 * i / fps`` ms. The detector, the predictor and
        the frame source each stay on one thread at a time; the frames are read lazily (one ahead)."""
        state = StreamState() if state is None else state
        name = detector or self.default_detector
        follow = self._follow(name, state)
        source = iter(frames)

        def fetch(index: int, detect: bool):
            frame = next(source, None)
            if frame is None:
                return None
            image = np.ascontiguousarray(frame, np.uint8)
            found = self._detect(image, name, state, round(1000 * index / fps)) if detect else None
            return image, found

        try:
            with ThreadPoolExecutor(1, thread_name_prefix="rle-lookahead") as ahead:
                job, index = ahead.submit(fetch, 0, True), 0
                try:
                    while (got := job.result()) is not None:
                        image, found = got
                        with self._lock:
                            boxes, ids = self._boxes(image, name, state, follow, round(1000 * index / fps), found)
                            job = ahead.submit(fetch, index + 1, follow is None or follow.detection_certain())
                            poses = self._poses(image, boxes, ids, flip, follow)
                        if smooth:
                            poses.smoothed = state.smoother.update(ids, poses.pred.keypoints,
                                                                   poses.pred.covariance_px)
                        yield image, poses
                        index += 1
                finally:
                    job.cancel()          # a frame still being read ahead is waited for by the executor
        finally:
            if hasattr(source, "close"):
                source.close()            # e.g. iter_frames releases its capture
