"""mmpose's RLE checkpoints: layout detection and key-by-key conversion to this project's names.

Two layouts, both ``{"meta": ..., "state_dict": ...}`` files:
    1.x: ``backbone.*``, ``head.fc.weight|bias`` (Linear(C, K*4)),
         ``head.loss_module.flow_model.{mask,loc,cov,s.*,t.*}``;
    0.x: ``backbone.*``, ``keypoint_head.fc.*``, ``keypoint_head.loss.flow_model.*`` (mmpose 1.x
         renames these on load and runs them with its 1.x inference; so does this project).
Backbones: mmpose's ResNet has torchvision's (= timm's) names, so its keys pass through; mmpose's
MobileNetV2 (``conv1.conv``, ``layer{1..7}.{j}.conv.{i}.conv|bn``, ``conv2``) is renamed onto timm's
``mobilenetv2_100`` here. mmpose's RealNVP equals ``models.flow.RealNVP`` (same masks, nets
2-64-64-2, Tanh on s) except that its prior N(loc, cov) is a buffer pair: it must be N(0, I), the
flow's closed-form prior, and is then dropped. Conversion errors are ``ValueError`` with one line.
"""
from __future__ import annotations

import re

import torch

# layout -> (head prefix, flow prefix) in the mmpose file
LAYOUTS = {"1.x": ("head.fc.", "head.loss_module.flow_model."),
           "0.x": ("keypoint_head.fc.", "keypoint_head.loss.flow_model.")}
FLOW_TARGET = "criterion.flow2d."
# mmpose MobileNetV2, blocks per layer (arch_settings); timm's mobilenetv2_100 has the same stages
MOBILENETV2_BLOCKS = (1, 2, 3, 4, 3, 3, 1)
# mmpose ConvModule index inside an InvertedResidual -> timm's (conv, bn) names
_EXPAND1 = {0: ("conv_dw", "bn1"), 1: ("conv_pw", "bn2")}                       # layer1 (ratio 1)
_EXPAND6 = {0: ("conv_pw", "bn1"), 1: ("conv_dw", "bn2"), 2: ("conv_pwl", "bn3")}
_MBV2_KEY = re.compile(r"layer(\d)\.(\d+)\.conv\.(\d)\.(conv|bn)\.(.+)")


def mmpose_layout(state: dict) -> str | None:
    """The mmpose layout of a plain state dict ("1.x" or "0.x"), None when it has no mmpose RLE head."""
    for name, (head, _) in LAYOUTS.items():
        if head + "weight" in state:
            return name
    return None


def mmpose_backbone(state: dict) -> str | None:
    """The timm name of mmpose's MobileNetV2 at width 1.0, None for anything else (a ResNet
    is recognised by the caller from its torchvision names); another width is a ValueError."""
    stem = state.get("backbone.conv1.conv.weight")
    if stem is None:
        return None
    last = state.get("backbone.conv2.conv.weight")
    if stem.shape[0] != 32 or last is None or last.shape[0] != 1280:
        raise ValueError(f"mmpose MobileNetV2 with stem {stem.shape[0]} / last {None if last is None else last.shape[0]} "
                         "channels: only widen_factor 1.0 (32 / 1280) maps onto timm's mobilenetv2_100")
    return "mobilenetv2_100"


def input_hw_from_name(file_name: str, default: tuple[int, int] = (256, 192)) -> tuple[int, int]:
    """The crop (H, W) an mmpose file name states (``..._coco-384x288-...``, mmpose writes H x W
    in names), else ``default``; the weights themselves do not tell (global pooling)."""
    found = re.findall(r"(?<!\d)(\d{3})x(\d{3})(?!\d)", file_name)
    return (int(found[-1][0]), int(found[-1][1])) if found else default


def _mobilenetv2_key(rest: str) -> str:
    """mmpose MobileNetV2 key (without ``backbone.``) -> timm mobilenetv2_100 key."""
    for mm, timm_name in (("conv1.conv.", "conv_stem."), ("conv1.bn.", "bn1."),
                          ("conv2.conv.", "conv_head."), ("conv2.bn.", "bn2.")):
        if rest.startswith(mm):
            return timm_name + rest[len(mm):]
    match = _MBV2_KEY.fullmatch(rest)
    if match is None:
        raise ValueError(f"unexpected mmpose MobileNetV2 key 'backbone.{rest}'")
    layer, block, module, kind, leaf = match.groups()
    names = (_EXPAND1 if layer == "1" else _EXPAND6).get(int(module))
    if names is None:
        raise ValueError(f"unexpected mmpose MobileNetV2 key 'backbone.{rest}'")
    return f"blocks.{int(layer) - 1}.{block}.{names[0] if kind == 'conv' else names[1]}.{leaf}"


def _flow_prior_is_standard(state: dict, prefix: str) -> None:
    loc, cov = state.get(prefix + "loc"), state.get(prefix + "cov")
    if loc is not None and not torch.equal(loc, torch.zeros_like(loc)):
        raise ValueError(f"{prefix}loc is not zero: this project's flow prior is N(0, I)")
    if cov is not None and not torch.equal(cov, torch.eye(len(cov), dtype=cov.dtype)):
        raise ValueError(f"{prefix}cov is not the identity: this project's flow prior is N(0, I)")


def convert_mmpose_state_dict(state: dict, layout: str, backbone: str) -> dict:
    """Rename an mmpose state dict (``layout`` "1.x"/"0.x") to this project's keys for ``backbone``.

    ``backbone.*`` stays (ResNet) or is renamed onto timm (MobileNetV2); the head's ``fc`` becomes
    ``head.fc``; the flow goes to ``criterion.flow2d`` without its N(0, I) prior buffers. Other
    keys (e.g. ``data_preprocessor.*``) are kept for the strict load to report."""
    head, flow = LAYOUTS[layout]
    _flow_prior_is_standard(state, flow)
    out = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            rest = key[len("backbone."):]
            if backbone.startswith("mobilenetv2"):
                rest = _mobilenetv2_key(rest)
            elif rest.startswith("fc."):
                continue   # a classifier left in a ResNet: unused
            out["backbone." + rest] = value
        elif key.startswith(head):
            out["head.fc." + key[len(head):]] = value
        elif key.startswith(flow):
            if key[len(flow):] not in ("loc", "cov"):
                out[FLOW_TARGET + key[len(flow):]] = value
        else:
            out[key] = value
    return out
