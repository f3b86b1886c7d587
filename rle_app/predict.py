"""``rle-predict``: headless inference over an image, a folder of images, a video, or a camera.

    rle-predict SOURCE [--checkpoint NAME|URL|PATH] [--checkpoint-3d ...] [--detector auto|...]
                [--backend auto|torch|onnxruntime] [--out DIR] [--save-media/--no-save-media]
                [--format json|coco] [--track/--no-track] [--max-frames N] [--max-people N]
                [--device auto] [--threads N]

SOURCE is an image, a folder of images (not recursive), a video file, or a camera index (``0``).
Written into ``--out`` (created; default ``rle-predict-out``), each file atomically:

* the annotated media: ``<stem>_pose.jpg`` per image, ``<stem>_pose.webm`` (VP8, browser-playable)
  per video or camera;
* the poses: ``<stem>.json`` in the app's schema (``rle_app.media.document``: one record per frame
  or image, keypoints in image px), or with ``--format coco`` ``<stem>.coco.json``, COCO's results
  format (``image_id``, ``category_id`` 1, ``keypoints`` [x, y, confidence] * K, ``score``).

Frames are streamed (read, processed, written, dropped) and the JSON is written one record at a
time, so an hour of video runs in constant memory. A progress bar (with ETA when the length is
known) goes to stderr. A bad file in a folder is one line and the run goes on; the summary counts
them. Every other user error (missing source, unreadable video, camera that does not open, output
folder not writable, bad checkpoint) is one line, exit code 1. A camera runs until ``--max-frames``
or Ctrl-C.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def coco_results(record: dict, image_id: int) -> list[dict]:
    """One app-schema frame record -> COCO keypoint results: [x, y, confidence] * K, score = mean
    joint confidence (RLE's official score), category 1 (person); null coordinates become 0."""
    out = []
    for person in record["people"]:
        conf = [c if c is not None else 0.0 for c in person["confidence"]]
        flat = [v if v is not None else 0.0 for xy, c in zip(person["keypoints"], conf) for v in (*xy[:2], c)]
        out.append({"image_id": image_id, "category_id": 1, "keypoints": [round(v, 3) for v in flat],
                    "score": round(float(np.mean(conf)), 5) if conf else 0.0})
    return out


def read_image(path: Path) -> np.ndarray | None:
    """RGB uint8 (H, W, 3) of an image file, or None when it is not one (or unreadable)."""
    import cv2
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image(path: Path, image_rgb: np.ndarray) -> None:
    """Encode as JPEG and write atomically (``models.files``)."""
    import cv2
    from models.files import write_bytes_atomic
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    write_bytes_atomic(path, buf.tobytes(), fsync=False)


def prepare_out(out: Path) -> Path:
    """Create ``out`` and check it takes files; AppError (one line naming --out) when it cannot."""
    from rle_app.errors import AppError
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".rle-predict-{os.getpid()}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise AppError(f"--out {out}: cannot write there ({err.strerror or err}); choose another folder") from None
    return out


def is_stream_source(source: str) -> bool:
    """A video file or a camera index (frames in order, run overlapped), not an image or a folder."""
    path = Path(source)
    if not path.exists():
        return source.isdigit()
    return path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES


HEAVY_FORWARD_MS = 10.0   # a model slower than this per crop on all cores keeps them all in a video run


def stream_threads(cpus: int | None = None, forward_ms: float | None = None) -> int:
    """The pose model's CPU threads for a video or camera run. A light model (forward pass under
    ``HEAVY_FORWARD_MS`` per crop on all cores, or unknown) leaves one core to the look-ahead
    thread (reading and, when needed, detecting the next frame); a heavy one keeps them all, since
    it, not the detector, bounds the frame rate once tracking skips most detections. Measured on 2
    cores (README, "End-to-end FPS"): MobileNetV2 (~3.5 ms) runs faster on 1 thread on every path,
    ResNet-50 (~21 ms) as fast or faster on 2 (25.3 vs 19.2 FPS with tracking)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if forward_ms is not None and forward_ms >= HEAVY_FORWARD_MS:
        return max(1, cpus)
    return max(1, cpus - 1)


def fit_stream_threads(pipe, rebuild):
    """Time ``pipe``'s pose model (built on all cores), set torch's thread count to
    ``stream_threads`` for it, and return ``rebuild()`` (a pipeline built at that count: ONNX
    Runtime fixes its threads when the session is made) when the count changed, else ``pipe``."""
    import torch

    from models.backends import forward_time_s
    built = torch.get_num_threads()
    chosen = stream_threads(forward_ms=1000.0 * forward_time_s(pipe.predictor))
    torch.set_num_threads(chosen)
    if chosen == built:
        return pipe
    pipe.close()
    return rebuild()


def _echo_line(line: str) -> None:
    """One line to stderr, clear of a running progress bar."""
    from tqdm import tqdm
    tqdm.write(line, file=sys.stderr)


class Run:
    """One rle-predict run: the pipeline, output folder and options shared by every source kind."""

    def __init__(self, pipe, out: Path, detector: str, save_media: bool, fmt: str, track: bool,
                 conf: float = 0.3, echo=None):
        self.pipe, self.out, self.detector, self.save_media = pipe, out, detector, save_media
        self.fmt, self.track, self.conf = fmt, track, conf
        self.echo = echo or _echo_line
        self.last_state = None

    def writer(self, stem: str, fps: float | None = None):
        """The streamed JSON of this source: the app's document, or a COCO results array."""
        from rle_app.media import JsonArrayWriter, document
        if self.fmt == "coco":
            return JsonArrayWriter(self.out / f"{stem}.coco.json")
        head = document(self.pipe, [], self.detector, False, self.track, fps)
        return JsonArrayWriter(self.out / f"{stem}.json", head)

    def add(self, writer, record: dict, image_id: int) -> None:
        for item in (coco_results(record, image_id) if self.fmt == "coco" else [record]):
            writer.add(item)

    def images(self, paths: list[Path], stem: str) -> tuple[int, int]:
        """Each image alone (no tracking); returns (done, skipped). A bad file is one line."""
        from tqdm import tqdm

        from rle_app.draw import annotate
        from rle_app.media import frame_record
        writer, done, skipped = self.writer(stem), 0, 0
        try:
            for index, path in enumerate(tqdm(paths, unit="image", file=sys.stderr, disable=len(paths) < 2)):
                image = read_image(path)
                if image is None:
                    self.echo(f"{path.name}: not an image, or unreadable; skipped")
                    skipped += 1
                    continue
                poses = self.pipe.run_frame(image, self.detector)
                record = dict(frame_record(poses, index, 0.0), file=path.name)
                self.add(writer, record, int(path.stem) if path.stem.isdigit() else index)
                if self.save_media:
                    write_image(self.out / f"{path.stem}_pose.jpg", annotate(image, poses, self.pipe.config, self.conf))
                done += 1
        except BaseException:
            writer.abort()
            raise
        writer.close()
        return done, skipped

    def video(self, cap, fps: float, count: int, stem: str, max_frames: int | None) -> int:
        """Frames of ``cap`` streamed through one StreamState; returns the frame count."""
        from tqdm import tqdm

        from rle_app.media import VideoSink, iter_frames, stream_video
        from rle_app.errors import AppError
        from rle_app.pipeline import StreamState
        state = StreamState() if self.track else StreamState(follow=None)
        self.last_state = state                     # its tracker's counts (bench, tests)
        sink = VideoSink(self.out / f"{stem}_pose.webm", fps) if self.save_media else None
        writer, n = self.writer(stem, fps), 0
        total = min(count, max_frames) if count and max_frames else (count or max_frames or None)
        bar = tqdm(total=total, unit="frame", file=sys.stderr)
        try:
            for record, _ in stream_video(self.pipe, iter_frames(cap, max_frames), fps, sink, self.detector,
                                          smooth=self.track, conf_threshold=self.conf, state=state):
                self.add(writer, record, record["index"])
                n += 1
                bar.update()
        except KeyboardInterrupt:
            self.echo(f"{stem}: stopped after {n} frames")
        except BaseException:
            _abort(sink, writer)
            raise
        finally:
            bar.close()
            self.pipe.close(state)
        if n == 0:
            _abort(sink, writer)
            raise AppError(f"{stem}: no frame could be decoded (empty, or a codec OpenCV cannot read)")
        writer.close()
        if sink is not None:
            sink.close()
        return n


def _abort(*files) -> None:
    """Remove the temporary files of unfinished outputs (None: not opened)."""
    for f in files:
        if f is not None:
            f.abort()


def run_source(run: Run, source: str, max_frames: int | None = None) -> str:
    """Dispatch SOURCE (image, folder, video, camera index); returns the one-line summary."""
    from rle_app.errors import AppError
    from rle_app.media import open_camera, open_video
    path = Path(source)
    if not path.exists() and source.isdigit():
        cap, fps, _ = open_camera(int(source))
        n = run.video(cap, fps, 0, f"camera{source}", max_frames)
        return f"camera {source}: {n} frames -> {run.out}"
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        done, skipped = run.images(files, path.resolve().name or "images")
        return f"{path}: {done} images done, {skipped} skipped (not images or unreadable) -> {run.out}"
    if not path.is_file():
        raise AppError(f"SOURCE {source}: no such file, folder or camera index")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        done, _ = run.images([path], path.stem)
        if not done:
            raise AppError(f"{path.name}: not an image, or unreadable")
        return f"{path.name}: done -> {run.out}"
    cap, fps, count = open_video(path)
    n = run.video(cap, fps, count, path.stem, max_frames)
    return f"{path.name}: {n} frames -> {run.out}"


@click.command(help="Headless pose estimation (RLE) over an image, a folder of images, a video or a camera index; "
               "writes annotated media and JSON.")
@click.argument("source")
@click.option("--checkpoint", help="2D checkpoint: a zoo name (rle-app --list-models), an http(s) URL or a file; "
              "default: a cached zoo model, else the default downloaded once, offline the demo model.")
@click.option("--checkpoint-3d", help="3D checkpoint: rle-r50-h36m, a URL or a file.")
@click.option("--detector", default="auto", show_default=True,
              type=click.Choice(["auto", "torchvision", "mediapipe", "hog", "full-frame"]))
@click.option("--detector-model", type=click.Path(dir_okay=False), help="MediaPipe pose_landmarker .task file.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "torch", "onnxruntime"]),
              help="Inference backend of the pose model.")
@click.option("--out", "out_dir", default="rle-predict-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (created).")
@click.option("--save-media/--no-save-media", default=True, show_default=True,
              help="Write the annotated image / video.")
@click.option("--format", "fmt", default="json", show_default=True, type=click.Choice(["json", "coco"]),
              help="json: the app's schema; coco: COCO keypoint results.")
@click.option("--track/--no-track", default=True, show_default=True,
              help="Video and camera: boxes follow the keypoints, detection every few frames, smoothing.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop a video or camera after this many frames.")
@click.option("--max-people", type=click.IntRange(min=1), help="The most people per frame (default: the detector's "
              "own cap, mediapipe 6); the highest-scoring are kept.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--offline", is_flag=True, help="No downloads (also RLE_POSE_OFFLINE=1).")
@click.option("--threads", type=click.IntRange(min=1), help="The pose model's CPU threads (both backends); default: "
              "torch's choice for images; for a video or camera one less than the CPUs (the look-ahead thread), "
              "all of them for a model slower than 10 ms a crop.")
def main(source, checkpoint, checkpoint_3d, detector, detector_model, backend, out_dir, save_media, fmt, track,
         max_frames, max_people, device, offline, threads) -> None:
    from rle_app.errors import AppError
    if threads:
        import torch
        torch.set_num_threads(threads)
    fit_threads = not threads and is_stream_source(source)
    try:
        summary = _main(source, checkpoint, checkpoint_3d, detector, detector_model, backend, Path(out_dir),
                        save_media, fmt, track, max_frames, device, offline, fit_threads, max_people)
    except AppError as err:
        raise click.ClickException(str(err)) from None
    click.echo(summary)


def _main(source, checkpoint, checkpoint_3d, detector, detector_model, backend, out, save_media, fmt, track,
          max_frames, device, offline, fit_threads: bool = False, max_people: int | None = None) -> str:
    from rle_app.detect import resolve_detector
    from rle_app.errors import AppError
    from rle_app.loading import load_app_models, resolve_device
    from rle_app.pipeline import PosePipeline
    if not Path(source).exists() and not source.isdigit():
        raise AppError(f"SOURCE {source}: no such file, folder or camera index")
    if detector_model and not Path(detector_model).is_file():
        raise AppError(f"--detector-model {detector_model}: no such file")
    prepare_out(out)
    dev = resolve_device(device)
    model, model_3d, label, _, notices = load_app_models(checkpoint, checkpoint_3d, dev, offline)
    name, notice = resolve_detector(detector, detector_model, not offline)
    for line in [*notices, notice]:
        if line:
            click.echo(line, err=True)
    from models.export import ExportError
    from models.files import CacheNotWritable
    def build():
        try:
            return PosePipeline(model, model_3d, detector=name, detector_model=detector_model, checkpoint=label,
                                checkpoint_3d=checkpoint_3d, download=not offline, backend=backend,
                                max_people=max_people)
        except (ExportError, CacheNotWritable) as err:
            raise AppError(f"--backend {backend}: {err}") from None

    pipe = build()
    if fit_threads and dev.type == "cpu":    # a video or camera, no --threads: rle_app.predict.stream_threads
        pipe = fit_stream_threads(pipe, build)
    try:
        return run_source(Run(pipe, out, name, save_media, fmt, track), source, max_frames)
    finally:
        pipe.close()


if __name__ == "__main__":
    main()
