import pytest
import torch

from models.checkpoint import CheckpointError, load_model, save_checkpoint
from models.config import coco_config, h36m_config
from models.build import build_model


def _same_outputs(a, b, shape):
    x = torch.rand(*shape)
    with torch.no_grad():
        oa, ob = a.eval()(x), b.eval()(x)
    torch.testing.assert_close(oa.mu, ob.mu, rtol=0, atol=0)
    torch.testing.assert_close(oa.sigma, ob.sigma, rtol=0, atol=0)


def test_project_round_trip_gives_identical_outputs(tmp_path):
    model = build_model(coco_config("resnet18", input_hw=(64, 48)))
    path = save_checkpoint(tmp_path / "m.pth", model, epoch=3)
    loaded = load_model(path)
    assert loaded.config == model.config
    _same_outputs(model, loaded, (2, 3, 64, 48))
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away


@pytest.mark.parametrize("dims", [2, 3])
def test_official_layout_loads_with_the_same_outputs(tmp_path, dims, official_layout):
    cfg = coco_config("resnet50") if dims == 2 else h36m_config("resnet50")
    model = build_model(cfg)
    state = official_layout(model)
    assert ("flow3d.mask" in state) == (dims == 3)
    torch.save(state, tmp_path / "official.pth")
    loaded = load_model(tmp_path / "official.pth")
    assert loaded.config.dims == dims and loaded.config.backbone == "resnet50"
    assert loaded.config.source == "official:official.pth"
    assert loaded.config.mean_rgb == (0.406, 0.457, 0.480)
    assert loaded.config.std_rgb == ((1.0, 1.0, 1.0) if dims == 2 else (0.225, 0.224, 0.229))
    assert loaded.config.box_factor == (1.25 if dims == 2 else 1.0)
    _same_outputs(model, loaded, (1, 3, *cfg.input_hw))


def test_ddp_prefix_and_wrapped_state_dict_load(tmp_path, official_layout):
    model = build_model(coco_config("resnet18"))
    state = {"module." + k: v for k, v in official_layout(model).items()}
    torch.save({"state_dict": state}, tmp_path / "wrapped.pth")
    assert load_model(tmp_path / "wrapped.pth").config.backbone == "resnet18"


def test_bad_files_give_one_line_errors(tmp_path, official_layout):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_model(tmp_path / "text.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="neither an rle-pose checkpoint nor an official"):
        load_model(tmp_path / "foreign.pth")
    model = build_model(coco_config("resnet18"))
    state = official_layout(model)
    del state["fc_sigma.linear.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "broken.pth")
    assert "missing head.sigma.bias" in str(info.value) and "unexpected extra.weight" in str(info.value)
    assert "\n" not in str(info.value)


def test_shape_mismatch_is_named(tmp_path, official_layout):
    model = build_model(coco_config("resnet18"))
    state = official_layout(model)
    state["fc_sigma.linear.weight"] = torch.zeros(34, 10)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="fc_sigma|head.sigma.weight has shape"):
        load_model(tmp_path / "shape.pth")
