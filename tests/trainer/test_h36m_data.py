"""Human3.6M + MPII data: 3D targets against an independent projection, Thorax, excluded sequences,
protocol checks, the data check, MPII's 2D-only weights and flow, the mix, and a perfect prediction
scoring MPJPE 0 through decode + back-projection."""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from models.config import h36m_config
from models.loss import RLELoss
from models.pose_model import PoseOutput
from models.predictor import decode
from trainer.config import AugmentConfig, resolve_config
from trainer.data.dataset import TopDownDataset, DatasetError
from trainer.data.h36m import H36MDataWarning, build_h36m_dataset, load_h36m_instances
from trainer.data.mpii import MixedDataset, build_mpii_dataset
from trainer.data.transforms import TrainTransform
from trainer.evaluate import h36m_camera_joints
from trainer.metrics.h36m_eval import summarize_h36m

CFG = h36m_config("resnet10t", input_hw=(64, 64))
NO_AUG = AugmentConfig(scale_factor=0.0, scale_mode="clipped_normal", rot_prob=0.0, flip_prob=0.0,
                       half_body_prob=0.0, color_factor=0.0, occlusion=False, zero_weight_outside=True)
def _cfg(root):
    return resolve_config("synthetic-h36m", sets=[f"data.data_root={root}", "model.input_hw=[64,64]"])


def test_targets_equal_an_independent_projection(tmp_path, h36m_files):
    body = h36m_files.body(np.random.default_rng(5))
    body[13] = body[0] + [0.0, -1100.0, 0.0]     # L_Wrist 1.1 m nearer the camera: d = -0.55
    data = h36m_files.write_h36m_file(tmp_path, h36m_files.TRAIN_FILE, ["s_01_act_02_subact_01_ca_01"], bodies=[body])
    inst = load_h36m_instances(tmp_path / h36m_files.TRAIN_FILE, "train")
    sample = TopDownDataset(inst, tmp_path / "h36m/images", TrainTransform(CFG, NO_AUG))[0]
    world = np.concatenate([body, (body[11] + body[14])[None] / 2])
    proj = h36m_files.project(world)
    x, y, w, h = data["annotations"][0]["bbox"]
    x1, y1 = min(x + w - 1, h36m_files.IMAGE_WH[0] - 1), min(y + h - 1, h36m_files.IMAGE_WH[1] - 1)
    side = max(x1 - x, y1 - y)                      # square crop (64x64), box factor 1.0
    centre = np.array([(x + x1) / 2, (y + y1) / 2])
    uv = (proj[:, :2] - centre) / side
    d = (proj[:, 2] - proj[0, 2]) / 2000.0
    np.testing.assert_allclose(sample.target[:, :2], uv, atol=1e-5)
    np.testing.assert_allclose(sample.target[:, 2], d, atol=1e-6)
    assert sample.target[13, 2] == pytest.approx(-0.55, abs=1e-6)
    expected = np.ones((18, 3), np.float32)
    expected[13] = 0.0                              # |d| > 0.5: all three weights zeroed
    np.testing.assert_array_equal(sample.weight, expected)


def test_thorax_is_the_shoulders_midpoint_and_excluded_sequences_are_dropped(tmp_path, h36m_files):
    names = ["s_09_act_02_subact_01_ca_01", "s_09_act_05_subact_02_ca_03", "s_09_act_10_subact_02_ca_01",
             "s_09_act_13_subact_01_ca_02", "s_11_act_05_subact_02_ca_01"]
    h36m_files.write_h36m_file(tmp_path, h36m_files.TEST_FILE, names)
    inst = load_h36m_instances(tmp_path / h36m_files.TEST_FILE, "test")
    assert [f.split("/")[0] for f in inst.image_files] == [names[0], names[4]]
    assert inst.skipped == {"excluded_sequence": 3}
    assert inst.joints.shape == (2, 18, 3) and inst.joints_cam.shape == (2, 18, 3)
    np.testing.assert_allclose(inst.joints_cam[:, 17], inst.joints_cam[:, [11, 14]].mean(1), atol=1e-9)
    assert list(inst.subjects) == [9, 11] and list(inst.actions) == [2, 5]


def test_flip_swaps_pairs_and_keeps_depth(tmp_path, h36m_files):
    h36m_files.write_h36m_file(tmp_path, h36m_files.TRAIN_FILE, ["s_01_act_02_subact_01_ca_01"])
    inst = load_h36m_instances(tmp_path / h36m_files.TRAIN_FILE, "train")
    plain = TopDownDataset(inst, tmp_path / "h36m/images", TrainTransform(CFG, NO_AUG))[0]
    flip = dataclasses.replace(NO_AUG, flip_prob=1.0)
    flipped = TopDownDataset(inst, tmp_path / "h36m/images", TrainTransform(CFG, flip))[0]
    perm = np.arange(18)
    for a, b in CFG.flip_pairs:
        perm[a], perm[b] = b, a
    np.testing.assert_allclose(flipped.target[:, 0], -plain.target[perm, 0], atol=1e-5)
    np.testing.assert_allclose(flipped.target[:, 1:], plain.target[perm, 1:], atol=1e-5)


@pytest.mark.parametrize("case, message", [
    ("train_subject_in_test", "S9 and S11 only"), ("no_test_subject", "S9 and S11 only"),
    ("test_subject_in_train", "trains on S1"), ("no_camera", "no camera parameters")])
