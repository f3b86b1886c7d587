"""Transforms: targets land where an independent computation says; flip; half-body; 3D depth."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.config import coco_config, h36m_config
from models.skeleton import COCO17, flip_permutation
from trainer.config import AugmentConfig
from trainer.data.images import ArrayReader
from trainer.data.transforms import EvalTransform, Instance, TrainTransform, upper_body_ids

CFG = coco_config("resnet10t", input_hw=(128, 96))
NO_AUG = AugmentConfig(scale_factor=0.0, rot_prob=0.0, flip_prob=0.0, half_body_prob=0.0)
RED = (255, 0, 0)


def _scene(mark_xy=(120, 90)) -> tuple[np.ndarray, Instance]:
    """A 240x320 RGB gradient with a red 7x7 block centred on ``mark_xy``; joint 0 sits there."""
    yy, xx = np.mgrid[0:240, 0:320]
    image = np.stack([xx * 0.5, yy * 0.5, 100 + 0 * xx], -1).astype(np.uint8)
    x, y = mark_xy
    image[y - 3:y + 4, x - 3:x + 4] = RED
    joints = np.zeros((17, 2))
    joints[0] = mark_xy
    joints[1:] = [[70 + 5 * i, 60 + 8 * i] for i in range(16)]
    vis = np.full(17, 2.0)
    return image, Instance(np.array([50.0, 40.0, 170.0, 200.0]), joints, vis, (320, 240), 7, 70)


def test_upper_body_ids_from_names():
    assert upper_body_ids(COCO17.joints) == tuple(range(11))


def test_no_augmentation_lands_on_expected_pixel():
    image, inst = _scene()
    # independent: box centre (110, 120), 120 x 160 is already 3:4, x1.25 -> 150 x 200 px,
    # 96 crop px over 150 image px -> k = 0.64; crop centre (48, 64)
    k = 96 / 150
    x_crop, y_crop = (120 - 110) * k + 48, (90 - 120) * k + 64
    for transform in (TrainTransform(CFG, NO_AUG), EvalTransform(CFG)):
        s = transform(inst, ArrayReader(image), np.random.default_rng(0))
        assert s.image.shape == (128, 96, 3) and s.image.dtype == np.uint8
        assert s.target.dtype == np.float32 and s.target.shape == (17, 2) and s.weight.shape == (17, 2)
        np.testing.assert_allclose(s.target[0], [x_crop / 96 - 0.5, y_crop / 128 - 0.5], atol=1e-6)
        np.testing.assert_array_equal(s.image[round(y_crop), round(x_crop)], RED)
        np.testing.assert_allclose(s.size_px, [150, 200], atol=1e-4)
        assert (s.image_id, s.ann_id) == (7, 70) and np.all(s.weight == 1)


def test_flip_mirrors_targets_and_swaps_pairs():
    image, inst = _scene()
    vis = inst.joints_vis.copy()
    vis[1] = 0   # left_eye unlabelled: after the flip the right_eye slot (2) must carry weight 0
    inst = inst._replace(joints_vis=vis)
    plain = TrainTransform(CFG, NO_AUG)(inst, ArrayReader(image), np.random.default_rng(0))
    flipped = TrainTransform(CFG, AugmentConfig(scale_factor=0.0, rot_prob=0.0, flip_prob=1.0,
                                                half_body_prob=0.0))(inst, ArrayReader(image))
    perm = flip_permutation(COCO17.flip_pairs, 17)
    # convention: the mirrored centre maps to the crop centre, so u_flip = -u exactly
    np.testing.assert_allclose(flipped.target[:, 0], -plain.target[perm, 0], atol=1e-6)
    np.testing.assert_allclose(flipped.target[:, 1], plain.target[perm, 1], atol=1e-6)
    assert flipped.weight[2, 0] == 0 and flipped.weight[1, 0] == 1
    # crop column j of the flipped sample shows column W - j of the plain one
    diff = np.abs(flipped.image[:, 1:].astype(int) - plain.image[:, :0:-1].astype(int))
    assert diff.max() <= 1
    assert np.linalg.det(flipped.crop_from_image[:, :2]) < 0


def test_half_body_keeps_upper_or_lower_only():
    joints = np.zeros((17, 2))
    joints[:11] = [[150 + 6 * (i % 5), 20 + 4 * (i // 5)] for i in range(11)]      # head, arms
    joints[11:] = [[140 + 10 * (i % 2), 160 + 30 * (i // 2)] for i in range(6)]   # hips .. ankles
    inst = Instance(np.array([120.0, 10.0, 200.0, 240.0]), joints, np.ones(17), (320, 260))
    aug = AugmentConfig(scale_factor=0.0, rot_prob=0.0, flip_prob=0.0, half_body_prob=1.0,
                        zero_weight_outside=True)
    transform = TrainTransform(CFG, aug)
    seen = set()
    image = np.zeros((260, 320, 3), np.uint8)
    for seed in range(20):
        s = transform(inst, ArrayReader(image), np.random.default_rng(seed))
        kept = set(np.flatnonzero(s.weight[:, 0]))
        assert kept in (set(range(11)), set(range(11, 17)))
        seen.add(min(kept))
    assert seen == {0, 11}   # both halves drawn
    few = inst._replace(joints_vis=np.r_[np.ones(3), np.zeros(14)])   # <= 3 visible: no half-body
    s = transform(few, ArrayReader(image), np.random.default_rng(0))
    np.testing.assert_allclose(s.size_px, EvalTransform(CFG)(few, ArrayReader(image)).size_px)


def test_3d_depth_passes_through_flip_and_outside_rule():
    cfg = h36m_config("resnet10t", input_hw=(64, 64))
    joints = np.zeros((18, 3))
    joints[:, 0], joints[:, 1] = np.linspace(40, 80, 18), np.linspace(30, 90, 18)
    joints[:, 2] = np.linspace(-0.3, 0.3, 18)
    joints[5, 2] = 0.7   # depth outside [-0.5, 0.5]
    inst = Instance(np.array([30.0, 20.0, 90.0, 100.0]), joints, np.ones((18, 3)), (128, 128))
    aug = AugmentConfig(scale_factor=0.0, rot_prob=0.0, flip_prob=1.0, half_body_prob=0.0,
                        color_factor=0.2, occlusion=True, zero_weight_outside=True)
    s = TrainTransform(cfg, aug)(inst, ArrayReader(np.full((128, 128, 3), 90, np.uint8)),
                                 np.random.default_rng(1))
    perm = flip_permutation(cfg.flip_pairs, 18)
    np.testing.assert_allclose(s.target[:, 2], joints[perm, 2], atol=1e-6)   # not negated
    assert s.target.shape == (18, 3) and s.image.shape == (64, 64, 3)
    assert np.all(s.weight[perm == 5] == 0) and s.weight.sum() == 17 * 3


@pytest.mark.parametrize("mode", ["uniform", "clipped_normal"])
def test_random_scale_and_rotation_follow_their_distributions(mode):
    image, inst = _scene()
    aug = AugmentConfig(scale_factor=0.3, scale_mode=mode, rot_factor=30, rot_mode=mode, rot_prob=1.0,
                        flip_prob=0.0, half_body_prob=0.0)
    transform = TrainTransform(CFG, aug)
    rng = np.random.default_rng(0)
    samples = [transform(inst, ArrayReader(image), rng) for _ in range(200)]
    scales = np.array([s.size_px[0] / 150 for s in samples])
    assert 0.7 - 1e-5 <= min(scales) and max(scales) <= 1.3 + 1e-5 and np.std(scales) > 0.05
    # the angle each crop was rotated by, read back from its affine: crop_from_image = k * R(angle)
    mats = np.array([s.crop_from_image for s in samples], np.float64)
    angles = np.degrees(np.arctan2(mats[:, 1, 0], mats[:, 0, 0]))
    np.testing.assert_allclose(np.hypot(mats[:, 0, 0], mats[:, 1, 0]), 96 / (150 * scales), rtol=1e-5)
    np.testing.assert_allclose(mats[:, 0, 0], mats[:, 1, 1], atol=1e-6)   # a rotation, no shear
    assert np.all(np.abs(angles) > 1e-3) and abs(np.mean(angles)) < 6     # rot_prob 1, symmetric
    if mode == "uniform":     # uniform in [-30, 30]: std 30 / sqrt(3) = 17.3
        assert np.abs(angles).max() <= 30 + 1e-4 and np.abs(angles).max() > 28
        assert 14 < np.std(angles) < 20.5
    else:                     # 30 * N(0, 1) clipped to [-60, 60]: about a third beyond 30
        assert np.abs(angles).max() <= 60 + 1e-4 and 0.2 < np.mean(np.abs(angles) > 30) < 0.45
        assert 25 < np.std(angles) < 34
    # rot_prob 0.5: about half of the crops are not rotated at all
    half = TrainTransform(CFG, dataclasses.replace(aug, rot_prob=0.5))
    mats = np.array([half(inst, ArrayReader(image), rng).crop_from_image for _ in range(100)], np.float64)
    assert 0.3 < np.mean(np.abs(mats[:, 1, 0]) < 1e-9) < 0.7


def test_colour_gain_is_clipped_per_channel_product():
    """Colour augmentation: each channel times its own gain in [1-c, 1+c], clipped, truncated."""
    aug = AugmentConfig(color_factor=0.3, occlusion=False)
    transform = TrainTransform(coco_config("resnet10t", input_hw=(64, 48)), aug)
    crop = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    out = transform._color_and_occlusion(crop, None, None, np.random.default_rng(4))
    gains = np.random.default_rng(4).uniform(0.7, 1.3, 3)
    np.testing.assert_array_equal(out, np.clip(crop * gains, 0, 255).astype(np.uint8))
    assert out.dtype == np.uint8 and np.any(out != crop)
