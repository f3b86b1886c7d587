"""``build_demo(pipeline)``: the Gradio layout and its events. Handlers are thin: they call
``rle_app.pipeline`` / ``rle_app.media`` and turn their one-line ``AppError`` into ``gr.Error``
(never a traceback).

Webcam streaming (gradio 6): the browser captures a frame every ``stream_every`` seconds but sends
none while the previous one is still being processed (the frontend's stream state is "waiting"),
so slow inference drops frames instead of queueing them; ``concurrency_limit=1`` runs one stream
at a time. ``trigger_mode`` stays at the stream default: with "always_last" gradio 6.31 processed
the first frame only (checked in a real browser). ``time_limit`` (None locally, set on the Space)
ends a stream so others get a turn.

Left stays left: with ``webcam_options.mirror`` True (gradio's default, kept for a natural preview)
the browser draws each captured frame mirrored before sending it. The stream handler flips it
back, so the model sees the real frame and ``left_wrist`` is the person's left wrist; the annotated
output shows the real (unmirrored) frame. ``predict_frame``, the non-streaming twin for
gradio_client, takes real frames and flips nothing.

Resources: image inputs arrive as file paths (gradio decodes nothing) and ``media.read_image``
refuses one over the pixel cap before decoding it; the image tab's ``gr.State`` keeps the file
path and the poses, not pixels, and expires after ``STATE_TTL_S``; every output (annotated image,
video, JSON) is a new uniquely named file in a folder inside gradio's cache, deleted by
``delete_cache`` after ``cache_expiry_s`` and when the server stops (the folder at exit).
"""
from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from models import zoo
from models.files import write_json_atomic
from rle_app import loading
from rle_app.detect import DETECTORS
from rle_app.draw import ELLIPSE_LEVEL, annotate, figure_3d, hidden_joints, hidden_notice
from rle_app.errors import AppError
from rle_app.loading import ASSETS_DIR, DEMO
from rle_app.media import (MAX_IMAGE_PIXELS, MAX_VIDEO_S, SIGMA_NOTE, document, eta_text, frame_record,
                           model_info, process_video, read_image, write_png)
from rle_app.pipeline import FramePoses, PosePipeline, StreamState
from rle_app.units3d import person_mm

MIRROR_PREVIEW = True        # gradio mirrors the webcam preview AND the frames it sends
STREAM_EVERY_S = 0.05        # capture at most 20 frames/s; frames are skipped while one is pending
STATE_TTL_S = 1800           # a session's kept (image path, poses) is dropped after 30 min
CACHE_EXPIRY_S = 3600        # rle-app --cache-expiry-s: uploads and outputs older than this are deleted


def no_person(detector: str) -> str:
    """The warning when ``detector`` found nobody; it suggests the other detectors."""
    others = ", ".join(d for d in DETECTORS if d != detector)
    return f"No person found by the {detector} detector: try another one ({others}) or a frame with a whole person"


def plain(message: str) -> str:
    """A message the browser shows whole: Gradio renders toasts as HTML, where ``<urlopen error x>``
    is a tag and everything after it vanished. ``<text>`` -> ``text``; a lone ``<`` -> ``‹``."""
    return re.sub(r"<([^<>]*)>", r"\1", message).replace("<", "\u2039")


def user_error(err: Exception) -> gr.Error:
    """The one-line gr.Error for an AppError: whole, no traceback in the page or the terminal
    (``print_exception=False``: a user's mistake is not a server fault)."""
    return gr.Error(plain(str(err)), duration=None, print_exception=False)

VIDEO_NOTE = ("A browser cannot preview some uploads (e.g. MPEG-4 Part 2 .mp4 from older cameras) and Gradio "
              "then says \"Video not playable\": that is the preview only. *Process video* still reads the "
              "file, and the annotated result is a .webm every browser plays.")


