"""Human3.6M metrics: camera maps (models.geometry), MPJPE, PA-MPJPE (incl. a mirror image), per-action summary."""
import json

import numpy as np
import pytest

from models.geometry import camera_to_pixel, pixel_depth_to_camera, world_to_camera
from trainer.metrics.h36m_eval import (H36M_ACTION_NAMES, H36M_EVAL_JOINTS, mpjpe, pa_mpjpe, parse_h36m_file_name,
                                       procrustes_align, summarize_h36m)


def _rotation(axis, angle):
    """Rodrigues' formula, written out: R = I + sin(a) [k]x + (1 - cos(a)) [k]x²."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _poses(n, k=H36M_EVAL_JOINTS, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 300, (n, k, 3)) + np.array([0, 0, 5000.0])


def test_similarity_transform_is_undone_by_procrustes():
    gt = _poses(4)
    R = _rotation([1, 2, 3], 0.7)
    pred = 1.3 * gt @ R.T + np.array([40.0, -25.0, 300.0])
    np.testing.assert_allclose(pa_mpjpe(pred, gt), 0, atol=1e-6)
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-6)
    np.testing.assert_allclose(procrustes_align(pred[1], gt[1]), gt[1], atol=1e-6)  # (K, 3) input


def test_mpjpe_matches_independent_geometry():
    gt = _poses(3)
    gt_rel = gt - gt[:, :1]
    scaled = 1.3 * gt + 77.0  # identity rotation: error_j = 0.3 * |g_j - g_root|
    np.testing.assert_allclose(mpjpe(scaled, gt), 0.3 * np.linalg.norm(gt_rel, axis=-1).mean(axis=1), rtol=1e-12)
    half_turn = gt @ _rotation([0, 0, 1], np.pi).T  # 180° about z: error_j = 2 * |(x, y)_rel|
    np.testing.assert_allclose(mpjpe(half_turn, gt), 2 * np.linalg.norm(gt_rel[..., :2], axis=-1).mean(axis=1),
                               rtol=1e-9)
    np.testing.assert_allclose(mpjpe(gt + np.array([500.0, -20.0, 1000.0]), gt), 0, atol=1e-9)  # root-relative


def _signed_volume(points):
    return np.linalg.det(np.stack([points[1] - points[0], points[2] - points[0], points[3] - points[0]]))


def test_mirror_image_is_not_aligned_by_a_reflection():
    gt = _poses(1, seed=3)[0]
    mirror = gt * np.array([-1.0, 1.0, 1.0])
    aligned = procrustes_align(mirror, gt)
    assert np.sign(_signed_volume(aligned)) == np.sign(_signed_volume(mirror)) != np.sign(_signed_volume(gt))
    err = pa_mpjpe(mirror[None], gt[None])[0]
    assert err > 10.0
    # brute force: random proper rotations with their optimal non-negative scale (a negative scale
    # would be a point reflection) never reach a smaller sum of squared errors, the quantity minimised
    sse = np.sum((aligned - gt) ** 2)
    rng = np.random.default_rng(0)
    x1, x2 = mirror - mirror.mean(0), gt - gt.mean(0)
    best = np.inf
    for _ in range(3000):
        q = rng.normal(size=4)
        w, x, y, z = q / np.linalg.norm(q)
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        rotated = x1 @ R.T
        s = max(np.sum(rotated * x2) / np.sum(rotated * rotated), 0.0)
        best = min(best, np.sum((s * rotated - x2) ** 2))
    assert sse <= best * (1 + 1e-9)
    assert sse > 0.95 * best  # and the closed form sits at the sampled optimum


def test_camera_round_trip_and_hand_values():
    R = _rotation([0, 0, 1], np.pi / 2)  # x -> y
    np.testing.assert_allclose(world_to_camera(np.array([[[200.0, 0, 0]]]), R[None], np.array([[100.0, 0, 0]])),
                               [[[0, 100.0, 0]]], atol=1e-9)
    f, c = np.array([[1000.0, 1100.0]]), np.array([[500.0, 400.0]])
    np.testing.assert_allclose(camera_to_pixel(np.array([[[100.0, -200.0, 5000.0]]]), f, c),
                               [[[500 + 100 / 5000 * 1000, 400 - 200 / 5000 * 1100]]])
    world = _poses(2, k=18)
    Rs = np.stack([_rotation([0.3, 1, 0.2], 0.4), _rotation([1, 0, 0], -0.2)])
    ts = np.array([[10.0, 20.0, -30.0], [-50.0, 0.0, 40.0]])
    cam = world_to_camera(world, Rs, ts)
    fs, cs = np.array([[1145.0, 1144.0], [1150.0, 1148.0]]), np.array([[512.0, 515.0], [508.0, 501.0]])
    px = camera_to_pixel(cam, fs, cs)
    np.testing.assert_allclose(pixel_depth_to_camera(px, cam[..., 2], fs, cs), cam, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(np.einsum("nij,nkj->nki", np.swapaxes(Rs, 1, 2), cam) + ts[:, None], world)


def test_summary_per_action_and_thorax_excluded():
    gt = _poses(6, k=18)
    pred = gt.copy()
    offsets = np.array([17.0, 34.0, 51.0, 0.0, 68.0, 85.0])
    pred[:, 5, 0] += offsets  # one non-root joint moved along x: MPJPE = offset / 17
    pred[:, 17] += 1e4  # Thorax is not scored
    metrics = summarize_h36m(pred, gt, np.array([2, 2, 3, 14, 14, 14]))
    per_sample = offsets / 17
    assert metrics.mpjpe == pytest.approx(per_sample.mean())
    assert metrics.num_samples == 6
    assert list(metrics.per_action) == ["Directions", "Discussion", "Walking"]
    assert metrics.per_action["Directions"][0] == pytest.approx(1.5) and metrics.per_action["Directions"][2] == 2
    assert metrics.per_action["Discussion"][0] == pytest.approx(3.0)
    assert metrics.per_action["Walking"][0] == pytest.approx(3.0) and metrics.per_action["Walking"][2] == 3
    expected_pa = pa_mpjpe(pred[:, :17] - pred[:, :1], gt[:, :17] - gt[:, :1])
    assert metrics.pa_mpjpe == pytest.approx(expected_pa.mean())
    assert metrics.per_action["Walking"][1] == pytest.approx(expected_pa[3:].mean())
    assert expected_pa[3] == pytest.approx(0, abs=1e-9)  # the untouched sample
    by_name = summarize_h36m(pred, gt, [H36M_ACTION_NAMES[a] for a in (2, 2, 3, 14, 14, 14)])
    assert by_name.per_action == metrics.per_action
    assert json.loads(json.dumps(metrics.to_dict()))["per_action"]["Walking"]["count"] == 3
    assert "Walking" in metrics.format_table() and "All" in metrics.format_table()


def test_bad_inputs_and_file_names():
    assert parse_h36m_file_name("s_09_act_02_subact_01_ca_01/s_09_act_02_subact_01_ca_01_000001.jpg") == (9, 2, 1, 1)
    assert parse_h36m_file_name("images/s_11_act_16_subact_02_ca_04/x.jpg") == (11, 16, 2, 4)
    with pytest.raises(ValueError, match="not a Human3.6M file name"):
        parse_h36m_file_name("foo.jpg")
    with pytest.raises(ValueError, match="unknown Human3.6M action id 1"):
        summarize_h36m(_poses(1), _poses(1), [1])
    with pytest.raises(ValueError, match="same shape"):
        mpjpe(_poses(2), _poses(3))
    assert len(H36M_ACTION_NAMES) == 15 and H36M_ACTION_NAMES[12] == "Photo"
