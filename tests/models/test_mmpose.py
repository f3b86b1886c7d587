"""mmpose RLE checkpoints (1.x and 0.x layouts, ResNet and MobileNetV2) load and predict what
mmpose's own inference predicts, on real photos.

The reference below is written from mmpose's source, independently of the project's code:
``structures/bbox/transforms.py`` (bbox_xyxy2cs with padding, get_warp_matrix from three points
with cv2.getAffineTransform), ``datasets/transforms/topdown_transforms.py`` (TopdownAffine,
_fix_aspect_ratio), the data preprocessor (BGR -> RGB, ImageNet mean/std on 0-255),
``models/heads/regression_heads/rle_head.py`` (plain fc -> (K, 4), sigmoid on sigma, flip
test), ``models/utils/tta.py`` (flip_coordinates: x' = 1 - x - 1/W, pairs swapped),
``codecs/regression_label.py`` (decode: x * (W, H), score = mean(1 - sigma)) and the top-down
estimator's crop -> image step (kp / input_size * scale + center - scale / 2). Backbones:
torchvision's ResNet (mmpose's ResNet has its names) and mmpose's MobileNetV2 written out in
tests/conftest.py.
"""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from models.checkpoint import CheckpointError, load_model, save_checkpoint
from models.config import mmpose_config
from models.geometry import crop_maps_for_boxes
from models.predictor import Predictor, crops_for_boxes

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
COCO_FLIP_INDICES = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
INPUT_WH = (192, 256)   # mmpose's codec input_size (w, h)
K = 17
MAX_BOXES = 2   # people per photo (CPU time)


