"""``rle-app``: parse, load the models, build the Gradio app, launch. Nothing else lives here.

    rle-app [--checkpoint NAME|URL|PATH] [--checkpoint-3d NAME|URL|PATH] [--webcam | --video PATH |
            --image PATH] [--detector auto|torchvision|mediapipe|hog|full-frame] [--host 127.0.0.1]
            [--port 7860] [--share] [--device auto] [--backend auto|torch|onnxruntime] [--offline]
            [--list-models] [--cache-expiry-s 3600] [--max-video-s 120] [--max-request-mb 200]

Without ``--checkpoint`` a real model is used (``rle_app.loading.default_checkpoint``: a cached zoo
model, else the device's default downloaded once); offline, the demo model in ``assets/`` (trained
on generated figures only). Every user error (missing file, unknown name, 2D/3D mix-up, bad
detector, a CUDA device the machine lacks, a busy port) is one click error line, exit code 1.

Limits of the running app (README "Stability"): an upload is at most ``MAX_FILE_SIZE`` (larger:
HTTP 413), one request (several files) at most ``--max-request-mb`` (``request_limit``; larger:
HTTP 413, nothing stored), an image at most ``media.MAX_IMAGE_PIXELS`` (refused before decoding), a video is
processed for its first ``--max-video-s`` seconds; uploads and outputs are deleted after
``--cache-expiry-s`` and when the server stops. Errors the app did not phrase itself (gradio's
own) are shown without their details (``show_error=False``), so no server path reaches a client;
the app's own one-line errors are always shown.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import click

MAX_FILE_SIZE = "100mb"
MAX_REQUEST_MB = 200   # one upload request, several files together (twice MAX_FILE_SIZE)


def build_app(checkpoint: str | None = None, checkpoint_3d: str | None = None, detector: str = "auto",
              detector_model: str | None = None, device: str = "auto", video: str | None = None,
              image: str | None = None, download: bool = True, webcam_time_limit_s: int | None = None,
              offline: bool = False, cache_expiry_s: int | None = None, max_video_s: float | None = None,
              backend: str = "auto", max_people: int | None = None):
    """Load the models and build the Blocks; returns (demo, allowed_paths). Raises AppError.

    ``checkpoint`` None: ``default_checkpoint`` (a real model unless ``offline``; see loading).
    ``backend``: the Predictors' (``rle_app.loading.check_backend``; auto: the faster, measured at load).
    ``video`` / ``image`` pre-fill their tabs (and select the tab); allowed_paths are the assets
    folder and those files, nothing else. ``download`` False: no detector ever tries a download
    (at start or per request). ``cache_expiry_s`` / ``max_video_s``: see ``ui.build_demo`` (None:
    its defaults).
    """
    from rle_app.detect import pose_task_from_env, resolve_detector
    from rle_app.errors import AppError
    from rle_app.loading import ASSETS_DIR, check_backend, load_app_models, resolve_device
    from rle_app.pipeline import PosePipeline
    from rle_app.ui import build_demo, limits
    for option, path in (("--video", video), ("--image", image), ("--detector-model", detector_model)):
        if path and not Path(path).is_file():
            raise AppError(f"{option} {path}: no such file")
    dev = resolve_device(device)
    check_backend(backend, dev)
    model, model_3d, path_2d, spec, model_notices = load_app_models(checkpoint, checkpoint_3d, dev, offline)
    name, notice = resolve_detector(detector, detector_model, download and not offline)
    notices = list(model_notices) + ([notice] if notice else [])
    from models.export import ExportError
    from models.files import CacheNotWritable
    try:
        pipe = PosePipeline(model, model_3d, detector=name, detector_model=detector_model or pose_task_from_env(),
                            checkpoint=path_2d, checkpoint_3d=checkpoint_3d, notices=tuple(notices), download=download and not offline,
                            backend=backend, max_people=max_people)
    except (ExportError, CacheNotWritable) as err:
        raise AppError(f"--backend {backend}: {err}") from None
    demo = build_demo(pipe, video_path=video, image_path=image, webcam_time_limit_s=webcam_time_limit_s,
                      model_name=spec, device=dev, **limits(cache_expiry_s, max_video_s))
    allowed = [str(ASSETS_DIR)] + [str(Path(p).resolve()) for p in (video, image) if p]
    return demo, allowed


def check_port(host: str, port: int | None) -> None:
    """ClickException (one line) when ``host:port`` is taken; None / 0 lets gradio choose."""
    if not port:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise click.ClickException(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err}); "
                                       "pass another --port or stop what runs there") from None


@click.command(help="Pose estimation with uncertainty (RLE) in a Gradio app: webcam, video, image.")
@click.option("--checkpoint", help="2D checkpoint: a zoo name (--list-models), an http(s) URL or a file "
              "(project, official, mmpose); default: a cached zoo model, else the default downloaded once, "
              "offline the demo model in assets/.")
@click.option("--checkpoint-3d", help="3D checkpoint: rle-r50-h36m, a URL or a file (e.g. h36m-laplace-rle.pth).")
@click.option("--webcam", "start", flag_value="webcam", help="Open on the webcam tab (the default).")
@click.option("--video", type=click.Path(dir_okay=False), help="Open on the video tab with this video.")
@click.option("--image", type=click.Path(dir_okay=False), help="Open on the image tab with this image.")
@click.option("--detector", default="auto", show_default=True,
              type=click.Choice(["auto", "torchvision", "mediapipe", "hog", "full-frame"]),
              help="auto: torchvision's COCO person detector when its weights are cached or downloadable, "
              "else mediapipe when its .task is, else full-frame.")
@click.option("--detector-model", type=click.Path(dir_okay=False), help="MediaPipe pose_landmarker .task file "
              "(default: $RLE_POSE_TASK, else the cache).")
@click.option("--download/--no-download", default=True, show_default=True,
              help="May --detector auto try a one-time download of the detector's weights.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 to serve a LAN).")
@click.option("--port", default=7860, show_default=True, type=int)
@click.option("--share", is_flag=True, help="Also open a public gradio.live link.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "torch", "onnxruntime"]),
              help="Inference: torch, ONNX Runtime (the graph is exported once and cached beside the checkpoint), "
              "or auto: the faster of the two, measured at load (torch on a GPU).")
@click.option("--offline", is_flag=True, help="No downloads: without --checkpoint the demo model "
              "(also RLE_POSE_OFFLINE=1).")
@click.option("--list-models", is_flag=True, help="List the zoo's models (size, accuracy, cached) and exit.")
@click.option("--cache-expiry-s", type=click.IntRange(min=1), default=3600, show_default=True,
              help="Uploads and outputs (annotated images, videos, JSON) are deleted this long after they "
              "were written, and all of them when the app stops.")
@click.option("--max-video-s", type=click.FloatRange(min=0, min_open=True), default=120, show_default=True,
              help="Process at most this many seconds of an uploaded video (the rest is not read).")
@click.option("--max-request-mb", type=click.FloatRange(min=0, min_open=True), default=MAX_REQUEST_MB,
              show_default=True, help="Refuse (HTTP 413) a request, e.g. one upload of several files, over "
              "this many MB; nothing of it is stored.")
@click.option("--open", "open_browser", is_flag=True, help="Open the app in the default web browser.")
@click.option("--max-people", type=click.IntRange(min=1), help="The most people per frame (default: the "
              "detector's own cap, mediapipe 6). 1 for a one-person webcam: mediapipe then stops searching "
              "while it tracks that person.")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (1 is fastest for the demo "
              "model on a busy machine; default: torch's choice).")
def main(checkpoint, checkpoint_3d, start, video, image, detector, detector_model, download, host, port,
         share, device, backend, offline, list_models, cache_expiry_s, max_video_s, max_request_mb,
         open_browser, max_people, threads) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if list_models:
        from models.zoo import format_table
        click.echo(format_table())
        return
    if threads:
        import torch
        torch.set_num_threads(threads)
    from rle_app.errors import AppError
    from rle_app.request_limit import app_kwargs
    if sum(bool(x) for x in (start, video, image)) > 1:
        raise click.UsageError("give one of --webcam, --video PATH, --image PATH")
    try:
        check_port(host, port)
        demo, allowed = build_app(checkpoint, checkpoint_3d, detector, detector_model, device,
                                  video, image, download, offline=offline, cache_expiry_s=cache_expiry_s,
                                  max_video_s=max_video_s, backend=backend, max_people=max_people)
    except AppError as err:
        raise click.ClickException(str(err)) from None
    for line in startup_lines(demo):
        click.echo(line)
    demo.queue(default_concurrency_limit=1)
    # quiet: gradio's own lines advise share=True in launch(), which a CLI user cannot type
    try:
        demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
                    allowed_paths=allowed, show_error=False, quiet=True, inbrowser=open_browser,
                    prevent_thread_lock=True, app_kwargs=app_kwargs(max_request_mb))
    except OSError as err:   # the port was taken between the check and the launch
        raise click.ClickException(f"--port {port}: {str(err).splitlines()[0]}") from None
    click.echo(f"rle-app: serving {demo.local_url} (open it in a browser; Ctrl+C stops)"
               + (f"; public link {demo.share_url}" if share and demo.share_url else
                  "; --share for a public link, --host 0.0.0.0 for the LAN"))
    demo.block_thread()


def startup_lines(demo) -> list[str]:
    """What the page's notices say (model, demo model, detector and why), for the terminal."""
    pipe = demo.rle_pipeline
    return [f"rle-app: model {pipe.checkpoint}"] + [f"rle-app: {n}" for n in pipe.notices]


if __name__ == "__main__":
    main()
