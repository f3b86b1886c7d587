"""ONNX export and the ONNX Runtime backend: the graph against torch for official, mmpose and
project checkpoints (2D, 3D), the Predictor on real photos, the cache, auto, and a bad export."""
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from models import backends, build_model, coco_config, h36m_config, load_model, save_checkpoint
from models.export import ExportError, cached_onnx, export_onnx
from models.predictor import Predictor

K = 17


def _mmpose_checkpoint(path: Path, mobilenetv2: type, mmpose_flow) -> None:
    """An mmpose 1.x RLE file ({"meta", "state_dict"}) on the reference MobileNetV2, random weights."""
    gen = torch.Generator().manual_seed(3)
    state = {"backbone." + k: v.clone() for k, v in mobilenetv2().state_dict().items()}
    state["head.fc.weight"] = 0.01 * torch.randn(K * 4, 1280, generator=gen)
    state["head.fc.bias"] = torch.rand(K * 4, generator=gen)
    flow = "head.loss_module.flow_model."
    state.update(mmpose_flow(flow, gen))
    torch.save({"meta": {"epoch": 1}, "state_dict": state}, path)


def _checkpoint(kind: str, folder: Path, official_state, mobilenetv2, mmpose_flow) -> Path:
    if kind.startswith("official"):
        name = "coco-laplace-rle.pth" if kind == "official-2d" else "h36m-laplace-rle.pth"
        torch.save(official_state(name), folder / name)
        return folder / name
    if kind == "mmpose-mobilenetv2":
        path = folder / "td-reg_rle-8xb64-210e_coco-256x192-0123abcd_20220913.pth"
        _mmpose_checkpoint(path, mobilenetv2, mmpose_flow)
        return path
    config = coco_config("resnet10t") if kind == "project-2d" else h36m_config("resnet10t")
    return save_checkpoint(folder / f"{kind}.pth", build_model(config))


@pytest.mark.parametrize("kind", ["official-2d", "official-3d", "mmpose-mobilenetv2", "project-2d", "project-3d"])
def test_graph_gives_torch_mu_and_sigma_for_uint8_and_float_crops(tmp_path, kind, official_state, mmpose_mobilenetv2,
                                                                 mmpose_flow):
    model = load_model(_checkpoint(kind, tmp_path, official_state, mmpose_mobilenetv2, mmpose_flow))
    crops = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (4, 3, *model.config.input_hw), np.uint8))
    with torch.no_grad():
        ref = model(crops)
    assert model.config.dims == ref.mu.shape[-1] == (3 if kind.endswith("3d") else 2)
    for dtype, feed in (("uint8", crops.numpy()), ("float32", crops.numpy().astype(np.float32) / 255)):
        report = export_onnx(model, tmp_path / f"{dtype}.onnx", dtype)
        session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].type == f"tensor({'float' if dtype == 'float32' else dtype})"
        mu, sigma = session.run(["mu", "sigma"], {"crops": feed})              # batch 4: not the traced 2
        assert np.abs(mu - ref.mu.numpy()).max() < 1e-4
        assert np.abs(sigma - ref.sigma.numpy()).max() < 1e-4
        assert report.max_diff_mu < 1e-4 and report.max_diff_sigma < 1e-4
    assert not model.training                                                   # the export left it as it was


def test_onnxruntime_predictor_gives_torch_keypoints_on_real_photos(tmp_path, official_state, mmpose_mobilenetv2,
                                                                   real_coco, mmpose_flow):
    model = load_model(_checkpoint("official-2d", tmp_path, official_state, mmpose_mobilenetv2, mmpose_flow))
    eager, fast = Predictor(model), Predictor(model, backend="onnxruntime")
    assert fast.backend == "onnxruntime" and isinstance(fast.runner, backends.OnnxRuntimeRunner)
    photos = [(cv2.imread(str(path))[..., ::-1].copy(), boxes) for path, boxes in real_coco()]
    assert len(photos) == 4
    for image, boxes in photos:
        for flip in (False, True):
            a, b = eager(image, boxes, flip=flip), fast(image, boxes, flip=flip)
            assert np.ptp(a.keypoints[..., 0]) > 10                            # not a degenerate output
            assert np.abs(a.keypoints - b.keypoints).max() < 0.01              # px
            np.testing.assert_allclose(b.confidence, a.confidence, rtol=0, atol=1e-4)