def user_errors(fn):
    """Run a handler; an AppError (or a bad input) becomes a one-line gr.Error in the UI."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AppError as err:
            raise user_error(err) from None
    return wrapper


def _write_json(out_dir: Path, stem: str, doc: dict) -> str:
    """``doc`` in a new uniquely named file in ``out_dir``, written atomically (``models.files``)."""
    return str(write_json_atomic(out_dir / f"{stem}-{uuid.uuid4().hex}.json", doc))


MODEL_NOTICES = ("Demo model", "Could not fetch the default model", "The default model did not load")


def model_choices(current: str | None) -> list[tuple[str, str]]:
    """(label, value) pairs of the picker: the zoo's 2D models (cached ones marked), the demo model,
    and ``current`` when it is a file or URL outside the zoo."""
    choices = [(f"{name} ({zoo.ZOO[name].accuracy}){' - cached' if zoo.is_cached(name) else ''}", name)
               for name in zoo.names(2)]
    choices.append(("demo (generated figures only, offline)", DEMO))
    if current and current not in zoo.ZOO and current != DEMO:
        choices.insert(0, (Path(str(current)).name, str(current)))
    return choices


class Handlers:
    """Event functions of one app (one pipeline, one output folder for videos and JSON files)."""

    def __init__(self, pipe: PosePipeline, out_dir: Path, device: torch.device | None = None,
                 max_image_pixels: int = MAX_IMAGE_PIXELS, max_video_s: float | None = MAX_VIDEO_S):
        self.pipe, self.out_dir = pipe, out_dir
        self.device = device or torch.device("cpu")
        self.max_image_pixels, self.max_video_s = max_image_pixels, max_video_s
        self.model_name, self.detector = None, None

    def show_detector(self, detector: str) -> str:
        """The detector dropdown changed: the model info with the new detector line."""
        self.detector = detector
        return info_markdown(self.pipe, self.model_name, detector)

    @user_errors
    def switch_model(self, name: str, progress=gr.Progress()):
        """The model picker: load zoo model ``name`` (downloading it once, with progress) or the
        demo model, run it from now on; returns the new model info and the refreshed choices."""
        if name in zoo.ZOO and not zoo.is_cached(name) and zoo.offline():
            raise AppError(f"{name} is not cached and ${zoo.OFFLINE_ENV} forbids downloads; "
                           f"put {zoo.ZOO[name].file_name} in {zoo.cache_path(zoo.ZOO[name]).parent}")
        report = lambda done, total: progress((done, total), desc=f"downloading {name}", unit="bytes")  # noqa: E731
        model = loading.load_2d(name, self.device, report)
        kept = [n for n in self.pipe.notices if not n.startswith(MODEL_NOTICES)]
        notices = ([loading.DEMO_NOTICE] if name == DEMO else []) + kept
        self.pipe.swap_model(model, loading.DEMO_CHECKPOINT if name == DEMO else name, tuple(notices))
        self.model_name = name
        return info_markdown(self.pipe, name, self.detector), gr.update(choices=model_choices(name), value=name)

    def webcam_step(self, frame, state, conf, scale, flip, smooth, detector):
        """Streamed: one browser frame file (mirrored when MIRROR_PREVIEW) -> annotated real frame."""
        if frame is None:
            return None, state
        state = state if isinstance(state, StreamState) else StreamState()
        try:
            if isinstance(frame, (str, os.PathLike)):     # the app's stream sends files (decoded here, capped)
                frame = read_image(frame, self.max_image_pixels)
            real = np.ascontiguousarray(frame[:, ::-1]) if MIRROR_PREVIEW else frame
            poses = self.pipe.run_frame(real, detector, flip, state, smooth)
        except AppError as err:
            raise user_error(err) from None
        fps = state.tick(time.perf_counter())
        return annotate(real, poses, self.pipe.config, conf, scale, fps), state

    @user_errors
    def predict_frame(self, image, conf, scale, flip, detector):
        """Non-streaming twin of the webcam stream: one real (unmirrored) frame -> image + JSON."""
        drawn, path, _ = self.predict_image(image, conf, scale, flip, detector)
        return drawn, path

    @user_errors
    def predict_image(self, image, conf, scale, flip, detector):
        """Image file path -> annotated PNG path, JSON file path, and (path, poses) kept in gr.State."""
        if image is None:
            raise AppError("no image: upload one (or pass --image PATH)")
        rgb = read_image(image, self.max_image_pixels)
        poses = self.pipe.run_frame(rgb, detector, flip)
        if len(poses.boxes_xyxy) == 0:
            gr.Warning(no_person(detector or self.pipe.default_detector))
        elif notice := hidden_notice(*hidden_joints(poses.pred.keypoints, poses.pred.confidence, conf), conf):
            gr.Info(notice)
        doc = document(self.pipe, [frame_record(poses, 0, 0.0)], detector, flip, False)
        drawn = write_png(self.out_dir, "image", annotate(rgb, poses, self.pipe.config, conf, scale))
        return drawn, _write_json(self.out_dir, "image", doc), (str(image), poses)

    def redraw(self, kept, conf, scale):
        """Sliders moved: draw the kept poses again on the image re-read from its file, without
        running the model (skipped when the file has expired from the cache)."""
        if not kept:
            return gr.skip()
        path, poses = kept
        if poses.pred.keypoints.shape[1] != self.pipe.config.num_joints:
            return gr.skip()                     # drawn by a model since swapped for another joint set
        try:
            rgb = read_image(path, self.max_image_pixels)
        except AppError:
            return gr.skip()
        return write_png(self.out_dir, "image", annotate(rgb, poses, self.pipe.config, conf, scale))

    @user_errors
    def predict_video(self, video, conf, scale, flip, detector, smooth, progress=gr.Progress()):
        """Video path -> annotated .webm path and JSON file path (per frame, raw + smoothed)."""
        if not video:
            raise AppError("no video: upload one (or pass --video PATH)")
        out, start = self.out_dir / f"video-{uuid.uuid4().hex}.webm", time.monotonic()
        report = lambda i, n: progress((i, n), desc=f"frames {eta_text(i, n, time.monotonic() - start)}",  # noqa: E731
                                       unit="frames")
        doc = process_video(self.pipe, video, out, detector, flip, smooth, conf, scale, report,
                            max_seconds=self.max_video_s)
        if doc["truncated"]:
            gr.Warning(f"Only the first {self.max_video_s:g} s were processed (of {doc['duration_s'] or '?'} s): "
                       "this app's video limit (rle-app --max-video-s)")
        if not any(f["people"] for f in doc["frames"]):
            gr.Warning(no_person(detector or self.pipe.default_detector))
        return str(out), _write_json(self.out_dir, "video", doc)

    def plot_3d(self, kept, person, elev, azim):
        """matplotlib 3D figure of the selected person's root-relative joints (mm), or None."""
        if not kept or kept[1].pred_3d is None or len(kept[1].boxes_xyxy) == 0:
            return None
        poses: FramePoses = kept[1]
        n, cfg = int(min(max(person, 0), len(poses.boxes_xyxy) - 1)), self.pipe.predictor_3d.config
        joints, sigma = person_mm(poses.pred_3d, n, cfg)
        fig = figure_3d(joints, cfg.edges, sigma, cfg.joint_names,
                        title=f"person #{poses.track_ids[n]} (mm, root-relative)")
        fig.axes[0].view_init(elev=float(elev), azim=float(azim))
        return fig


