"""Video and JSON I/O: a video file through the pipeline into an annotated ``.webm``, and the
downloadable JSON document (model info, settings, the sigma caveat, one record per frame).

Keypoints in the JSON are image px (x right, y down); 3D keypoints are x, y px and z mm
root-relative; NaN/inf become null. Errors are ``AppError`` (one line naming the file).
"""
from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Callable

import numpy as np

from rle_app.draw import annotate
from rle_app.errors import AppError
from rle_app.pipeline import FramePoses, PosePipeline, StreamState

SIGMA_NOTE = ("sigma: per-coordinate scale of RLE's learned residual distribution (px; mm for z), "
              "not a calibrated standard deviation")


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
