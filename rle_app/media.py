"""Image, video and JSON I/O: an image file decoded within a pixel cap, a video file through the
pipeline into an annotated ``.webm`` (within a length limit), and the downloadable JSON document
(model info, settings, the sigma caveat, one record per frame).

Frames are streamed (read, processed, written, dropped): ``iter_frames`` reads a file or camera,
``VideoSink`` and ``JsonArrayWriter`` write as they go, under a temporary name moved into place at
the end, so a long video runs in constant memory (``rle-predict``); ``process_video`` (the app)
also returns the whole document.

Keypoints in the JSON are image px (x right, y down); 3D keypoints are x, y px and z mm
root-relative; NaN/inf become null. Errors are ``AppError`` (one line naming the file).
"""
from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from models.files import atomic_path, write_bytes_atomic
from rle_app.draw import annotate
from rle_app.errors import AppError
from rle_app.pipeline import FramePoses, PosePipeline, StreamState

MAX_IMAGE_PIXELS = 40_000_000   # about 7300 x 5500: a 120 MB RGB array; larger uploads are refused
MAX_VIDEO_S = 120.0             # rle-app --max-video-s: frames after this are not read

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


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB, EXIF orientation applied.

    The size is read from the header first: an image over ``max_pixels`` is refused before any
    pixel is decoded. GIF (first frame), palette, grey, 16-bit and alpha images are converted
    (16-bit: the high byte; alpha dropped). Raises AppError (one line, the file's name only).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    name = Path(path).name
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise AppError(f"{name}: {w}x{h} px is over this app's limit of {max_pixels / 1e6:.0f} "
                               "megapixels; downscale it first")
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                arr = np.asarray(im).astype(np.int64)
                high = 255 if arr.max(initial=0) <= 255 else 65535
                grey = (np.clip(arr, 0, high) * 255 // high).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), np.uint8))
    except Image.DecompressionBombError:
        raise AppError(f"{name}: over this app's limit of {max_pixels / 1e6:.0f} megapixels; downscale it first") \
            from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        if isinstance(err, AppError):
            raise
        raise AppError(f"{name}: cannot read this image (PNG, JPEG, GIF, WebP, BMP or TIFF; damaged file?)") \
            from None


def write_png(out_dir: str | Path, stem: str, image_rgb: np.ndarray) -> str:
    """Write (H, W, 3) uint8 RGB to a new, uniquely named PNG in ``out_dir`` (atomically:
    ``models.files``): every output has its own file, so a download is never rewritten while read."""
    import cv2
    path = Path(out_dir) / f"{stem}-{uuid.uuid4().hex}.png"
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR))
    try:
        if not ok:
            raise OSError("encoding failed")
        write_bytes_atomic(path, buf.tobytes(), fsync=False)
    except OSError as err:
        raise AppError(f"{path.name}: could not write the annotated image ({err.strerror or err})") from None
    return str(path)


def eta_text(done: int, total: int, elapsed_s: float) -> str:
    """"ETA 42 s" from frames done of ``total`` after ``elapsed_s`` seconds ("" before the first)."""
    if done <= 0 or total <= done:
        return ""
    return f"ETA {math.ceil(elapsed_s / done * (total - done))} s"


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


class _AtomicFile:
    """A file written under a temporary name (``models.files.atomic_path``, keeping its extension)
    and moved into place by ``commit()``; ``abort()`` removes it. For writers kept open across calls."""

    def __init__(self, path: Path):
        self._stack = contextlib.ExitStack()
        self.tmp = self._stack.enter_context(atomic_path(path, fsync=False, suffix=f".part{path.suffix}"))

    def commit(self) -> None:
        self._stack.close()

    def abort(self) -> None:
        self._stack.__exit__(AppError, AppError("aborted"), None)   # the temporary file is removed


VIDEO_BITS_PER_PIXEL = 0.434   # libvpx's target: 4 Mbit/s at 640x480, 30 fps (README, "Dependencies")