def detector_line(pipe: PosePipeline, detector: str | None) -> str:
    """Which detector runs: the start-up notice (why it was chosen) while the default is in use,
    else the name picked in the app."""
    if detector in (None, pipe.default_detector):
        return next((n for n in pipe.notices if n.startswith("Detector:")), f"Detector: {pipe.default_detector}")
    return f"Detector: {detector} (picked in the app)"


def info_markdown(pipe: PosePipeline, model_name: str | None = None, detector: str | None = None) -> str:
    """Which model and detector run, model info (backbone, dims, input size, provenance), notices,
    the ellipse legend."""
    entry = zoo.ZOO.get(str(model_name))
    lines = [f"**Running**: `{model_name}`" + (f" ({entry.task}, {entry.accuracy}, {entry.accuracy_source})"
                                              if entry else "")] if model_name else []
    for label, info in (("2D model", model_info(pipe.config, pipe.checkpoint)),
                        ("3D model", model_info(pipe.predictor_3d.config, pipe.checkpoint_3d)
                         if pipe.predictor_3d else None)):
        if info:
            lines.append(f"**{label}**: `{info['backbone']}`, {info['dims']}D, input {info['input_hw'][0]}x"
                         f"{info['input_hw'][1]} (HxW), {len(info['joint_names'])} joints, source "
                         f"`{info['source']}`, file `{info['checkpoint']}`")
    lines += [f"> {n}" for n in pipe.notices if not n.startswith("Detector:")]
    lines.append(f"> {plain(detector_line(pipe, detector))}")
    lines.append(f"Ellipses: nominal {100 * ELLIPSE_LEVEL:.0f}% Gaussian level of the predicted covariance "
                 f"(times the ellipse scale; 0 turns them off); outline red -> green with confidence. "
                 f"{SIGMA_NOTE}. Joints below the confidence threshold are hidden; the frame says how many.")
    return "\n\n".join(lines)


