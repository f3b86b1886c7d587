"""Heatmap (SimpleBaseline) model: targets, decoding, loss value, gradients, checkpoints, and the
flip test on a mirrored image. (--init-from a heatmap checkpoint: tests/trainer/test_engine.py.)"""
import numpy as np
import pytest
import torch

from models import geometry
from models.checkpoint import load_model, save_checkpoint
from models.config import PoseModelConfig, coco_config
from models.heatmap import (HeatmapPoseModel, decode_heatmaps, heatmap_hw, heatmap_targets,
                            joints_mse_loss)
from models.build import build_model
from models.predictor import Predictor, crops_for_boxes
from models.skeleton import flip_permutation

HW = (64, 48)   # input crop; heatmaps 16 x 12


def _tiny(head: str = "heatmap"):
    return build_model(coco_config("resnet10t", input_hw=HW, head=head))


def test_heatmap_size_is_a_quarter_of_the_input():
    assert heatmap_hw((256, 192)) == (64, 48) and heatmap_hw(HW) == (16, 12)


def test_target_peaks_at_the_joints_pixel_and_zero_weight_gives_zero_map():
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(3, 17, 2, generator=gen) * 0.8 - 0.4          # inside the crop
    weight = torch.ones(3, 17, 2)
    weight[1, 5] = 0
    maps, w = heatmap_targets(target, weight, (16, 12))
    assert maps.shape == (3, 17, 16, 12)
    flat = maps.reshape(3, 17, -1).argmax(-1)
    px, py = flat % 12, flat // 12
    cx, cy = (target[..., 0] + 0.5) * 12, (target[..., 1] + 0.5) * 16   # independent frame map
    keep = w > 0
    assert torch.equal(px[keep], torch.round(cx[keep]).long())
    assert torch.equal(py[keep], torch.round(cy[keep]).long())
    assert w[1, 5] == 0 and maps[1, 5].abs().max() == 0 and int(keep.sum()) == 3 * 17 - 1
    # the peak value is exp(-d^2 / (2 sigma^2)) at the nearest pixel, sigma = 2
    d2 = (px - cx) ** 2 + (py - cy) ** 2
    torch.testing.assert_close(maps.reshape(3, 17, -1).amax(-1)[keep], torch.exp(-d2 / 8)[keep])


def test_far_outside_joint_gets_weight_zero():
    target = torch.tensor([[[0.0, 0.0], [3.0, 0.0]]])
    maps, w = heatmap_targets(target, torch.ones(1, 2), (16, 12))
    assert w.tolist() == [[1.0, 0.0]] and maps[0, 1].abs().max() == 0


def test_decoding_a_target_heatmap_returns_the_joint_within_a_quarter_pixel():
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(8, 17, 2, generator=gen) * 0.7 - 0.35
    maps, _ = heatmap_targets(target, torch.ones(8, 17), (16, 12))
    mu, sigma = decode_heatmaps(maps)
    err_px = (mu - target) * torch.tensor([12.0, 16.0])                # heatmap pixels
    assert err_px.abs().max() <= 0.25 + 1e-5
    # without the quarter shift the error would reach ~0.5 px: the shift matters
    assert (err_px.abs() < 0.2).float().mean() > 0.3
    # sigma = 1 - peak, so the confidence equals the peak value
    torch.testing.assert_close(1 - sigma.mean(-1), maps.reshape(8, 17, -1).amax(-1))


def test_decoding_an_empty_heatmap_gives_the_origin_and_confidence_zero():
    mu, sigma = decode_heatmaps(torch.zeros(1, 2, 16, 12))
    assert torch.equal(mu, torch.full((1, 2, 2), -0.5)) and torch.equal(sigma, torch.ones(1, 2, 2))


def test_joints_mse_loss_matches_simplebaseline_per_joint_form():
    gen = torch.Generator().manual_seed(3)
    pred, gt = torch.rand(2, 3, 4, 5, generator=gen), torch.rand(2, 3, 4, 5, generator=gen)
    w = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    expected = 0.0
    for k in range(3):   # SimpleBaseline: 0.5 * MSELoss(pred_k * w_k, gt_k * w_k), averaged over joints
        a, b = pred[:, k].reshape(2, -1) * w[:, k:k + 1], gt[:, k].reshape(2, -1) * w[:, k:k + 1]
        expected += 0.5 * float(((a - b) ** 2).mean())
    assert float(joints_mse_loss(pred, gt, w)) == pytest.approx(expected / 3, rel=1e-6)


