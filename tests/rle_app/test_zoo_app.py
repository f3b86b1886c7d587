"""The app and the zoo: names for --checkpoint, the first run (cached model / offline demo), the
model picker, --list-models. Downloads come from a local HTTP server (tests/conftest.py)."""
import io

import numpy as np
import torch
from click.testing import CliRunner

from models import zoo
from rle_app import loading
from rle_app.cli import build_app, main
from rle_app.pipeline import PosePipeline
from rle_app.ui import Handlers


def _bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _info(demo) -> str:
    return next(b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-info")


def test_no_checkpoint_offline_starts_on_the_demo_with_its_notice():
    demo, _ = build_app(detector="full-frame", device="cpu")          # conftest: RLE_POSE_OFFLINE=1
    assert "Running**: `demo`" in _info(demo) and loading.DEMO_NOTICE in _info(demo)
    demo, _ = build_app(detector="full-frame", device="cpu", offline=True)
    assert loading.DEMO_NOTICE in _info(demo)


def test_no_checkpoint_with_a_cached_zoo_file_starts_on_it(zoo_cache, official_state, monkeypatch):
    path = zoo.cache_path(zoo.ZOO["rle-r50-coco"])
    path.parent.mkdir(parents=True)
    path.write_bytes(_bytes(official_state("coco-laplace-rle.pth")))
    monkeypatch.setitem(zoo.ZOO, "rle-r50-coco", zoo.ZOO["rle-r50-coco"].__class__(
        **{**zoo.ZOO["rle-r50-coco"].__dict__, "url": "http://127.0.0.1:9/never", "drive_id": None}))
    demo, _ = build_app(detector="full-frame", device="cpu")
    text = _info(demo)
    assert "Running**: `rle-r50-coco` (coco-2d, 71.3 AP" in text and loading.DEMO_NOTICE not in text
    assert "`resnet50`, 2D, input 256x192" in text


def test_unreachable_default_falls_back_to_the_demo_saying_why(zoo_cache, monkeypatch, closed_port_url):
    monkeypatch.setitem(loading.DEFAULT_MODELS, "cpu", "rle-r50-coco")
    monkeypatch.setitem(zoo.ZOO, "rle-r50-coco", zoo.ZOO["rle-r50-coco"].__class__(
        **{**zoo.ZOO["rle-r50-coco"].__dict__, "url": closed_port_url, "drive_id": None}))
    spec, notices = loading.default_checkpoint(torch.device("cpu"))
    assert spec == "demo" and notices[0] == loading.DEMO_NOTICE and closed_port_url in notices[1]


def test_names_for_checkpoint_and_checkpoint_3d_download_once_and_load(serve_zoo, official_state, file_server):
    serve_zoo("rle-r50-coco", _bytes(official_state("coco-laplace-rle.pth")))
    serve_zoo("rle-r50-h36m", _bytes({"state_dict": official_state("h36m-laplace-rle.pth")}))
    model, model_3d, label, spec, notices = loading.load_app_models("rle-r50-coco", "rle-r50-h36m",
                                                                    torch.device("cpu"))
    assert (model.config.dims, model_3d.config.dims, label, notices) == (2, 3, "rle-r50-coco", ())
    pipe = PosePipeline(model, model_3d, detector="full-frame")
    poses = pipe.run_frame(np.full((240, 320, 3), 90, np.uint8))
    assert poses.pred_3d.keypoints.shape == (1, 18, 3)                # the 3D view has its input
    assert sorted(file_server.hits.values()) == [1, 1]


def test_wrong_task_and_unknown_names_are_one_line_cli_errors(tmp_path, monkeypatch):
    zoo_cache = tmp_path / "cache"                     # downloads stay off ($RLE_POSE_OFFLINE)
    monkeypatch.setenv("RLE_POSE_CACHE", str(zoo_cache))
    for args, text in ((["--checkpoint", "rle-r50-h36m"], "a 3D model (h36m-3d); this needs a 2D one"),
                       (["--checkpoint-3d", "rle-r50-coco"], "a 2D model (coco-2d); this needs a 3D one"),
                       (["--checkpoint", "rle-r9-coco"], "known: rle-r50-coco, rle-r50-h36m")):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and result.output.count("\n") == 1 and text in result.output, result.output
    assert not zoo_cache.exists() or not any(zoo_cache.rglob("*.pth"))


def test_list_models_prints_the_zoo():
    result = CliRunner().invoke(main, ["--list-models"])
    assert result.exit_code == 0 and all(name in result.output for name in zoo.ZOO)
    assert "cached" in result.output.splitlines()[0]


def test_the_picker_switches_models_without_a_restart(serve_zoo, official_state, tmp_path):
    serve_zoo("mmpose-rle-r50-coco", _bytes(official_state("coco-laplace-rle.pth")))   # official layout, any name
    model, _, label, spec, notices = loading.load_app_models(None, None, torch.device("cpu"), offline=True)
    pipe = PosePipeline(model, None, detector="full-frame", checkpoint=label, notices=notices + ("detector note",))
    h = Handlers(pipe, tmp_path)
    calls = []
    info, update = h.switch_model("mmpose-rle-r50-coco", progress=lambda *a, **k: calls.append(a))
    assert pipe.config.backbone == "resnet50" and pipe.config.input_hw == (256, 192)
    assert "Running**: `mmpose-rle-r50-coco`" in info and loading.DEMO_NOTICE not in info and "detector note" in info
    assert calls and calls[-1][0][0] == calls[-1][0][1]                 # progress reached the total
    assert ("mmpose-rle-r50-coco (0.706 AP) - cached", "mmpose-rle-r50-coco") in update["choices"]
    image = np.full((240, 320, 3), 90, np.uint8)
    assert pipe.run_frame(image).pred.keypoints.shape == (1, 17, 2)
    info, _ = h.switch_model("demo", progress=lambda *a, **k: None)
    assert loading.DEMO_NOTICE in info and pipe.config.input_hw == model.config.input_hw
