"""``rle-app``: parse, load the models, build the Gradio app, launch. Nothing else lives here.

    rle-app [--checkpoint NAME|URL|PATH] [--checkpoint-3d NAME|URL|PATH] [--webcam | --video PATH |
            --image PATH] [--detector auto|torchvision|mediapipe|hog|full-frame] [--host 127.0.0.1]
            [--port 7860] [--share] [--device auto] [--backend auto|torch|onnxruntime] [--offline] [--list-models]

Without ``--checkpoint`` a real model is used (``rle_app.loading.default_checkpoint``: a cached zoo
model, else the device's default downloaded once); offline, the demo model in ``assets/`` (trained
on generated figures only). Every user error (missing file, unknown name, 2D/3D mix-up, bad
detector) is one click error line, exit code 1.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

MAX_FILE_SIZE = "100mb"


def build_app(checkpoint: str | None = None, checkpoint_3d: str | None = None, detector: str = "auto",
              detector_model: str | None = None, device: str = "auto", video: str | None = None,
              image: str | None = None, download: bool = True, webcam_time_limit_s: int | None = None,
              offline: bool = False, backend: str = "auto"):
    """Load the models and build the Blocks; returns (demo, allowed_paths). Raises AppError.

    ``checkpoint`` None: ``default_checkpoint`` (a real model unless ``offline``; see loading).
    ``backend``: the Predictors' (``rle_app.loading.check_backend``; auto: the faster, measured at load).
    ``video`` / ``image`` pre-fill their tabs (and select the tab); allowed_paths are the assets
    folder and those files, nothing else.
    """
    from rle_app.detect import resolve_detector
    from rle_app.errors import AppError
    from rle_app.loading import ASSETS_DIR, check_backend, load_app_models, resolve_device
    from rle_app.pipeline import PosePipeline
    from rle_app.ui import build_demo
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
        pipe = PosePipeline(model, model_3d, detector=name, detector_model=detector_model, checkpoint=path_2d,
                            checkpoint_3d=checkpoint_3d, notices=tuple(notices), backend=backend)
    except (ExportError, CacheNotWritable) as err:
        raise AppError(f"--backend {backend}: {err}") from None
    demo = build_demo(pipe, video_path=video, image_path=image, webcam_time_limit_s=webcam_time_limit_s,
                      model_name=spec, device=dev)
    allowed = [str(ASSETS_DIR)] + [str(Path(p).resolve()) for p in (video, image) if p]
    return demo, allowed


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
@click.option("--detector-model", type=click.Path(dir_okay=False), help="MediaPipe pose_landmarker .task file.")
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
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (1 is fastest for the demo "
              "model on a busy machine; default: torch's choice).")
def main(checkpoint, checkpoint_3d, start, video, image, detector, detector_model, download, host, port,
         share, device, backend, offline, list_models, threads) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if list_models:
        from models.zoo import format_table
        click.echo(format_table())
        return
    if threads:
        import torch
        torch.set_num_threads(threads)
    from rle_app.errors import AppError
    if sum(bool(x) for x in (start, video, image)) > 1:
        raise click.UsageError("give one of --webcam, --video PATH, --image PATH")
    try:
        demo, allowed = build_app(checkpoint, checkpoint_3d, detector, detector_model, device,
                                  video, image, download, offline=offline, backend=backend)
    except AppError as err:
        raise click.ClickException(str(err)) from None
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
                allowed_paths=allowed, show_error=True)


if __name__ == "__main__":
    main()
