"""Frame -> person boxes -> Predictor -> poses; the video loop; the JSON document. No UI here.

Frames are RGB uint8 (H, W, 3) in image pixels (x right, y down), as the camera really saw them:
a mirrored browser preview is undone by the UI before a frame gets here. Nothing is loaded at
import: ``load_pose_models`` and ``PosePipeline`` do the work when the app starts.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch

from models.checkpoint import CheckpointError, load_model
from models.geometry import boxes_to_center_scale
from models.predictor import PosePrediction, Predictor
from rle_app.detect import DETECTORS, DetectorUnavailable, build_detector, resolve_pose_task
from rle_app.draw import draw_poses
from rle_app.smoothing import KeypointSmoother
from rle_app.tracking import BoxTracker

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
DEMO_CHECKPOINT = ASSETS_DIR / "demo-coco.pth"
DEMO_NOTICE = ("Demo model: a small MobileNetV3 trained only on the project's generated figures "
               "(assets/README.md), not on real people. For real use: rle-app --checkpoint coco-laplace-rle.pth")
SIGMA_NOTE = ("sigma: per-coordinate scale of RLE's learned residual distribution (px; mm for z), "
              "not a calibrated standard deviation")
ELLIPSE_LEVEL = 0.6827  # nominal Gaussian mass inside a drawn ellipse (draw.py's convention)


class AppError(RuntimeError):
    """Anything the user can fix (bad file, missing model, no frames); the message is one line."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AppError(f"--device {name}: not a torch device (auto, cpu, cuda, cuda:N)") from None


def _load(path: str | Path, dims: int, option: str, device: torch.device):
    if not Path(path).is_file():
        raise AppError(f"{option} {path}: no such file")
    try:
        model = load_model(path, device)
    except CheckpointError as err:
        raise AppError(f"{option}: {err}") from None
    if model.config.dims != dims:
        other = "--checkpoint-3d" if model.config.dims == 3 else "--checkpoint"
        raise AppError(f"{option} {path}: a {model.config.dims}D model; pass it as {other}")
    return model


def load_pose_models(checkpoint: str | None, checkpoint_3d: str | None, device: torch.device):
    """The 2D model (``checkpoint`` or the demo model in assets/) and the optional 3D model.

    Returns (model_2d, model_3d or None, path of the 2D weights). Raises ``AppError`` (one line)
    for a missing file, an unreadable checkpoint, or a 2D/3D mix-up.
    """
    path = Path(checkpoint) if checkpoint else DEMO_CHECKPOINT
    model = _load(path, 2, "--checkpoint", device)
    model_3d = _load(checkpoint_3d, 3, "--checkpoint-3d", device) if checkpoint_3d else None
    return model, model_3d, path


def resolve_detector(name: str, detector_model: str | None = None, download: bool = True) -> tuple[str, str]:
    """``auto`` -> ``mediapipe`` when its ``.task`` is found or downloaded, else ``full-frame``.

    Returns (detector name, notice): the notice is "" or one line saying how to get mediapipe.
    """
    if name != "auto":
        if name not in DETECTORS:
            raise AppError(f"--detector {name}: choose auto, {', '.join(DETECTORS)}")
        return name, ""
    try:
        resolve_pose_task(detector_model, download=download)
        return "mediapipe", ""
    except DetectorUnavailable as err:
        return "full-frame", f"Detector: full frame (one person filling the view), because {err}"


@dataclass
class FramePoses:
    """People in one frame (N tracked people, K joints of the 2D model).

    boxes_xyxy (N, 4) px; track_ids (N,); ``pred`` the 2D PosePrediction (keypoints (N, K, 2) px,
    sigma (N, K, 2) px, covariance_px, confidence (N, K)); ``smoothed`` (N, K, 2) px Kalman-filtered
    keypoints (NaN until a joint is seen) or None; ``pred_3d`` the 3D model's PosePrediction on the
    same boxes (x, y px, z root-relative mm) or None; ``crop_px`` (N,) side of each 3D crop in px.
    """

    boxes_xyxy: np.ndarray
    track_ids: np.ndarray
    pred: PosePrediction
    smoothed: np.ndarray | None = None
    pred_3d: PosePrediction | None = None
    crop_px: np.ndarray | None = None


@dataclass
class StreamState:
    """Per-stream (webcam session or video) memory: box tracker, keypoint smoother, frame clock."""

    tracker: BoxTracker = field(default_factory=BoxTracker)
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