def test_graph_is_cached_beside_the_checkpoint_by_hash_and_reused(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "run" / "best.pth", build_model(coco_config("resnet10t")))
    model = load_model(path)
    first = cached_onnx(model)
    assert first.parent == path.parent and first.name.startswith("best.") and first.suffix == ".onnx"
    assert len(first.name.split(".")[1]) == 12
    monkeypatch.setattr("models.export.export_onnx", lambda *a, **k: pytest.fail("exported again"))
    assert cached_onnx(load_model(path)) == first                              # same weights: same file
    other = build_model(coco_config("resnet10t"))                              # other weights: other key
    save_checkpoint(path, other)
    monkeypatch.undo()
    assert cached_onnx(load_model(path)) != first


def test_read_only_checkpoint_folder_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    from models import export
    from models.files import CacheNotWritable, ensure_writable_dir
    monkeypatch.setenv("RLE_POSE_CACHE", str(tmp_path / "cache"))
    path = save_checkpoint(tmp_path / "ro" / "m.pth", build_model(coco_config("resnet10t")))

    def read_only(folder):          # as ensure_writable_dir answers for a folder the user cannot write
        if Path(folder) == path.parent:
            raise CacheNotWritable(f"cache folder {folder} is not writable")
        return ensure_writable_dir(folder)
    monkeypatch.setattr(export, "ensure_writable_dir", read_only)
    out = cached_onnx(load_model(path))
    assert out.parent == tmp_path / "cache" / "onnx" and out.is_file()
    assert not list(path.parent.glob("*.onnx"))


def test_auto_keeps_the_faster_backend(monkeypatch, tmp_path):
    monkeypatch.setenv("RLE_POSE_CACHE", str(tmp_path))
    model = build_model(coco_config("resnet10t")).eval()
    for ort_s, expected in ((0.001, "onnxruntime"), (1.0, "torch")):
        monkeypatch.setattr(backends, "_best_time_s", lambda run, crops, repeats, t=ort_s:
                            t if isinstance(run, backends.OnnxRuntimeRunner) else 0.01)
        assert Predictor(model, backend="auto").backend == expected


class _Unexportable(torch.nn.Module):
    """A model whose forward uses an op ONNX cannot express (an eigen-decomposition)."""

    def __init__(self):
        super().__init__()
        self.config = coco_config("resnet10t")
        self.w = torch.nn.Parameter(torch.eye(2))

    def forward(self, x):
        vals = torch.linalg.eigvalsh(self.w + x.float().mean() * 0)
        mu = vals.sum() * torch.zeros(x.shape[0], K, 2)
        return type("Out", (), {"mu": mu, "sigma": mu + 0.5})()


def test_a_model_that_cannot_be_exported_is_one_line_and_auto_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("RLE_POSE_CACHE", str(tmp_path))
    with pytest.raises(ExportError, match="cannot be exported to ONNX") as err:
        export_onnx(_Unexportable(), tmp_path / "bad.onnx")
    assert "\n" not in str(err.value) and "--backend torch" in str(err.value)
    assert not list(tmp_path.glob("*bad.onnx*"))                               # nothing half-written left
    model, _ = backends.make_runner(_Unexportable(), "auto", torch.device("cpu"))
    assert isinstance(model, _Unexportable)


def test_rle_export_cli_writes_a_checked_graph(tmp_path):
    from trainer.export_cli import main
    path = save_checkpoint(tmp_path / "m.pth", build_model(h36m_config("resnet10t")))
    result = CliRunner().invoke(main, [str(path), "--out", str(tmp_path / "m.onnx"), "--input-dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "max |diff|" in result.output
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["mu", "sigma"]
    bad = CliRunner().invoke(main, [str(path), "--out", str(tmp_path / "no" / "m.onnx")])
    assert bad.exit_code == 1 and "does not exist" in bad.output