def build_demo(pipe: PosePipeline, video_path: str | None = None, image_path: str | None = None,
               detector: str | None = None, webcam_time_limit_s: int | None = None, model_name: str | None = None,
               device: torch.device | None = None, cache_expiry_s: int = CACHE_EXPIRY_S,
               max_video_s: float | None = MAX_VIDEO_S, max_image_pixels: int = MAX_IMAGE_PIXELS) -> gr.Blocks:
    """The app: a model picker, Webcam, Video and Image tabs, shared controls, 3D view when a 3D
    model is loaded. ``model_name``: the 2D model's zoo name, "demo", or its path / URL.
    ``cache_expiry_s``: uploads and outputs are deleted this long after they were written;
    ``max_video_s``: frames after it are not processed; ``max_image_pixels``: larger images are refused.

    Named API endpoints: ``predict_image``, ``predict_video``, ``predict_frame`` (the webcam twin),
    ``switch_model`` (the picker).
    """
    h = Handlers(pipe, _output_dir(), device, max_image_pixels, max_video_s)
    model_name = model_name or (DEMO if pipe.checkpoint == loading.DEMO_CHECKPOINT else None)
    h.model_name = model_name
    every_s = max(1, min(int(cache_expiry_s), 300))
    with gr.Blocks(title="RLE pose", delete_cache=(every_s, max(1, int(cache_expiry_s)))) as demo:
        gr.Markdown("# RLE pose: keypoints with uncertainty")
        info = gr.Markdown(info_markdown(pipe, model_name), elem_id="model-info")
        picker = gr.Dropdown(model_choices(model_name), value=model_name, label="2D model (zoo; downloaded once)")
        picker.input(h.switch_model, [picker], [info, picker], api_name="switch_model", concurrency_limit=1)
        with gr.Row():
            conf = gr.Slider(0.0, 1.0, 0.3, step=0.05, label="confidence threshold",
                             info="joints below it are hidden (the frame says how many)")
            scale = gr.Slider(0.0, 4.0, 1.0, step=0.25, label="ellipse scale", info="0: no ellipses")
            show = gr.Checkbox(True, label="uncertainty ellipses")
            flip = gr.Checkbox(False, label="flip test")
            smooth = gr.Checkbox(True, label="smoothing (webcam, video)")
            det = gr.Dropdown(list(DETECTORS), value=detector or pipe.default_detector, label="detector")
        show.input(lambda on, s: (s or 1.0) if on else 0.0, [show, scale], scale, api_visibility="private")
        scale.input(lambda s: s > 0, scale, show, api_visibility="private", show_progress="hidden")
        det.change(h.show_detector, det, info, api_visibility="private", show_progress="hidden")
        with gr.Tabs(selected="video" if video_path else "image" if image_path else None):
            with gr.Tab("Webcam", id="webcam"):
                _webcam_tab(h, conf, scale, flip, smooth, det, webcam_time_limit_s)
            with gr.Tab("Video", id="video"):
                vin = gr.Video(value=video_path or _asset("demo.webm"), sources=["upload"], label="video")
                gr.Markdown(VIDEO_NOTE)
                vbtn = gr.Button("Process video", variant="primary")
                vout, vjson = gr.Video(label="annotated (.webm)"), gr.File(label="keypoints JSON")
                vbtn.click(h.predict_video, [vin, conf, scale, flip, det, smooth], [vout, vjson],
                           api_name="predict_video", concurrency_limit=1)
            with gr.Tab("Image", id="image"):
                _image_tab(h, image_path, conf, scale, flip, det)
    demo.rle_pipeline = pipe    # the CLI prints the same notices in the terminal
    return demo