def _backbone(kind: str, mobilenetv2: type) -> nn.Module:
    """The reference backbone with mmpose's parameter names, ending in global average pooling
    (``mobilenetv2``: the conftest's mmpose MobileNetV2 class)."""
    if kind == "mobilenetv2":
        return nn.Sequential(mobilenetv2(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = getattr(torchvision.models, kind)()
    net.fc = nn.Identity()
    return net


def _randomise(module: nn.Module, gen: torch.Generator) -> None:
    """Seeded weights with lively BatchNorm statistics, so every layer matters."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = torch.randn(m.weight.shape, generator=gen) * (2.0 / m.weight[0].numel()) ** 0.5
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data = 1 + 0.1 * torch.randn(m.weight.shape, generator=gen)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
            m.running_mean = 0.1 * torch.randn(m.running_mean.shape, generator=gen)
            m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=gen)


# ---- mmpose's inference, from its source ----
def _get_3rd_point(a, b):
    d = a - b
    return b + np.array([-d[1], d[0]], np.float32)


def ref_warp_matrix(center, scale, output_wh):
    src_w, (dst_w, dst_h) = scale[0], output_wh
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0], src[1] = center, center + np.array([0.0, src_w * -0.5])
    src[2] = _get_3rd_point(src[0], src[1])
    dst[0], dst[1] = [dst_w * 0.5, dst_h * 0.5], np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0.0, dst_w * -0.5])
    dst[2] = _get_3rd_point(dst[0], dst[1])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def ref_center_scale(box_xyxy, padding=1.25):
    box = np.asarray(box_xyxy, np.float32)
    scale = (box[2:] - box[:2]) * padding
    center = (box[2:] + box[:2]) * 0.5
    w, h, ar = scale[0], scale[1], INPUT_WH[0] / INPUT_WH[1]
    scale = np.array([w, w / ar] if w > h * ar else [h * ar, h], np.float32)
    return center, scale


@torch.no_grad()
def ref_inference(backbone, fc_w, fc_b, image_bgr, boxes_xyxy, flip):
    """mmpose 1.x top-down RLE inference: keypoints (N, K, 2) px, sigma (N, K, 2), scores (N, K)."""
    kps, sigmas, scores = [], [], []
    for box in boxes_xyxy:
        center, scale = ref_center_scale(box)
        crop = cv2.warpAffine(image_bgr, ref_warp_matrix(center, scale, INPUT_WH), INPUT_WH, flags=cv2.INTER_LINEAR)
        rgb = crop[..., ::-1].astype(np.float32)
        x = torch.from_numpy(((rgb - MEAN) / STD).astype(np.float32)).permute(2, 0, 1)[None]

        def head(inp):
            return (backbone(inp).flatten(1) @ fc_w.T + fc_b).reshape(-1, K, 4)
        out = head(x)
        out[..., 2:] = out[..., 2:].sigmoid()
        if flip:
            out_f = head(x.flip(-1))
            out_f[:, :, 0] = 1.0 - out_f[:, :, 0] - 1.0 / INPUT_WH[0]
            out_f = out_f[:, COCO_FLIP_INDICES]
            out_f[..., 2:] = out_f[..., 2:].sigmoid()
            out = (out + out_f) * 0.5
        out = out[0].double().numpy()
        kp_crop = out[:, :2] * np.array(INPUT_WH)
        kps.append(kp_crop / np.array(INPUT_WH) * scale + center - 0.5 * scale)
        sigmas.append(out[:, 2:])
        scores.append((1 - out[:, 2:]).mean(axis=-1))
    return np.stack(kps), np.stack(sigmas), np.stack(scores)


def _mmpose_checkpoint(kind: str, layout: str, path: Path, photos,
                       mobilenetv2: type, mmpose_flow) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Write an mmpose-style checkpoint ({"meta", "state_dict"}) with random weights under mmpose's
    key names; returns the reference backbone and head weights. The head is scaled from the real
    crops' features so that keypoints spread over the crop and sigmas over (0, 1)."""
    gen = torch.Generator().manual_seed(7)
    backbone = _backbone(kind, mobilenetv2).eval()
    _randomise(backbone, gen)
    names = backbone[0].state_dict() if kind == "mobilenetv2" else backbone.state_dict()
    with torch.no_grad():
        feats = []
        for image_path, boxes in photos[:2]:
            image = cv2.imread(str(image_path))
            for box in boxes[:3]:
                c, s = ref_center_scale(box)
                crop = cv2.warpAffine(image, ref_warp_matrix(c, s, INPUT_WH), INPUT_WH)[..., ::-1]
                x = torch.from_numpy(((crop - MEAN) / STD).astype(np.float32)).permute(2, 0, 1)[None]
                feats.append(backbone(x).flatten(1))
        f = torch.cat(feats)
    # Per-instance spread of 0.05 crop widths from the features; the biases spread the joints over
    # the crop. (Random nets' pooled features differ little between people, MobileNetV2's least
    # (its ReLU6s saturate), so these weights are large and amplify float32 noise: a same-crop
    # difference of ~3e-5 in MobileNetV2's features gives ~0.01 px here. A crop differing in one
    # grey level in ~0.03% of its pixels, as this project's float64 warp gives, shows as 1-5 px.)
    direction = torch.randn(K * 4, f.shape[1], generator=gen)
    spread = (f - f.mean(0)) @ direction.T
    fc_w = direction * (0.05 / spread.std(0).clamp_min(1e-6))[:, None]
    fc_b = torch.rand(K * 4, generator=gen) * 0.6 + 0.2 - (f.mean(0) @ fc_w.T)
    fc_b.view(K, 4)[:, 2:] -= 2.0                                 # sigma logits around -2
    prefix, head, flow = ("backbone.", "head.fc.", "head.loss_module.flow_model.") if layout == "1.x" else \
        ("backbone.", "keypoint_head.fc.", "keypoint_head.loss.flow_model.")
    state = {prefix + k: v.clone() for k, v in names.items()}
    state[head + "weight"], state[head + "bias"] = fc_w, fc_b
    state.update(mmpose_flow(flow, gen))
    meta = {"epoch": 210, "mmpose_version": "1.3.2", "best_score": np.float64(0.706),
            "dataset_meta": {"sigmas": np.linspace(0.025, 0.107, K).astype(np.float32),
                             "flip_indices": COCO_FLIP_INDICES, "dataset_name": "coco"}}
    torch.save({"meta": meta, "state_dict": state}, path)
    return backbone, fc_w, fc_b


CASES = [("resnet50", "1.x", "resnet50"), ("resnet50", "0.x", "resnet50"),
         ("mobilenetv2", "1.x", "mobilenetv2_100"), ("mobilenetv2", "0.x", "mobilenetv2_100")]


@pytest.mark.parametrize("kind,layout,timm_name", CASES)
def test_mmpose_checkpoint_predicts_what_mmpose_predicts(tmp_path, kind, layout, timm_name, mmpose_mobilenetv2, real_coco, mmpose_flow):
    photos = [(path, boxes[:MAX_BOXES]) for path, boxes in real_coco()]
    path = tmp_path / "td-reg_rle-8xb64-210e_coco-256x192-0123abcd_20220913.pth"
    backbone, fc_w, fc_b = _mmpose_checkpoint(kind, layout, path, photos, mmpose_mobilenetv2, mmpose_flow)
    model = load_model(path)
    assert (model.config.backbone, model.config.head_layout, model.config.warp, model.config.input_hw) == (
        timm_name, "mmpose", "mmpose", (256, 192))
    assert model.config.source.startswith(f"mmpose-{layout}:")
    predictor = Predictor(model)
    for image_path, boxes in photos:
        image_bgr = cv2.imread(str(image_path))
        for flip in (False, True):
            ours = predictor(np.ascontiguousarray(image_bgr[..., ::-1]), boxes, flip=flip)
            kp, sigma, score = ref_inference(backbone, fc_w, fc_b, image_bgr, boxes, flip)
            assert (np.ptp(kp[0], axis=0) > 0.2 * ref_center_scale(boxes[0])[1]).all()   # spread over the crop
            assert 0.01 < sigma.min() and sigma.max() < 0.9                              # not saturated
            np.testing.assert_allclose(ours.keypoints, kp, rtol=0, atol=0.05)
            np.testing.assert_allclose(ours.confidence, score, rtol=0, atol=1e-4)
            scales = np.stack([ref_center_scale(b)[1] for b in boxes])[:, None, :]
            np.testing.assert_allclose(ours.sigma / scales, sigma, rtol=0, atol=1e-4)


def test_mmpose_warp_gives_mmpose_crops_bit_for_bit(real_coco):
    photos = [(path, boxes[:MAX_BOXES]) for path, boxes in real_coco()]
    rng = np.random.default_rng(5)
    config = mmpose_config("resnet18")
    assert config.warp == "mmpose"
    for image_path, boxes in photos:
        image_bgr = cv2.imread(str(image_path))
        h, w = image_bgr.shape[:2]
        xy = rng.uniform(0, 0.6, (3, 2)) * (w, h)
        boxes = np.concatenate([boxes, np.concatenate([xy, xy + rng.uniform(20.3, 0.4 * w, (3, 2))], 1)])
        crops, mats = crops_for_boxes(np.ascontiguousarray(image_bgr[..., ::-1]), boxes, config)
        official = crop_maps_for_boxes(boxes, config.input_hw, config.box_factor, "official")
        for box, crop, mat, mat_official in zip(boxes, crops, mats, official):
            ref_mat = ref_warp_matrix(*ref_center_scale(box), INPUT_WH)
            np.testing.assert_array_equal(mat, ref_mat)
            ref_crop = cv2.warpAffine(image_bgr, ref_mat, INPUT_WH, flags=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(crop[..., ::-1], ref_crop)
            np.testing.assert_allclose(mat_official, ref_mat, rtol=0, atol=1e-3)   # the same similarity


def test_mmpose_flow_is_the_same_density_and_conventions_survive_a_round_trip(tmp_path, mmpose_mobilenetv2, real_coco, mmpose_flow):
    photos = [(path, boxes[:MAX_BOXES]) for path, boxes in real_coco()]
    path = tmp_path / "mobilenetv2_rle_coco_256x192.pth"
    _mmpose_checkpoint("mobilenetv2", "1.x", path, photos, mmpose_mobilenetv2, mmpose_flow)
    state = torch.load(path, weights_only=False)["state_dict"]
    model = load_model(path)
    prefix = "head.loss_module.flow_model."
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(3))
    z, log_det = x, torch.zeros(32)                    # mmpose RealNVP.backward_p + MultivariateNormal prior
    for i in reversed(range(6)):
        m = state[prefix + "mask"][i]

        def net(kind, h, i=i):
            for j in (0, 2, 4):
                h = h @ state[f"{prefix}{kind}.{i}.{j}.weight"].T + state[f"{prefix}{kind}.{i}.{j}.bias"]
                h = nn.functional.leaky_relu(h) if j < 4 else h
            return torch.tanh(h) if kind == "s" else h
        s, t = net("s", m * z) * (1 - m), net("t", m * z) * (1 - m)
        z = (1 - m) * (z - t) * torch.exp(-s) + m * z
        log_det = log_det - s.sum(1)
    prior = torch.distributions.MultivariateNormal(state[prefix + "loc"], state[prefix + "cov"])
    with torch.no_grad():
        torch.testing.assert_close(model.criterion.flow2d.log_prob(x), prior.log_prob(z) + log_det, rtol=1e-5, atol=1e-5)
    # saved as a project checkpoint, the mmpose conventions come back with it
    again = load_model(save_checkpoint(tmp_path / "again.pth", model))
    assert again.config == model.config and again.config.head_layout == "mmpose"
    images = torch.rand(2, 3, 256, 192)
    with torch.no_grad():
        torch.testing.assert_close(again(images).mu, model(images).mu, rtol=0, atol=0)


def test_mmpose_name_gives_the_input_size_and_a_nonstandard_prior_is_refused(tmp_path, mmpose_mobilenetv2, real_coco, mmpose_flow):
    photos = [(path, boxes[:MAX_BOXES]) for path, boxes in real_coco()]
    path = tmp_path / "td-reg_res152_rle-8xb64-210e_coco-384x288-83f9ea47_20220913.pth"
    _mmpose_checkpoint("mobilenetv2", "1.x", path, photos, mmpose_mobilenetv2, mmpose_flow)
    assert load_model(path).config.input_hw == (384, 288)
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"]["head.loss_module.flow_model.loc"] = torch.ones(2)
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"^bad\.pth: .*loc is not zero") as info:
        load_model(tmp_path / "bad.pth")
    assert "\n" not in str(info.value)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_foreign_objects_in_meta_are_refused_unexecuted(tmp_path):
    marker = tmp_path / "executed"
    payload = _Payload()
    payload.marker = marker
    torch.save({"meta": {"hook": payload}, "state_dict": {"head.fc.weight": torch.zeros(68, 8)}}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"evil\.pth: holds a pickled '(posix|nt)\.system', which is not loaded") as info:
        load_model(tmp_path / "evil.pth")
    assert "\n" not in str(info.value)
    assert not marker.exists()
