"""``rle-train h36m`` / ``rle-eval h36m`` end to end on tiny generated data; official 3D layout;
bad inputs as one-line errors."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from click.testing import CliRunner

from models.checkpoint import save_checkpoint
from models.config import coco_config, h36m_config
from models.build import build_model
from trainer.cli import eval_main, train_main
from trainer.data.images import _jpeg_roi

TINY = ["--set", "model.backbone=resnet10t", "--set", "model.input_hw=[64,64]"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, h36m_files):
    root = tmp_path_factory.mktemp("h36m_cli")
    h36m_files.write_tiny_h36m(root)
    return root


def _eval(*args):
    return CliRunner().invoke(eval_main, ["h36m", *map(str, args), "--workers", "0", "--batch-size", "4"])


def test_train_then_evaluate_end_to_end(data_root, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(train_main, [
        "h36m", "--synthetic", "--out", str(out), "--epochs", "1", "--max-steps", "2", "--batch-size", "4",
        "--set", f"data.data_root={data_root}", "--set", "optim.milestones=[]", *TINY,
        "--image-cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "val MPJPE" in result.output and (out / "last.pth").is_file()
    assert f"images: restart-marker copies in {(tmp_path / 'cache').resolve()} " in result.output
    if os.environ.get("CI"):   # CI builds the extension: the cache must not go quietly unused there
        assert _jpeg_roi is not None, "trainer.data._jpeg_roi is not built (pip install -e . with libjpeg)"
    if _jpeg_roi is not None:   # H36M (train and test) and MPII images went through the cache
        for folder in ("h36m/images", "mpii/images"):
            assert any((tmp_path / "cache" / folder).rglob("*.jpg")), folder
    json_path = tmp_path / "m.json"
    result = _eval(out / "last.pth", "--data-root", data_root, "--image-cache", tmp_path / "cache")
    assert result.exit_code == 1 and "serve --image-decode reduced only" in result.output   # default: full
    result = _eval(out / "last.pth", "--data-root", data_root, "--out", json_path,
                   "--image-decode", "reduced", "--image-cache", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    metrics = json.loads(json_path.read_text())
    assert metrics["num_samples"] == 4 and metrics["flip"] is True
    assert metrics["image_decode"] == "reduced"
    assert set(metrics["per_action"]) == {"Directions", "Discussion", "Eating", "Greeting"}
    # the printed table carries the numbers written to the JSON, row by row
    table = _printed_table(result.output)
    expected = {name: (a["mpjpe_mm"], a["pa_mpjpe_mm"], a["count"]) for name, a in metrics["per_action"].items()}
    expected["All"] = (metrics["mpjpe_mm"], metrics["pa_mpjpe_mm"], metrics["num_samples"])
    assert set(table) == set(expected)
    for name, (mpjpe, pa, count) in expected.items():
        assert math.isfinite(mpjpe) and math.isfinite(pa) and 0 < pa <= mpjpe + 1e-6, (name, mpjpe, pa)
        assert table[name] == (f"{mpjpe:.2f}", f"{pa:.2f}", str(count)), (name, table[name])
    # All is the mean over samples: the count-weighted mean of the per-action rows
    rows = list(metrics["per_action"].values())
    assert sum(a["count"] for a in rows) == 4
    assert metrics["mpjpe_mm"] == pytest.approx(sum(a["mpjpe_mm"] * a["count"] for a in rows) / 4)


def _printed_table(output: str) -> dict[str, tuple[str, str, str]]:
    """The rows after the ``action MPJPE PA-MPJPE count`` header: name -> the three printed fields."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["action", "MPJPE", "PA-MPJPE", "count"])
    rows = {}
    for line in lines[start + 1:]:
        fields = line.split()
        if len(fields) == 4:
            rows[fields[0]] = tuple(fields[1:])
    return rows


def test_official_3d_layout_evaluates(data_root, tmp_path, official_state):
    path = tmp_path / "h36m-laplace-rle.pth"
    torch.save(official_state("h36m-laplace-rle.pth"), path)
    result = _eval(path, "--data-root", data_root / "h36m", "--no-flip")   # the h36m folder works too
    assert result.exit_code == 0, result.output
    assert "All" in result.output.splitlines()[-1]


def test_2d_checkpoint_to_eval_h36m_and_3d_to_eval_coco_are_refused(data_root, tmp_path):
    path_2d = save_checkpoint(tmp_path / "2d.pth", build_model(coco_config("resnet10t", input_hw=(64, 48))))
    path_3d = save_checkpoint(tmp_path / "3d.pth", build_model(h36m_config("resnet10t", input_hw=(64, 64))))
    result = _eval(path_2d, "--data-root", data_root)
    assert result.exit_code == 1 and "a 2D model; rle-eval h36m needs a 3D checkpoint" in result.output
    result = CliRunner().invoke(eval_main, ["coco", str(path_3d), "--data-root", str(data_root)])
    assert result.exit_code == 1 and "a 3D model; rle-eval coco needs a 2D checkpoint" in result.output


def test_bad_data_gives_one_line_errors(data_root, tmp_path, h36m_files):
    ckpt = save_checkpoint(tmp_path / "3d.pth", build_model(h36m_config("resnet10t", input_hw=(64, 64))))
    cases = []
    cases.append((tmp_path / "nowhere", "no such folder"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "Sample_64_test_Human36M_protocol_2.json: Human3.6M annotation file not found"))
    h36m_files.write_h36m_file(tmp_path / "wrong", h36m_files.TEST_FILE, ["s_01_act_02_subact_01_ca_01"])
    cases.append((tmp_path / "wrong", "a protocol-2 test file holds S9 and S11 only"))
    data = h36m_files.write_h36m_file(tmp_path / "nocam", h36m_files.TEST_FILE, ["s_09_act_02_subact_01_ca_01"])
    del data["images"][0]["cam_param"]
    (tmp_path / "nocam" / h36m_files.TEST_FILE).write_text(json.dumps(data))
    cases.append((tmp_path / "nocam", "has no camera parameters (cam_param with R, t, f, c)"))
    for root, message in cases:
        result = _eval(ckpt, "--data-root", root)
        assert result.exit_code == 1 and message in result.output, (root, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