def test_wrong_protocol_and_missing_cameras_are_one_line_errors(tmp_path, case, message, h36m_files):
    split, rel = ("train", h36m_files.TRAIN_FILE) if case == "test_subject_in_train" else ("test", h36m_files.TEST_FILE)
    names = {"train_subject_in_test": ["s_09_act_02_subact_01_ca_01", "s_01_act_02_subact_01_ca_01"],
             "no_test_subject": ["s_05_act_02_subact_01_ca_01"],
             "test_subject_in_train": ["s_01_act_02_subact_01_ca_01", "s_11_act_02_subact_01_ca_01"],
             "no_camera": ["s_09_act_02_subact_01_ca_01"]}[case]
    data = h36m_files.write_h36m_file(tmp_path, rel, names)
    if case == "no_camera":
        del data["images"][0]["cam_param"]["f"]
        (tmp_path / rel).write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message) as err:
        load_h36m_instances(tmp_path / rel, split)
    assert "\n" not in str(err.value) and str(tmp_path / rel) in str(err.value)


def test_annotations_at_fault_give_one_counted_warning(tmp_path, h36m_files):
    rng = np.random.default_rng(0)
    bodies = [h36m_files.body(rng) for _ in range(4)]
    data = h36m_files.write_h36m_file(tmp_path, h36m_files.TEST_FILE, [f"s_09_act_0{a}_subact_01_ca_01" for a in (2, 3, 4, 6)],
                           bodies=bodies)
    data["annotations"][1]["keypoints_world"][3][0] = float("nan")
    data["annotations"][2]["keypoints_world"][13] = [9000.0, 0.0, 900.0]   # wrist 9 m to the side
    (tmp_path / h36m_files.TEST_FILE).write_text(json.dumps(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inst = load_h36m_instances(tmp_path / h36m_files.TEST_FILE, "test")
    found = [w for w in caught if issubclass(w.category, H36MDataWarning)]
    assert len(found) == 1
    text = str(found[0].message)
    assert "2 annotation(s)" in text and "annotation 102 (image 2): non_finite" in text
    assert "annotation 103 (image 3): far_from_box" in text and str(tmp_path / h36m_files.TEST_FILE) in text
    assert list(inst.ann_ids) == [101, 104] and inst.skipped == {"at_fault": 2}


def test_mpii_is_2d_only_and_goes_through_the_2d_flow(tmp_path, h36m_files):
    h36m_files.write_tiny_h36m(tmp_path)
    cfg = _cfg(tmp_path)
    mpii = build_mpii_dataset(cfg)
    sample = mpii[0]
    assert sample.target.shape == (18, 3) and np.all(sample.weight[:, 2] == 0)
    missing = [7, 9, 10]          # Torso, Nose (no MPII joint), Head (head_top unlabelled here)
    assert np.all(sample.weight[missing] == 0)
    h36m = build_h36m_dataset(cfg, train=False)[0]
    weight = torch.from_numpy(np.stack([h36m.weight, sample.weight]))
    weight[0] = 1.0
    bar = torch.randn(2, 18, 3)
    loss = RLELoss(dims=3)
    log_phi = loss.log_phi(bar, weight)[..., 0]
    torch.testing.assert_close(log_phi[0], loss.flow3d.log_prob(bar[0]))
    torch.testing.assert_close(log_phi[1], loss.flow2d.log_prob(bar[1, :, :2]))


def test_mixed_set_walks_h36m_then_draws_mpii():
    mixed = MixedDataset(list(range(5)), list(range(100, 103)), seed=7)
    assert len(mixed) == 10
    assert [mixed[i] for i in range(5)] == [0, 1, 2, 3, 4]
    second = [mixed[i] for i in range(5, 10)]
    assert all(100 <= s < 103 for s in second)
    again = MixedDataset(list(range(5)), list(range(100, 103)), seed=7)
    assert [again[i] for i in range(5, 10)] == second


def test_a_perfect_prediction_scores_zero_mpjpe(tmp_path, h36m_files):
    h36m_files.write_tiny_h36m(tmp_path)
    cfg = _cfg(tmp_path)
    data = build_h36m_dataset(cfg, train=False)
    inst = data.instances
    samples = [data[i] for i in range(len(data))]
    mu = torch.from_numpy(np.stack([s.target for s in samples]))
    mu[..., 2] -= mu[:, :1, 2]                        # eval mode: depth root-relative
    mats = np.stack([s.crop_from_image for s in samples]).astype(np.float64)
    pred = decode(PoseOutput(mu, torch.full_like(mu, 0.1)), mats, cfg.model, np.zeros((len(samples), 4)))
    cam = h36m_camera_joints(pred.keypoints.astype(np.float64), inst.joints_cam[:, 0, 2], inst.f, inst.c)
    metrics = summarize_h36m(cam, inst.joints_cam, inst.actions)
    assert metrics.mpjpe < 0.05 and metrics.pa_mpjpe < 0.05   # mm (float32 crop maps)
    assert metrics.num_samples == 4


def test_preset_data_fields_fit_the_layout(h36m_files):
    cfg = resolve_config("256x192_res50_3d_h36mmpii-flow")
    assert cfg.data.train_annotation_file == h36m_files.TRAIN_FILE and cfg.data.val_annotation_file == h36m_files.TEST_FILE
    assert cfg.data.train_image_dir == cfg.data.val_image_dir == "h36m/images"
    assert cfg.model.input_hw == (256, 256) and cfg.model.box_factor == 1.0 and cfg.model.depth_range_mm == 2000
