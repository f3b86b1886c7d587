"""rle-eval and rle-train take zoo names: served from a local HTTP server, never the internet."""
import io
import json

import torch
from click.testing import CliRunner

from models.build import build_model
from models.config import coco_config
from trainer.cli import eval_main, train_main
from trainer.data.synthetic import SyntheticSpec, write_coco


def _project_bytes(model) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": "rle-pose", "format_version": 1, "config": model.config.to_dict(),
                "model": model.state_dict()}, buffer)
    return buffer.getvalue()


def test_rle_eval_coco_by_name_equals_by_path(serve_zoo, file_server, zoo_cache, tmp_path):
    root = write_coco(tmp_path / "coco", SyntheticSpec(num_train=0, num_val=4, seed=3))
    payload = _project_bytes(build_model(coco_config("resnet10t", input_hw=(64, 48))).eval())
    serve_zoo("rle-r50-coco", payload)
    (tmp_path / "local.pth").write_bytes(payload)
    results = []
    for ckpt in ("rle-r50-coco", str(tmp_path / "local.pth")):
        out = tmp_path / f"m{len(results)}.json"
        result = CliRunner().invoke(eval_main, ["coco", ckpt, "--data-root", str(root), "--workers", "0",
                                                "--device", "cpu", "--no-flip", "--out", str(out)])
        assert result.exit_code == 0, result.output
        results.append({k: v for k, v in json.loads(out.read_text()).items() if k != "checkpoint"})
    assert results[0] == results[1] and file_server.hits == {"/zoo/coco-laplace-rle.pth": 1}


def test_rle_eval_h36m_refuses_a_2d_name_before_downloading(serve_zoo, file_server, tmp_path):
    serve_zoo("rle-r50-coco", b"never fetched")
    result = CliRunner().invoke(eval_main, ["h36m", "rle-r50-coco", "--data-root", str(tmp_path)])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "rle-r50-coco: a 2D model (coco-2d); this needs a 3D one: rle-r50-h36m" in result.output
    assert file_server.hits == {}


def test_init_from_takes_names_and_an_unknown_one_lists_the_zoo(zoo_cache, tmp_path):
    result = CliRunner().invoke(train_main, ["coco", "--synthetic", "--init-from", "rle-r51-coco",
                                             "--data-root", str(tmp_path / "d"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "--init-from rle-r51-coco: neither a file nor a known model; known: rle-r50-coco" in result.output
