"""rle_app/smoothing.py: the Kalman keypoint smoother against a scalar reference and on tracks."""
import numpy as np
import pytest

from rle_app.smoothing import KeypointSmoother


def _diag_cov(sigma_px: np.ndarray) -> np.ndarray:
    """(..., K) sigmas -> (..., K, 2, 2) isotropic covariances."""
    return np.asarray(sigma_px, float)[..., None, None] ** 2 * np.eye(2)


def scalar_kalman(z: np.ndarray, r: float, accel: float, velocity_std: float) -> np.ndarray:
    """Textbook 1D constant-velocity Kalman filter, one measurement per frame (the reference)."""
    f = np.array([[1.0, 1.0], [0.0, 1.0]])
    q = accel ** 2 * np.array([[0.25, 0.5], [0.5, 1.0]])
    s, p, out = np.array([z[0], 0.0]), np.diag([r, velocity_std ** 2]), [z[0]]
    for zt in z[1:]:
        s, p = f @ s, f @ p @ f.T + q
        gain = p[:, 0] / (p[0, 0] + r)
        s = s + gain * (zt - s[0])
        p = p - np.outer(gain, p[0])
        out.append(s[0])
    return np.array(out)


def test_matches_a_scalar_kalman_filter_per_axis():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=5.0, size=(30, 3, 2)) + np.arange(30)[:, None, None]
    sigma = np.array([1.0, 4.0, 12.0])
    smoother = KeypointSmoother(accel_px=1.5, min_std_px=0.0, velocity_std=3.0)
    out = np.stack([smoother.update([7], z[t][None], _diag_cov(sigma)[None])[0] for t in range(30)])
    for k in range(3):
        for axis in range(2):
            ref = scalar_kalman(z[:, k, axis], sigma[k] ** 2, 1.5, 3.0)
            assert out[:, k, axis] == pytest.approx(ref, rel=1e-9, abs=1e-9)


def test_smoothed_error_is_below_the_raw_error_on_a_noisy_track():
    rng = np.random.default_rng(1)
    t = np.arange(200)
    truth = np.stack([150 + 1.5 * t + 30 * np.sin(t / 15), 240 + 20 * np.cos(t / 11)], -1)
    truth = np.repeat(truth[:, None], 17, axis=1)                       # (T, K, 2)
    sigma = np.linspace(2.0, 12.0, 17)
    meas = truth + rng.normal(size=truth.shape) * sigma[None, :, None]
    smoother = KeypointSmoother(accel_px=1.0)
    out = np.stack([smoother.update([0], meas[i][None], _diag_cov(sigma)[None])[0] for i in range(len(t))])
    raw_rmse = np.sqrt(((meas - truth) ** 2).sum(-1).mean(0))
    smooth_rmse = np.sqrt(((out - truth) ** 2).sum(-1).mean(0))
    assert (smooth_rmse < raw_rmse).all()
    gain = smooth_rmse / raw_rmse
    assert gain[-1] < gain[0]                               # the noisiest joint gains the most
    assert smooth_rmse.mean() < 0.75 * raw_rmse.mean()


def test_confident_joint_follows_a_step_fast_and_uncertain_one_slowly():
    smoother = KeypointSmoother(accel_px=2.0, min_std_px=0.0, velocity_std=10.0)
    cov = _diag_cov(np.array([[1.0, 30.0]]))                           # sigma 1 px and 30 px
    history = []
    for frame in range(28):
        kpts = np.zeros((1, 2, 2))
        kpts[..., 0] = 0.0 if frame < 20 else 50.0                      # a 50 px step at frame 20
        history.append(smoother.update([3], kpts, cov)[0, :, 0])
    after = np.array(history)[20:]
    # 1, 2, 3 frames after the step: sigma 1 px is at 42.7, 54.5, 52.8 px; sigma 30 px at 15.3, 27.8, 37.8
    assert after[:3, 0] == pytest.approx([42.71, 54.51, 52.79], abs=0.01)
    assert after[:3, 1] == pytest.approx([15.28, 27.83, 37.77], abs=0.01)
    assert abs(after[1, 0] - 50.0) < 5.0 and after[1, 1] < 30.0
    assert np.abs(after[4:, 0] - 50.0).max() < 0.5                      # settled
    z = np.r_[np.zeros(20), np.full(8, 50.0)]                           # the scalar reference agrees
    assert after[:, 1] == pytest.approx(scalar_kalman(z, 30.0 ** 2, 2.0, 10.0)[20:], abs=1e-9)


def test_new_track_id_and_long_gap_reset_the_filter():
    smoother = KeypointSmoother(max_gap=3)
    cov = _diag_cov(np.full((1, 1), 20.0))
    for _ in range(5):
        smoother.update([0], np.zeros((1, 1, 2)), cov)
    jump = np.full((1, 1, 2), 100.0)
    assert smoother.update([0], jump, cov)[0, 0, 0] < 60.0              # same track: damped
    assert smoother.update([1], jump, cov)[0, 0].tolist() == [100.0, 100.0]   # new id: starts at z
    for _ in range(4):
        smoother.update([1], jump, cov)                                 # track 0 unseen for 5 frames
    assert smoother.update([0], np.zeros((1, 1, 2)), cov)[0, 0].tolist() == [0.0, 0.0]


def test_depth_is_smoothed_with_sigma_z_and_missing_joints_are_nan():
    smoother = KeypointSmoother(accel_mm=5.0)
    cov = _diag_cov(np.full((1, 2), 2.0))
    kpts = np.zeros((1, 2, 3))
    kpts[0, 1] = np.nan                                                 # joint 1 never measured
    for _ in range(5):
        out = smoother.update([0], kpts, cov, sigma_z=np.array([[5.0, 5.0]]))
    kpts[0, 0, 2] = 100.0
    sharp = smoother.update([0], kpts, cov, sigma_z=np.array([[1.0, 1.0]]))[0, 0, 2]
    assert out.shape == (1, 2, 3) and np.isnan(out[0, 1]).all()
    assert 90.0 < sharp <= 100.0
    smoother.reset()
    for _ in range(5):
        smoother.update([0], np.zeros((1, 2, 3)), cov, sigma_z=np.array([[200.0, 200.0]]))
    vague = smoother.update([0], kpts, cov, sigma_z=np.array([[200.0, 200.0]]))[0, 0, 2]
    assert vague < 20.0