class VideoSink:
    """Annotated frames -> a VP8 ``.webm`` (browser-playable), opened at the first frame, written
    under a temporary name and moved into place by ``close()`` (atomic); ``abort()`` removes it.

    Encoded by libvpx through PyAV with the real-time deadline at ``VIDEO_BITS_PER_PIXEL`` (4 Mbit/s
    at 640x480, 30 fps): measured ~7 ms a 640x480 frame against ~41 ms for OpenCV's VP8 writer, whose
    speed cannot be set (and 7.8 Mbit/s), 1.8 dB PSNR below it on a panned real photo
    (bench/bench_video_writer.py). Encoding runs on its own thread behind a queue of
    ``queue_frames`` frames, overlapping the pose work of the next frames; ``write`` blocks when the
    encoder is that far behind (constant memory). An encoder failure is raised by the next
    ``write`` or by ``close``. Frames given to ``write`` must not be changed afterwards."""

    def __init__(self, out_path: str | Path, fps: float, queue_frames: int = 4):
        self.path, self.fps, self._file = Path(out_path), fps, None
        self._container = self._stream = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _open(self, width: int, height: int) -> None:
        import av
        self._file = _AtomicFile(self.path)
        rate = Fraction(self.fps).limit_denominator(1001) if self.fps > 0 else Fraction(30)
        try:
            self._container = av.open(str(self._file.tmp), "w", format="webm")
            stream = self._container.add_stream("libvpx", rate=rate, options={"deadline": "realtime", "cpu-used": "8"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.bit_rate = max(500_000, round(VIDEO_BITS_PER_PIXEL * width * height * float(rate)))
            stream.codec_context.thread_count = 1       # the encoder has its own thread beside the pipeline's
        except (OSError, av.FFmpegError) as err:
            self._close_container()
            self._file.abort()
            raise AppError(f"{self.path}: cannot write this video ({err}); is the folder writable?") from None
        self._stream = stream
        self._thread = threading.Thread(target=self._encode, name="rle-video-encoder", daemon=True)
        self._thread.start()

    def write(self, image_rgb: np.ndarray) -> None:
        if self._container is None:
            height, width = image_rgb.shape[:2]
            self._open(width - width % 2, height - height % 2)   # 4:2:0 wants even sides: drop an odd last row/column
        self._raise_error()
        self._queue.put(image_rgb)

    def _encode(self) -> None:
        import av
        h, w = self._stream.height, self._stream.width
        while (frame := self._queue.get()) is not None:
            if self._error is None:          # after a failure keep draining, so write() never blocks
                try:
                    picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
                    if picture.width != w or picture.height != h:
                        raise ValueError(f"frame {frame.shape[1]}x{frame.shape[0]} px, the video is {w}x{h}")
                    self._container.mux(self._stream.encode(picture))
                except Exception as err:     # noqa: BLE001 - handed to the writing thread
                    self._error = err

    def _raise_error(self) -> None:
        if self._error is not None:
            raise AppError(f"{self.path}: the video encoder failed ({self._error})")

    def _close_container(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None

    def _stop(self, flush: bool) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if flush and self._error is None:
            try:
                self._container.mux(self._stream.encode(None))    # the frames the encoder still holds
                self._container.close()
            except Exception as err:         # noqa: BLE001
                self._error = err
        self._close_container()

    def close(self) -> None:
        if self._container is not None:
            self._stop(flush=True)
            if self._error is not None:
                self._file.abort()
                self._raise_error()
            self._file.commit()

    def abort(self) -> None:
        if self._container is not None:
            self._stop(flush=False)
            self._file.abort()


class JsonArrayWriter:
    """A JSON document streamed to disk: ``head`` (a dict) with its list ``key`` written one item at a
    time (``add``), or a bare JSON array when ``head`` is None (COCO results). Written under a
    temporary name and moved into place by ``close()``; nothing but the open file is kept."""

    def __init__(self, path: str | Path, head: dict | None = None, key: str = "frames"):
        self.path, self.count = Path(path), 0
        try:
            self._atomic = _AtomicFile(self.path)
            self._file = open(self._atomic.tmp, "w", encoding="utf-8")
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
        self._atomic.commit()

    def abort(self) -> None:
        self._file.close()
        self._atomic.abort()


def stream_video(pipe: PosePipeline, frames: Iterable[np.ndarray], fps: float, sink: VideoSink | None,
                 detector: str | None = None, flip: bool = False, smooth: bool = True, conf_threshold: float = 0.3,
                 ellipse_scale: float = 1.0, state: StreamState | None = None) -> Iterator[tuple[dict, FramePoses]]:
    """Each frame through the pipeline (one ``StreamState``: tracking, smoothing; overlapped by
    ``PosePipeline.run_stream``) and, with a ``sink``, drawn into it; yields (JSON record, poses)
    per frame, keeping nothing."""
    for index, (rgb, poses) in enumerate(pipe.run_stream(frames, fps, detector, flip, state, smooth)):
        if sink is not None:
            sink.write(annotate(rgb, poses, pipe.config, conf_threshold, ellipse_scale))
        yield frame_record(poses, index, index / fps), poses


def process_video(pipe: PosePipeline, path: str | Path, out_path: str | Path, detector: str | None = None,
                  flip: bool = False, smooth: bool = True, conf_threshold: float = 0.3, ellipse_scale: float = 1.0,
                  progress: Callable[[int, int], None] | None = None, max_frames: int | None = None,
                  max_seconds: float | None = None) -> dict:
    """Annotate the frames of ``path`` into a VP8 ``.webm`` at ``out_path`` (browser-playable):
    all of them, or the first ``max_frames`` / the first ``max_seconds`` of video.

    Returns the JSON document (one record per frame, raw and smoothed keypoints; ``duration_s``
    the clip's length as its header says, ``truncated`` True when frames were left unread).
    ``progress(i, n)`` is called after each frame, ``n`` the frames that will be read. Raises
    AppError for an unreadable video or one without frames.
    """
    cap, fps, count = open_video(path)
    if max_seconds is not None:
        limit = max(1, int(max_seconds * fps))
        max_frames = limit if max_frames is None else min(max_frames, limit)
    planned = count if max_frames is None else min(count, max_frames) if count > 0 else max_frames
    sink, frames = VideoSink(out_path, fps), []
    try:
        for record, _ in stream_video(pipe, iter_frames(cap, max_frames), fps, sink, detector, flip, smooth,
                                      conf_threshold, ellipse_scale):
            frames.append(record)
            if progress is not None:
                progress(len(frames), max(planned, len(frames)))
    except BaseException:
        sink.abort()
        raise
    sink.close()
    # frames left unread: the limit was reached before the end the header announces (or no count)
    truncated = max_frames is not None and len(frames) >= max_frames and (count <= 0 or count > len(frames))
    if not frames:
        raise AppError(f"{Path(path).name}: the video has no frames")
    doc = document(pipe, frames, detector or pipe.default_detector, flip, smooth, fps)
    doc.update(duration_s=round(count / fps, 3) if count > 0 else None, truncated=bool(truncated))
    return doc
