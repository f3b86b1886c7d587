"""--init-from with mmpose checkpoints: the backbone goes through load_model's conversion (ResNet
and MobileNetV2, 1.x and 0.x layouts) and computes what mmpose's backbone computes; the report
line counts what was taken and skipped; the run keeps mmpose's conventions unless the user's
config says otherwise."""
import pytest
import torch
import torchvision
from torch import nn

from models.build import build_model
from models.checkpoint import CheckpointError
from models.config import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, OFFICIAL_MEAN_RGB, PoseModelConfig
from trainer.config import resolve_config
from trainer.init_from import init_backbone_from

LAYOUT_PREFIXES = {"1.x": ("head.fc.", "head.loss_module.flow_model."),
                   "0.x": ("keypoint_head.fc.", "keypoint_head.loss.flow_model.")}


def _reference(kind: str, mobilenetv2: type) -> nn.Module:
    """mmpose's backbone (its parameter names) with random weights and BN statistics, eval mode."""
    gen = torch.Generator().manual_seed(11)
    net = mobilenetv2() if kind == "mobilenetv2" else torchvision.models.resnet18()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = 1 + 0.1 * torch.randn(m.weight.shape, generator=gen)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
            m.running_mean = 0.1 * torch.randn(m.running_mean.shape, generator=gen)
            m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=gen)
    return net.eval()


def _write_mmpose(path, kind, layout, mobilenetv2):
    net = _reference(kind, mobilenetv2)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    channels = 1280 if kind == "mobilenetv2" else 512
    head, flow = LAYOUT_PREFIXES[layout]
    state[head + "weight"], state[head + "bias"] = torch.randn(68, channels) * 0.01, torch.zeros(68)
    state[flow + "loc"], state[flow + "cov"] = torch.zeros(2), torch.eye(2)
    torch.save({"meta": {"epoch": 210}, "state_dict": state}, path)
    return net


def _features(kind, net, x):
    if kind == "mobilenetv2":
        return net(x).mean(dim=(2, 3))
    return torch.flatten(nn.Sequential(*list(net.children())[:-1])(x), 1)   # up to the pooling


@pytest.mark.parametrize("kind,layout,timm_name", [("resnet18", "1.x", "resnet18"),
                                                   ("mobilenetv2", "0.x", "mobilenetv2_100")])
def test_init_from_an_mmpose_checkpoint_takes_its_converted_backbone(tmp_path, kind, layout, timm_name,
                                                                     mmpose_mobilenetv2):
    path = tmp_path / "td-reg_rle-8xb64-210e_coco-256x192-0123abcd_20220913.pth"
    net = _write_mmpose(path, kind, layout, mmpose_mobilenetv2)
    model = build_model(PoseModelConfig(backbone=timm_name, input_hw=(64, 48))).eval()
    report = init_backbone_from(model, str(path))
    n = len(model.backbone.state_dict())
    assert f"took {n}/{n} backbone tensors" in report and "left" not in report and "skipped" not in report
    assert f"mmpose-{layout}" in report and "\n" not in report
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x), _features(kind, net, x), rtol=1e-4, atol=1e-4)


def test_init_from_reports_tensors_of_the_wrong_shape_and_refuses_a_misfit(tmp_path, mmpose_mobilenetv2):
    path = tmp_path / "rle_res18.pth"
    _write_mmpose(path, "resnet18", "1.x", mmpose_mobilenetv2)
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"]["backbone.conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(ckpt, path)
    model = build_model(PoseModelConfig(backbone="resnet18", input_hw=(64, 48)))
    before = model.backbone.conv1.weight.detach().clone()
    report = init_backbone_from(model, str(path))
    n = len(model.backbone.state_dict())
    assert f"took {n - 1}/{n} backbone tensors; 1 skipped for their shape (first conv1.weight); " \
           "1 left at their initial values" in report
    assert torch.equal(model.backbone.conv1.weight, before)
    other = build_model(PoseModelConfig(backbone="mobilenetv2_100", input_hw=(64, 48)))
    with pytest.raises(CheckpointError, match=r"rle_res18\.pth: no tensor fits the backbone 'mobilenetv2_100' "
                                              r"\(mmpose-1\.x:rle_res18\.pth, backbone resnet18"):
        init_backbone_from(other, str(path))


def test_a_run_from_an_mmpose_checkpoint_keeps_its_conventions_unless_told_otherwise(tmp_path, mmpose_mobilenetv2):
    path = tmp_path / "rle_res18.pth"
    _write_mmpose(path, "resnet18", "1.x", mmpose_mobilenetv2)
    base = ["model.backbone=resnet18", f"init_from={path}"]
    model = resolve_config("synthetic-coco", sets=base).model
    assert (model.head_layout, model.warp, model.mean_rgb, model.std_rgb) == (
        "mmpose", "mmpose", IMAGENET_MEAN_RGB, IMAGENET_STD_RGB)
    told = resolve_config("synthetic-coco", sets=[*base, "model.head_layout=official", "model.std_rgb=[1, 1, 1]"]).model
    assert (told.head_layout, told.warp, told.mean_rgb, told.std_rgb) == (
        "official", "mmpose", IMAGENET_MEAN_RGB, (1.0, 1.0, 1.0))
    heat = resolve_config("synthetic-coco", overrides={"loss": "heatmap"}, sets=base).model
    assert (heat.head, heat.head_layout, heat.mean_rgb) == ("heatmap", "official", IMAGENET_MEAN_RGB)
    plain = resolve_config("synthetic-coco", sets=["model.backbone=resnet18"]).model
    assert (plain.head_layout, plain.warp, plain.mean_rgb) == ("official", "official", OFFICIAL_MEAN_RGB)
