"""rle-app's launch errors (CUDA without a GPU, a busy port, an unknown backbone) are one line,
exit 1; --no-download reaches the per-request detectors; the kept per-session state is small and
expires."""
import socket

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models.checkpoint import FORMAT, FORMAT_VERSION, save_atomic
from models.config import PoseModelConfig
from models.files import DownloadError
from rle_app import detect_mediapipe
from rle_app.cli import main
from rle_app.errors import AppError
from rle_app.loading import ASSETS_DIR, load_2d
from rle_app.pipeline import PosePipeline


def _one_line_error(args, match):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu():
    _one_line_error(["--device", "cuda", "--offline"], "--device cuda: no CUDA GPU is available")


def test_a_busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        _one_line_error(["--port", str(port), "--offline"], f"--port {port}: cannot listen on 127.0.0.1:{port}")


def test_an_unknown_backbone(tmp_path):
    config = PoseModelConfig(backbone="no_such_net_xyz")
    save_atomic({"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_dict(), "model": {}},
                tmp_path / "odd.pth")
    _one_line_error(["--checkpoint", str(tmp_path / "odd.pth"), "--offline", "--port", "0"],
                    "--checkpoint odd.pth: unknown timm backbone 'no_such_net_xyz'")


@pytest.fixture
def no_task(monkeypatch, tmp_path):
    """An empty model cache, and a counter of mediapipe download attempts (each one fails)."""
    monkeypatch.setenv("RLE_POSE_CACHE", str(tmp_path))
    calls = []

    def download_file(url, *args, **kwargs):
        calls.append(url)
        raise DownloadError(f"{url}: refused by the test")
    monkeypatch.setattr(detect_mediapipe, "download_file", download_file)
    return calls


@pytest.mark.parametrize("download, attempts", [(False, 0), (True, 1)])
def test_mediapipe_downloads_at_most_once_and_never_with_no_download(no_task, download, attempts):
    pipe = PosePipeline(load_2d(None, "cpu"), detector="mediapipe", download=download)
    frame = np.zeros((64, 48, 3), np.uint8)
    for _ in range(3):
        with pytest.raises(AppError, match="mediapipe: .*pose_landmarker_lite.task"):
            pipe.run_frame(frame)
    assert len(no_task) == attempts


def test_kept_state_is_a_path_and_every_state_expires(tmp_path):
    import gradio as gr

    from rle_app.ui import STATE_TTL_S, Handlers, build_demo
    pipe = PosePipeline(load_2d(None, "cpu"), detector="full-frame", checkpoint=ASSETS_DIR / "demo-coco.pth")
    demo = build_demo(pipe)
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    assert states and all(s.time_to_live == STATE_TTL_S for s in states)
    _, _, kept = Handlers(pipe, tmp_path).predict_image(str(ASSETS_DIR / "demo.jpg"), 0.3, 1.0, False, None)
    assert kept[0] == str(ASSETS_DIR / "demo.jpg") and not any(isinstance(k, np.ndarray) for k in kept)