def joints_mm(pred_3d: PosePrediction, index: int, crop_px: float, depth_range_mm: float, root: int) -> np.ndarray:
    """(K, 3) root-relative joints in mm of person ``index`` (camera frame: x right, y down, z away).

    x, y are weak-perspective: the 3D crop of side ``crop_px`` spans ``depth_range_mm`` at the
    root's depth (the reference's 2000 mm 3D box), so mm = (px - root px) * depth_range_mm / crop_px.
    """
    kpts = np.asarray(pred_3d.keypoints[index], np.float64)
    xy_mm = (kpts[:, :2] - kpts[root, :2]) * depth_range_mm / max(float(crop_px), 1e-6)
    return np.concatenate([xy_mm, kpts[:, 2:3]], axis=1)


def sigma_mm(pred_3d: PosePrediction, index: int, crop_px: float, depth_range_mm: float) -> np.ndarray:
    """(K, 3) sigma of person ``index`` in mm, x/y scaled as in ``joints_mm``."""
    sig = np.asarray(pred_3d.sigma[index], np.float64)
    return np.concatenate([sig[:, :2] * depth_range_mm / max(float(crop_px), 1e-6), sig[:, 2:3]], axis=1)


class PosePipeline:
    """Detector + box tracker + RLE Predictor (+ 3D model) + keypoint smoother, one lock.

    Args:
        model: 2D RLEPoseModel; model_3d: optional 3D RLEPoseModel run on the same boxes.
        detector: default detector name (``DETECTORS`` key); detector_model: mediapipe ``.task``.
        checkpoint, checkpoint_3d: where the weights came from (shown as model info).
        notices: lines the UI shows (demo model, detector fallback).
    """

    def __init__(self, model, model_3d=None, detector: str = "full-frame", detector_model: str | None = None,
                 checkpoint: str | Path | None = None, checkpoint_3d: str | Path | None = None,
                 notices: tuple[str, ...] = ()):
        self.predictor, self.config = Predictor(model), model.config
        self.predictor_3d = Predictor(model_3d) if model_3d is not None else None
        self.default_detector, self.detector_model = detector, detector_model
        self.checkpoint, self.checkpoint_3d, self.notices = checkpoint, checkpoint_3d, tuple(notices)
        self._detectors: dict[str, object] = {}
        self._lock = threading.Lock()
        self.frames_processed = 0
        self.last_input: np.ndarray | None = None  # the last frame the model saw (tests, debugging)

    def detector(self, name: str | None):
        """The (cached) detector ``name`` (None: the default). ``full-frame`` is the largest centred
        box of the model's input aspect (a person centred in a webcam view, as the model was trained)."""
        name = name or self.default_detector
        if name not in self._detectors:
            opts = {"mediapipe": {"model_path": self.detector_model},
                    "full-frame": {"aspect_wh": self.config.input_hw[1] / self.config.input_hw[0]}}.get(name, {})
            self._detectors[name] = build_detector(name, **opts)
        return self._detectors[name]

    def run_frame(self, image_rgb: np.ndarray, detector: str | None = None, flip: bool = False,
                  state: StreamState | None = None, smooth: bool = False) -> FramePoses:
        """Poses of one RGB uint8 (H, W, 3) frame. ``state`` tracks boxes (and smooths keypoints
        when ``smooth``) across frames; without it boxes come straight from the detector."""
        image = np.ascontiguousarray(image_rgb, np.uint8)
        with self._lock:
            try:
                found = self.detector(detector)(image)
            except DetectorUnavailable as err:
                raise AppError(str(err)) from None
            if state is not None:
                tracks = state.tracker.update(found.boxes_xyxy, found.scores)
                boxes, ids = tracks.boxes_xyxy, tracks.track_ids
            else:
                boxes, ids = found.boxes_xyxy, np.arange(len(found.boxes_xyxy))
            self.predictor.flip = flip
            pred = self.predictor(image, boxes)
            poses = FramePoses(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(ids, np.int64), pred)
            if self.predictor_3d is not None:
                self.predictor_3d.flip = flip
                poses.pred_3d = self.predictor_3d(image, boxes)
                _, size = boxes_to_center_scale(np.asarray(boxes, np.float64).reshape(-1, 4), 1.0,
                                                self.predictor_3d.config.box_factor)
                poses.crop_px = np.asarray(size, np.float64).reshape(-1, 2).max(axis=1)
            self.frames_processed += 1
            self.last_input = image
        if state is not None and smooth:
            poses.smoothed = state.smoother.update(ids, pred.keypoints, pred.covariance_px)
        return poses


