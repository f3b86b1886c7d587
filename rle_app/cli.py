"""``rle-app``: parse, load the models, build the Gradio app, launch. Nothing else lives here.

    rle-app [--checkpoint NAME|URL|PATH] [--checkpoint-3d NAME|URL|PATH] [--webcam | --video PATH |
            --image PATH] [--detector auto|torchvision|mediapipe|hog|full-frame] [--host 127.0.0.1]
            [--port 7860] [--share] [--device auto] [--offline] [--list-models]

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
              offline: bool = False):
    """Load the models and build the Blocks; returns (demo, allowed_paths). Raises AppError.

    ``checkpoint`` None: ``default_checkpoint`` (a real model unless ``offline``; see loading).
    ``video`` / ``image`` pre-fill their tabs (and select the tab); allowed_paths are the assets
    folder and those files, nothing else.
    """
    from rle_app.detect import pose_task_from_env, resolve_detector
    from rle_app.errors import AppError
    from rle_app.loading import ASSETS_DIR, load_app_models, resolve_device
    from rle_app.pipeline import PosePipeline
    from rle_app.ui import build_demo
    for option, path in (("--video", video), ("--image", image), ("--detector-model", detector_model)):
        if path and not Path(path).is_file():
            raise AppError(f"{option} {path}: no such file")
    dev = resolve_device(device)
    model, model_3d, path_2d, spec, model_notices = load_app_models(checkpoint, checkpoint_3d, dev, offline)
    name, notice = resolve_detector(detector, detector_model, download and not offline)
    notices = list(model_notices) + ([notice] if notice else [])
    pipe = PosePipeline(model, model_3d, detector=name, detector_model=detector_model or pose_task_from_env(),
                        checkpoint=path_2d,
                        checkpoint_3d=checkpoint_3d, notices=tuple(notices))
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
@click.option("--detector-model", type=click.Path(dir_okay=False), help="MediaPipe pose_landmarker .task file "
              "(default: $RLE_POSE_TASK, else the cache).")
@click.option("--download/--no-download", default=True, show_default=True,
              help="May --detector auto try a one-time download of the detector's weights.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 to serve a LAN).")
@click.option("--port", default=7860, show_default=True, type=int)
@click.option("--share", is_flag=True, help="Also open a public gradio.live link.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--offline", is_flag=True, help="No downloads: without --checkpoint the demo model "
              "(also RLE_POSE_OFFLINE=1).")
@click.option("--list-models", is_flag=True, help="List the zoo's models (size, accuracy, cached) and exit.")
@click.option("--open", "open_browser", is_flag=True, help="Open the app in the default web browser.")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (1 is fastest for the demo "
              "model on a busy machine; default: torch's choice).")
def main(checkpoint, checkpoint_3d, start, video, image, detector, detector_model, download, host, port,
         share, device, offline, list_models, open_browser, threads) -> None:
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
                                  video, image, download, offline=offline)
    except AppError as err:
        raise click.ClickException(str(err)) from None
    for line in startup_lines(demo):
        click.echo(line)
    demo.queue(default_concurrency_limit=1)
    # quiet: gradio's own lines advise share=True in launch(), which a CLI user cannot type
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
                allowed_paths=allowed, show_error=True, quiet=True, inbrowser=open_browser,
                prevent_thread_lock=True)
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
