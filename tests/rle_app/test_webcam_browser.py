"""The webcam path in a real browser: Chromium's fake camera plays a .y4m clip into the app's
streaming gr.Image; the stream handler must receive the frames (unmirrored) and return annotated ones.

Needs Debian's chromium (CI: ``apt-get install -y chromium``) and PyPI ``playwright`` (its own
browser download is not used). Skipped, with that reason, when /usr/bin/chromium is absent.
"""
import shutil
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rle_app.loading import ASSETS_DIR, load_pose_models
from rle_app.pipeline import PosePipeline
from rle_app.ui import build_demo

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="chromium not installed (apt-get install -y chromium)")


def write_y4m(path: Path, frames_bgr: list[np.ndarray], fps: int = 10) -> None:
    """YUV4MPEG2 4:2:0: a header line, then 'FRAME\\n' + I420 bytes per frame."""
    h, w = frames_bgr[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames_bgr:
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


def _clip_with_left_marker(count: int = 10) -> list[np.ndarray]:
    """The demo clip's frames with a pure red bar on the real frame's left edge (x 10..50)."""
    cap, frames = cv2.VideoCapture(str(ASSETS_DIR / "demo.webm")), []
    while len(frames) < count:
        frame = cap.read()[1].copy()
        frame[200:280, 10:50] = (0, 0, 255)
        frames.append(frame)
    return frames


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redness(image_rgb: np.ndarray) -> float:
    return float(image_rgb[..., 0].astype(int).mean() - image_rgb[..., 1:].astype(int).mean())


def test_streamed_webcam_frames_come_back_annotated_and_unmirrored(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    write_y4m(tmp_path / "clip.y4m", _clip_with_left_marker())
    model = load_pose_models(None, None, torch.device("cpu"))[0]
    pipe = PosePipeline(model, detector="full-frame")
    demo = build_demo(pipe)
    demo.queue()
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port)
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={tmp_path / 'clip.y4m'}", "--no-sandbox",
            "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=60_000)
            page.get_by_text("Click to Access Webcam").first.click(timeout=30_000)
            page.locator("button:visible", has_text="Record").first.click(timeout=30_000)  # aria-label: capture photo
            deadline = time.monotonic() + 40
            while pipe.frames_processed < 3 and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            src = page.locator("#webcam-annotated img").first.get_attribute("src", timeout=10_000)
            browser.close()
    finally:
        demo.close()
    assert pipe.frames_processed >= 3, "the .stream() handler received fewer than 3 frames"
    assert src, "the annotated output image was never updated"
    seen = pipe.last_input                       # the frame the model saw, after un-mirroring
    assert seen.shape == (480, 640, 3)
    # the red bar is on the real frame's left: the browser sent it mirrored, the app flipped it back
    assert _redness(seen[200:280, 10:50]) > 100 > _redness(seen[200:280, -50:-10])
