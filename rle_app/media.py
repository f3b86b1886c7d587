"""Video and JSON I/O: a video file through the pipeline into an annotated ``.webm``, and the
downloadable JSON document (model info, settings, the sigma caveat, one record per frame).

Frames are streamed (read, processed, written, dropped): ``iter_frames`` reads a file or camera,
``VideoSink`` and ``JsonArrayWriter`` write as they go, under a temporary name moved into place at
the end, so a long video runs in constant memory (``rle-predict``); ``process_video`` (the app)
also returns the whole document.

Keypoints in the JSON are image px (x right, y down); 3D keypoints are x, y px and z mm
root-relative; NaN/inf become null. Errors are ``AppError`` (one line naming the file).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

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


def open_camera(index: int):
    """An opened camera ``index`` as (cv2.VideoCapture, fps, 0 frames known); AppError when it does not open."""
    import cv2
    cap = cv2.VideoCapture(int(index))
    if not cap.isOpened():
        cap.release()
        raise AppError(f"camera {index}: cannot open it (no such device, or in use by another program)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, (fps if 0 < fps < 1000 else 30.0), 0


def iter_frames(cap, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 (H, W, 3) frames read one at a time (none kept); releases ``cap`` when done."""
    import cv2
    try:
        n = 0
        while max_frames is None or n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            n += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def _part(path: Path) -> Path:
    """The temporary name a file is written under before ``os.replace`` (same folder and suffix)."""
    return path.with_name(f".{path.stem}.part{path.suffix}")


class VideoSink:
    """Annotated frames -> a VP8 ``.webm`` (browser-playable), opened at the first frame, written
    under a temporary name and moved into place by ``close()`` (atomic); ``abort()`` removes it."""

    def __init__(self, out_path: str | Path, fps: float):
        self.path, self.fps, self._writer = Path(out_path), fps, None

    def write(self, image_rgb: np.ndarray) -> None:
        import cv2
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(_part(self.path)), cv2.VideoWriter_fourcc(*"VP80"), self.fps,
                                           image_rgb.shape[1::-1])
            if not self._writer.isOpened():
                raise AppError(f"{self.path}: cannot write this video (folder not writable?)")
        self._writer.write(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            os.replace(_part(self.path), self.path)
            self._writer = None

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        _part(self.path).unlink(missing_ok=True)


class JsonArrayWriter:
    """A JSON document streamed to disk: ``head`` (a dict) with its list ``key`` written one item at a
    time (``add``), or a bare JSON array when ``head`` is None (COCO results). Written under a
    temporary name and moved into place by ``close()``; nothing but the open file is kept."""

    def __init__(self, path: str | Path, head: dict | None = None, key: str = "frames"):
        self.path, self.count = Path(path), 0
        try:
            self._file = open(_part(self.path), "w", encoding="utf-8")
        except OSError as err:
            raise AppError(f"{self.path}: cannot write here ({err.strerror})") from None
        rest = {k: v for k, v in (head or {}).items() if k != key}
        opening = "[" if head is None else json.dumps(rest)[:-1] + (", " if rest else "") + f"{json.dumps(key)}: ["
        self._closing = "]" if head is None else "]}"
        self._file.write(opening)

    def add(self, item) -> None:
        self._file.write(("," if self.count else "") + "\n" + json.dumps(item))
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.write("\n" + self._closing + "\n")
        self._file.close()
        os.replace(_part(self.path), self.path)

    def abort(self) -> None:
        self._file.close()
        _part(self.path).unlink(missing_ok=True)


def stream_video(pipe: PosePipeline, frames: Iterable[np.ndarray], fps: float, sink: VideoSink | None,
                 detector: str | None = None, flip: bool = False, smooth: bool = True, conf_threshold: float = 0.3,
                 ellipse_scale: float = 1.0, state: StreamState | None = None) -> Iterator[tuple[dict, FramePoses]]:
    """Each frame through the pipeline (one ``StreamState``: tracking, smoothing) and, with a
    ``sink``, drawn into it; yields (JSON record, poses) per frame, keeping nothing."""
    state = StreamState() if state is None else state
    for index, rgb in enumerate(frames):
        poses = pipe.run_frame(rgb, detector, flip, state, smooth, timestamp_ms=round(1000 * index / fps))
        if sink is not None:
            sink.write(annotate(rgb, poses, pipe.config, conf_threshold, ellipse_scale))
        yield frame_record(poses, index, index / fps), poses


def process_video(pipe: PosePipeline, path: str | Path, out_path: str | Path, detector: str | None = None,
                  flip: bool = False, smooth: bool = True, conf_threshold: float = 0.3, ellipse_scale: float = 1.0,
                  progress: Callable[[int, int], None] | None = None, max_frames: int | None = None) -> dict:
    """Annotate every frame of ``path`` into a VP8 ``.webm`` at ``out_path`` (browser-playable).

    Returns the JSON document (one record per frame, raw and smoothed keypoints). ``progress(i, n)``
    is called after each frame. Raises AppError for an unreadable video or one without frames.
    """
    cap, fps, count = open_video(path)
    sink, frames = VideoSink(out_path, fps), []
    try:
        for record, _ in stream_video(pipe, iter_frames(cap, max_frames), fps, sink, detector, flip, smooth,
                                      conf_threshold, ellipse_scale):
            frames.append(record)
            if progress is not None:
                progress(len(frames), max(count, len(frames)))
    except BaseException:
        sink.abort()
        raise
    sink.close()
    if not frames:
        raise AppError(f"{Path(path).name}: the video has no frames")
    return document(pipe, frames, detector or pipe.default_detector, flip, smooth, fps)
