import pytest
import torch

from models.backbone import BackboneError, create_backbone
from models.config import PoseModelConfig, coco_config, h36m_config
from models.head import NormLinear
from models.build import build_model


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv3_small_050"])
def test_shapes_and_every_parameter_gets_a_gradient(backbone):
    model = build_model(coco_config(backbone, input_hw=(64, 48))).train()
    out = model(torch.rand(2, 3, 64, 48))
    assert out.mu.shape == (2, 17, 2) and out.sigma.shape == (2, 17, 2)
    assert ((out.sigma > 0) & (out.sigma < 1)).all()
    model.loss(out, torch.rand(2, 17, 2) - 0.5, torch.ones(2, 17, 2)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad


def test_3d_model_root_relative_depth_in_eval_only():
    model = build_model(h36m_config("resnet18", input_hw=(64, 64)))
    x = torch.rand(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        raw_mu, _ = model.head(model.backbone(model.normalise(x)))
        out = model(x)
    assert out.mu.shape == (2, 18, 3)
    assert torch.all(out.mu[:, 0, 2] == 0)
    torch.testing.assert_close(out.mu[..., 2], raw_mu[..., 2] - raw_mu[:, :1, 2], atol=1e-5, rtol=0)
    assert torch.all(out.sigma >= 1e-9)


def test_norm_linear_formula():
    layer = NormLinear(5, 3)
    feats = torch.randn(4, 5)
    expected = (feats @ layer.weight.T) / feats.norm(dim=1, keepdim=True) + layer.bias
    torch.testing.assert_close(layer(feats), expected)
    torch.testing.assert_close(layer(feats * 7.0), expected)  # invariant to feature scale


def test_normalisation_uses_config_mean_and_std():
    cfg = h36m_config("resnet18")
    model = build_model(cfg)
    x = torch.full((1, 3, 8, 8), 0.5)
    got = model.normalise(x)[0, :, 0, 0]
    expected = torch.tensor([(0.5 - m) / s for m, s in zip(cfg.mean_rgb, cfg.std_rgb)])
    torch.testing.assert_close(got, expected)
    as_uint8 = torch.full((1, 3, 8, 8), 127, dtype=torch.uint8)
    expected_uint8 = torch.tensor([(127 / 255 - m) / s for m, s in zip(cfg.mean_rgb, cfg.std_rgb)])
    torch.testing.assert_close(model.normalise(as_uint8)[0, :, 0, 0], expected_uint8)


def test_unknown_backbone_and_offline_pretrained_fail_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match="unknown timm backbone 'resnet5000'"):
        create_backbone("resnet5000")
    with pytest.raises(BackboneError) as info:
        create_backbone("resnet18", pretrained=True)
    assert "\n" not in str(info.value) and "resnet18" in str(info.value)


def test_config_validation_and_round_trip():
    cfg = h36m_config("resnet18")
    assert PoseModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys: colour"):
        PoseModelConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="dims"):
        coco_config(dims=4)
    with pytest.raises(ValueError, match="outside"):
        coco_config(flip_pairs=((1, 40),))
