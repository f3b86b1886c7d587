"""Hugging Face Space entry (``app_file: rle_app/space.py``): the rle-app UI with hosting defaults.

Spaces runs ``python rle_app/space.py``. Settings come from the Space's variables, not argv:
``RLE_CHECKPOINT`` / ``RLE_CHECKPOINT_3D`` (a zoo name such as ``rle-r50-coco`` /
``rle-r50-h36m``, an http(s) URL, or a path in the repo; default: a cached zoo model, else the
CPU default downloaded once into the Space's cache, else the demo model in assets/;
``RLE_POSE_OFFLINE=1`` forces the demo), ``RLE_DETECTOR`` (default ``auto``: torchvision's COCO
detector, else mediapipe, else full-frame),
``RLE_DEVICE`` (default ``auto``). The server binds to ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``
as Spaces set them (0.0.0.0:7860); one webcam stream at a time, each at most ``WEBCAM_TIME_LIMIT_S``;
a video is processed for its first ``MAX_VIDEO_S`` seconds; an upload is at most
``MAX_FILE_SIZE`` per file and ``MAX_REQUEST_MB`` per request; uploads and outputs expire after
``CACHE_EXPIRY_S``.
Nothing runs at import.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

WEBCAM_TIME_LIMIT_S = 120
MAX_FILE_SIZE = "50mb"
MAX_REQUEST_MB = 100   # one upload request, several files together
MAX_VIDEO_S = 30.0
CACHE_EXPIRY_S = 1800


def main() -> None:
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # run as a script from a checkout that is not pip-installed
        sys.path.insert(0, root)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from rle_app.cli import build_app
    from rle_app.errors import AppError
    from rle_app.request_limit import app_kwargs
    env = os.environ.get
    try:
        demo, allowed = build_app(env("RLE_CHECKPOINT"), env("RLE_CHECKPOINT_3D"), env("RLE_DETECTOR", "auto"),
                                  device=env("RLE_DEVICE", "auto"), webcam_time_limit_s=WEBCAM_TIME_LIMIT_S,
                                  cache_expiry_s=CACHE_EXPIRY_S, max_video_s=MAX_VIDEO_S)
    except AppError as err:
        raise SystemExit(f"rle_app/space.py: {err}") from None
    demo.queue(default_concurrency_limit=1, max_size=20)
    demo.launch(max_file_size=MAX_FILE_SIZE, allowed_paths=allowed, show_error=False,
                app_kwargs=app_kwargs(MAX_REQUEST_MB))


if __name__ == "__main__":
    main()