def test_forward_shapes_and_every_parameter_gets_a_gradient():
    model = _tiny().train()
    assert isinstance(model, HeatmapPoseModel)
    out = model(torch.randint(0, 255, (2, 3, *HW), dtype=torch.uint8))
    assert out.mu.shape == (2, 17, 2) and out.sigma.shape == (2, 17, 2)
    assert out.heatmaps.shape == (2, 17, 16, 12) and not out.mu.requires_grad
    assert out.mu.min() >= -0.5 and out.mu.max() <= 0.5
    loss = model.loss(out, torch.rand(2, 17, 2) - 0.5, torch.ones(2, 17, 2))
    loss.backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    # timm zero-initialises each residual block's last BN gamma, so a block's inner convs get an
    # exactly zero gradient at step 0; the head and the stem must get a non-zero one
    zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not [n for n in zero if n.startswith("head.") or n.startswith("backbone.conv1.")]


def test_checkpoint_round_trip_keeps_head_and_outputs(tmp_path):
    model = _tiny().eval()
    loaded = load_model(save_checkpoint(tmp_path / "hm.pth", model))
    assert isinstance(loaded, HeatmapPoseModel) and loaded.config.head == "heatmap"
    assert loaded.config == model.config
    x = torch.rand(2, 3, *HW)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.heatmaps, b.heatmaps) and torch.equal(a.mu, b.mu)


def test_config_without_head_key_is_rle_and_heatmap_is_2d_only():
    data = coco_config("resnet10t").to_dict()
    del data["head"]
    assert PoseModelConfig.from_dict(data).head == "rle"
    with pytest.raises(ValueError, match="head"):
        coco_config("resnet10t", head="heatmap", dims=3)
    with pytest.raises(ValueError, match="head"):
        coco_config("resnet10t", head="simcc")


def _mirror_case():
    """An image with two blobs, its mirror, a box and the mirrored box that gives mirrored crops."""
    rng = np.random.default_rng(4)
    image = (rng.random((120, 90, 3)) * 60).astype(np.uint8)
    image[30:70, 20:40] = (200, 80, 40)
    image[50:90, 45:60] = (40, 200, 90)
    box = np.array([[14.0, 18.0, 70.0, 101.0]])
    # The geometry maps the box centre to crop x = W/2 (not (W-1)/2), so np.fliplr's pixel mirror
    # x -> Wi - 1 - x gives the mirrored crop only when the box moves by one crop pixel (S / W
    # image px, S the enlarged box width): crop'[j] = crop[W - 1 - j] exactly.
    _, size = geometry.boxes_to_center_scale(box, HW[1] / HW[0], 1.25)
    shift = size[0, 0] / HW[1]
    wi = image.shape[1]
    box_m = np.array([[wi - 1 - box[0, 2] + shift, box[0, 1], wi - 1 - box[0, 0] + shift, box[0, 3]]])
    return image, np.ascontiguousarray(np.fliplr(image)), box, box_m


@pytest.mark.parametrize("head", ["rle", "heatmap"])
def test_flip_test_on_a_mirrored_image_gives_mirrored_keypoints(head):
    """With flip=True the Predictor is mirror-equivariant for ANY model: on the mirrored crop it
    averages the same two passes, mirrored. So keypoints on np.fliplr(image) are x -> Wi - 1 - x
    of those on the image, left/right swapped. The crops come out identical here and the keypoints
    agree to 0.0 px; the tolerance, 1e-3 px, leaves room for float32 rounding of mu (~1e-7 of
    the crop width) and for cv2 builds whose 1/32-px fixed-point sampling rounds a mirrored
    position the other way (one grey level)."""
    model = _tiny(head)
    image, image_m, box, box_m = _mirror_case()
    c, _ = crops_for_boxes(image, box, model.config)
    cm, _ = crops_for_boxes(image_m, box_m, model.config)
    assert np.abs(cm[0].astype(int) - c[0, :, ::-1].astype(int)).max() <= 1   # mirrored crops
    perm = flip_permutation(model.config.flip_pairs, 17)
    pred = Predictor(model, flip=True)(image, box)
    pred_m = Predictor(model, flip=True)(image_m, box_m)
    expected = pred.keypoints[:, perm].copy()
    expected[..., 0] = image.shape[1] - 1 - expected[..., 0]
    np.testing.assert_allclose(pred_m.keypoints, expected, atol=1e-3)
    np.testing.assert_allclose(pred_m.confidence, pred.confidence[:, perm], atol=1e-4)
    if head == "rle":   # control: without the flip test a random model is not mirror-equivariant
        plain, plain_m = Predictor(model)(image, box), Predictor(model)(image_m, box_m)
        mirrored = image.shape[1] - 1 - plain.keypoints[:, perm, 0]
        assert np.abs(plain_m.keypoints[..., 0] - mirrored).max() > 0.05
