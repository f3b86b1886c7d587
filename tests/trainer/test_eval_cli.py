"""rle-eval's checks before and after the run (an untrained tiny model on generated COCO data):
output folders checked first, metrics printed before a write that fails, truncated JPEGs counted,
an image cache inside the image folder refused; ``truncated_jpegs`` against hand-cut files."""
import errno
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import models.files
from models.build import build_model
from models.checkpoint import save_checkpoint
from models.config import PoseModelConfig
from trainer import evaluate
from trainer.cli import eval_main, train_main
from trainer.data.images import cache_overlaps_images, truncated_jpegs
from trainer.data.synthetic import SyntheticSpec, write_coco


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"), SyntheticSpec(num_train=2, num_val=3, seed=11))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = build_model(PoseModelConfig(backbone="resnet10t", input_hw=(64, 48)))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", model)


def _eval(ckpt, root, *extra):
    return CliRunner().invoke(eval_main, ["coco", str(ckpt), "--data-root", str(root), "--workers", "0",
                                          "--device", "cpu", "--no-flip", *extra])


def _last_line_error(result, *parts):
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error:") and all(p in last for p in parts), last


@pytest.mark.parametrize("option", ["--out", "--results"])
def test_an_output_into_a_missing_folder_fails_before_the_evaluation(ckpt, data_root, tmp_path, monkeypatch, option):
    calls = []
    monkeypatch.setattr(evaluate, "evaluate_coco_loader", lambda *a, **k: calls.append(1))
    result = _eval(ckpt, data_root, option, str(tmp_path / "no" / "such" / "m.json"))
    _last_line_error(result, f"{option} ", "does not exist; create it first")
    assert len(result.output.strip().splitlines()) == 1 and calls == []


def test_a_failed_metrics_write_keeps_the_printed_metrics(ckpt, data_root, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(models.files, "write_json_atomic", full)
    result = _eval(ckpt, data_root, "--out", str(tmp_path / "m.json"))
    _last_line_error(result, "cannot write (No space left on device); the metrics are printed above")
    assert any(line.split()[:2] == ["AP", "AP50"] for line in result.output.splitlines())
    assert not (tmp_path / "m.json").exists()


def test_truncated_jpegs_are_counted_in_one_warning_and_evaluated(ckpt, data_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(data_root, root)
    images = sorted((root / "images" / "val2017").glob("*.jpg"))
    data = images[0].read_bytes()
    images[0].write_bytes(data[: len(data) // 2])
    result = _eval(ckpt, root)
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "truncated JPEGs" in line]
    assert len(warning) == 1 and f"1 of {len(images)} images" in warning[0] and str(images[0]) in warning[0]


def test_truncated_jpegs_finds_only_cut_jpeg_files(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    whole = cv2.imencode(".jpg", image)[1].tobytes()
    files = {"whole.jpg": whole, "cut.jpg": whole[:-300], "tail_junk.jpg": whole + b"\0" * 100,
             "image.png": cv2.imencode(".png", image)[1].tobytes()[:-20]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert truncated_jpegs([tmp_path / n for n in [*files, "missing.jpg"]]) == [tmp_path / "cut.jpg"]


def test_an_image_cache_in_the_image_folder_is_refused(ckpt, data_root, tmp_path):
    images = data_root / "images" / "val2017"
    assert cache_overlaps_images(images, images) and cache_overlaps_images(images, images / "x")
    assert not cache_overlaps_images(images, data_root / "cache" / "images" / "val2017")
    for cache in (images, data_root):     # copies nested in it, or over the originals themselves
        result = _eval(ckpt, data_root, "--image-decode", "reduced", "--image-cache", str(cache))
        _last_line_error(result, f"--image-cache {cache}", "inside the image folder")
        assert not (images / "images").exists()
    result = CliRunner().invoke(train_main, ["coco", "--data-root", str(data_root), "--out", str(tmp_path / "r"),
                                             "--image-cache", str(data_root / "images" / "train2017")])
    _last_line_error(result, "inside the image folder")


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "tpu:x"])
def test_an_unavailable_device_is_one_line_in_train_and_eval(ckpt, data_root, tmp_path, monkeypatch, device):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # as on a machine without a GPU
    result = CliRunner().invoke(eval_main, ["coco", str(ckpt), "--data-root", str(data_root), "--device", device])
    _last_line_error(result, f"--device {device}: ")
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(train_main, ["coco", "--synthetic", "--data-root", str(data_root),
                                             "--out", str(tmp_path / "r"), "--device", device])
    _last_line_error(result, f"--device {device}: ")