def limits(cache_expiry_s: int | None = None, max_video_s: float | None = None) -> dict:
    """``build_demo`` keyword arguments for the given limits (None: the defaults here)."""
    return {"cache_expiry_s": CACHE_EXPIRY_S if cache_expiry_s is None else cache_expiry_s,
            "max_video_s": MAX_VIDEO_S if max_video_s is None else max_video_s}


def _output_dir() -> Path:
    """A new folder for this app's outputs inside gradio's cache (so its files are served without a
    copy and expire with ``delete_cache``); removed with what is left in it when the process exits."""
    from gradio.utils import get_upload_folder
    Path(get_upload_folder()).mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="rle-app-", dir=get_upload_folder()))
    atexit.register(shutil.rmtree, out, True)
    return out


def _asset(name: str) -> str | None:
    """The generated demo clip / image in assets/ (pre-filled so the tabs work offline), if present."""
    path = ASSETS_DIR / name
    return str(path) if path.is_file() else None


def _webcam_tab(h: Handlers, conf, scale, flip, smooth, det, time_limit_s) -> None:
    gr.Markdown("Click the camera, allow access, then Record. The preview is mirrored like a mirror; "
                "the annotated view shows the real camera frame, so left joints (orange) are the "
                "person's left. No camera? Use the Video or Image tab.")
    with gr.Row():
        cam = gr.Image(sources=["webcam"], streaming=True, type="filepath", image_mode=None, label="camera",
                       webcam_options=gr.WebcamOptions(mirror=MIRROR_PREVIEW))
        cam_out = gr.Image(label="annotated", format="jpeg", elem_id="webcam-annotated")
    state = gr.State(None, time_to_live=STATE_TTL_S)
    cam.stream(h.webcam_step, [cam, state, conf, scale, flip, smooth, det], [cam_out, state],
               stream_every=STREAM_EVERY_S, time_limit=time_limit_s, concurrency_limit=1,
               show_progress="hidden", api_name="predict_frame_stream", api_visibility="private")
    twin_in = gr.Image(visible=False, type="filepath", image_mode=None, label="frame")
    twin_out = gr.Image(visible=False, label="annotated frame")
    twin_json = gr.File(visible=False, label="keypoints JSON")
    gr.Button(visible=False).click(h.predict_frame, [twin_in, conf, scale, flip, det], [twin_out, twin_json],
                                   api_name="predict_frame")


def _image_tab(h: Handlers, image_path, conf, scale, flip, det) -> None:
    with gr.Row():
        iin = gr.Image(value=image_path or _asset("demo.jpg"), type="filepath", image_mode=None,
                       sources=["upload", "clipboard"], label="image")
        iout = gr.Image(label="annotated", elem_id="image-annotated")
    ibtn = gr.Button("Estimate poses", variant="primary")
    ijson = gr.File(label="keypoints JSON")
    kept = gr.State(None, time_to_live=STATE_TTL_S)
    run = ibtn.click(h.predict_image, [iin, conf, scale, flip, det], [iout, ijson, kept], api_name="predict_image")
    for slider in (conf, scale):
        slider.change(h.redraw, [kept, conf, scale], iout, api_visibility="private", show_progress="hidden")
    if h.pipe.predictor_3d is None:
        return
    with gr.Row():
        person = gr.Number(0, precision=0, minimum=0, label="person (index in the JSON)")
        elev = gr.Slider(-90, 90, 15, step=5, label="elevation (deg)")
        azim = gr.Slider(-180, 180, -70, step=5, label="azimuth (deg)")
    plot = gr.Plot(label="3D skeleton (root-relative mm; bars and marker size: sigma)")
    run.then(h.plot_3d, [kept, person, elev, azim], plot, api_visibility="private")
    for ctl in (person, elev, azim):
        ctl.change(h.plot_3d, [kept, person, elev, azim], plot, api_visibility="private", show_progress="hidden")