def annotate(image_rgb: np.ndarray, poses: FramePoses, config, conf_threshold: float = 0.3,
             ellipse_scale: float = 1.0, fps: float | None = None) -> np.ndarray:
    """Pure drawing: boxes, skeleton (smoothed when present), ellipses of the predicted covariance
    (nominal ``ELLIPSE_LEVEL``) -> a new (H, W, 3) uint8 RGB image."""
    kpts = poses.smoothed if poses.smoothed is not None else poses.pred.keypoints
    return draw_poses(image_rgb, kpts, poses.pred.confidence, poses.pred.covariance_px, config.edges,
                      boxes_xyxy=poses.boxes_xyxy, conf_threshold=conf_threshold, ellipse_scale=ellipse_scale,
                      ellipse_level=ELLIPSE_LEVEL, fps=fps, labels=[f"#{i}" for i in poses.track_ids],
                      joint_names=config.joint_names)


def _list(array) -> list:
    """numpy -> nested lists of rounded floats, NaN/inf -> None (valid JSON)."""
    return [_list(a) for a in array] if np.ndim(array) else (
        round(float(array), 3) if math.isfinite(float(array)) else None)


def frame_record(poses: FramePoses, index: int, time_s: float) -> dict:
    """One frame of the JSON document: per person box, keypoints, sigma, confidence (+ smoothed, 3D)."""
    people = []
    for n in range(len(poses.boxes_xyxy)):
        person = {"track_id": int(poses.track_ids[n]), "box": _list(poses.boxes_xyxy[n]),
                  "keypoints": _list(poses.pred.keypoints[n]), "sigma": _list(poses.pred.sigma[n]),
                  "confidence": _list(poses.pred.confidence[n])}
        if poses.smoothed is not None:
            person["keypoints_smoothed"] = _list(poses.smoothed[n])
        if poses.pred_3d is not None:
            person.update(keypoints_3d=_list(poses.pred_3d.keypoints[n]), sigma_3d=_list(poses.pred_3d.sigma[n]),
                          confidence_3d=_list(poses.pred_3d.confidence[n]))
        people.append(person)
    return {"index": index, "time_s": round(time_s, 4), "people": people}


def model_info(config, checkpoint: str | Path | None) -> dict:
    """What the JSON and the UI say about a model: backbone, dims, input size, joints, provenance."""
    return {"backbone": config.backbone, "dims": config.dims, "input_hw": list(config.input_hw),
            "joint_names": list(config.joint_names), "source": config.source,
            "checkpoint": Path(checkpoint).name if checkpoint else None}


def document(pipe: PosePipeline, frames: list[dict], detector: str, flip: bool, smooth: bool,
             fps: float | None = None) -> dict:
    """The downloadable JSON: model(s), detector, settings, the sigma caveat, and ``frames``."""
    info_3d = model_info(pipe.predictor_3d.config, pipe.checkpoint_3d) if pipe.predictor_3d else None
    return {"model": model_info(pipe.config, pipe.checkpoint), "model_3d": info_3d, "detector": detector,
            "flip_test": bool(flip), "smoothing": bool(smooth), "fps": fps, "sigma_note": SIGMA_NOTE,
            "units": {"keypoints": "image px (x right, y down)", "keypoints_3d": "x, y px; z mm root-relative"},
            "frames": frames}


def open_video(path: str | Path):
    """An opened cv2.VideoCapture, its frame rate and frame count; AppError when unreadable or empty."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise AppError(f"{Path(path).name}: cannot read this video (unknown format or damaged file)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps < 1000 else 25.0
    return cap, fps, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))


def process_video(pipe: PosePipeline, path: str | Path, out_path: str | Path, detector: str | None = None,
                  flip: bool = False, smooth: bool = True, conf_threshold: float = 0.3, ellipse_scale: float = 1.0,
                  progress: Callable[[int, int], None] | None = None, max_frames: int | None = None) -> dict:
    """Annotate every frame of ``path`` into a VP8 ``.webm`` at ``out_path`` (browser-playable).

    Returns the JSON document (one record per frame, raw and smoothed keypoints). ``progress(i, n)``
    is called after each frame. Raises AppError for an unreadable video or one without frames.
    """
    import cv2
    cap, fps, count = open_video(path)
    state, frames, writer = StreamState(), [], None
    try:
        while max_frames is None or len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            poses = pipe.run_frame(rgb, detector, flip, state, smooth)
            if writer is None:
                writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"VP80"), fps, rgb.shape[1::-1])
            drawn = annotate(rgb, poses, pipe.config, conf_threshold, ellipse_scale)
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            frames.append(frame_record(poses, len(frames), len(frames) / fps))
            if progress is not None:
                progress(len(frames), max(count, len(frames)))
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if not frames:
        raise AppError(f"{Path(path).name}: the video has no frames")
    return document(pipe, frames, detector or pipe.default_detector, flip, smooth, fps)
