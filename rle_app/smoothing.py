"""Uncertainty-aware temporal smoothing of keypoints: one Kalman filter per track and joint.

Model (per track, per joint, time in frames). State s = (x, y, vx, vy) in image px and px/frame;
constant velocity with white-noise acceleration of standard deviation ``accel_px`` (px/frame^2):

    predict  s <- F s,  P <- F P F^T + Q,     F = [[I, dt I], [0, I]],
             Q = accel^2 [[dt^4/4 I, dt^3/2 I], [dt^3/2 I, dt^2 I]]   (dt = frames since last update)
    update   z = measured (x, y),  R = measurement covariance of this frame
             S = P[:2, :2] + R,  G = P[:, :2] S^-1,  s <- s + G (z - s[:2]),  P <- P - G P[:2, :]

R is the predicted covariance (``covariance_px``, RLE's sigma mapped to image px^2) times
``noise_scale``, so a confident joint (small R, gain near 1) follows the measurement at once and an
uncertain one (large R, small gain) is damped. RLE's sigma is the scale of a learned residual
distribution, not a calibrated std; ``noise_scale`` absorbs that. A depth column z (mm) gets the same
filter in 1D, with R = sigma_z^2 * noise_scale and acceleration ``accel_mm``.

A track id seen for the first time, or unseen for more than ``max_gap`` frames, starts afresh at
its measurement with zero velocity. All joints of a person are filtered at once with numpy
(batched 2x2 solves); there is no per-joint Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_UNSEEN_VAR = 1e8  # px^2 (or mm^2): the prior variance of a joint that has not been measured yet

@dataclass
class _TrackState:
    """Kalman state of one track: image-plane filter (x, y, vx, vy) and optional depth filter (z, vz)."""

    xy: np.ndarray        # (K, 4) x, y, vx, vy
    xy_cov: np.ndarray    # (K, 4, 4)
    z: np.ndarray | None  # (K, 2) z, vz, or None for 2D
    z_cov: np.ndarray | None  # (K, 2, 2)
    last_frame: int


def _transition(dt: float, dims: int, accel: float) -> tuple[np.ndarray, np.ndarray]:
    """F and Q (2*dims, 2*dims) of the constant-velocity model over ``dt`` frames."""
    eye = np.eye(dims)
    f = np.block([[eye, dt * eye], [np.zeros((dims, dims)), eye]])
    q = accel ** 2 * np.block([[dt ** 4 / 4 * eye, dt ** 3 / 2 * eye], [dt ** 3 / 2 * eye, dt ** 2 * eye]])
    return f, q


def kalman_step(s: np.ndarray, p: np.ndarray, z: np.ndarray, r: np.ndarray, dt: float,
                accel: float) -> tuple[np.ndarray, np.ndarray]:
    """One predict + update of K independent constant-velocity filters in D dimensions.

    Args:
        s: (K, 2D) state (positions, then velocities); p: (K, 2D, 2D) its covariance.
        z: (K, D) measurements; rows with a non-finite value are not used (prediction only).
        r: (K, D, D) measurement covariances.
        dt: frames since the last step; accel: acceleration std (units per frame^2).

    Returns:
        The updated (s, p), new arrays.
    """
    dims = z.shape[1]
    f, q = _transition(dt, dims, accel)
    s = s @ f.T
    p = f @ p @ f.T + q
    ok = np.isfinite(z).all(axis=1) & np.isfinite(r).all(axis=(1, 2))
    innovation = np.where(ok[:, None], z - s[:, :dims], 0.0)
    cov_s = p[:, :dims, :dims] + np.where(ok[:, None, None], r, np.eye(dims))
    gain = np.swapaxes(np.linalg.solve(cov_s, np.swapaxes(p[:, :, :dims], 1, 2)), 1, 2)  # P H^T S^-1
    gain = np.where(ok[:, None, None], gain, 0.0)
    s = s + np.einsum("kij,kj->ki", gain, innovation)
    p = p - gain @ p[:, :dims, :]
    return s, 0.5 * (p + np.swapaxes(p, 1, 2))


def _initial_state(z: np.ndarray, r: np.ndarray, velocity_std: float) -> tuple[np.ndarray, np.ndarray]:
    """State at the measurement z (K, D) with zero velocity; P = blockdiag(R, velocity_std^2 I)."""
    k, dims = z.shape
    s = np.concatenate([np.nan_to_num(z), np.zeros((k, dims))], axis=1)
    p = np.zeros((k, 2 * dims, 2 * dims))
    seen = (np.isfinite(z).all(axis=1) & np.isfinite(r).all(axis=(1, 2)))[:, None, None]
    p[:, :dims, :dims] = np.where(seen, r, _UNSEEN_VAR * np.eye(dims))
    p[:, dims:, dims:] = velocity_std ** 2 * np.eye(dims)
    return s, p


class KeypointSmoother:
    """Per-track, per-joint Kalman smoothing of keypoints with the predicted covariance as noise.

    Args:
        accel_px: process noise, std of the joint's acceleration in px/frame^2 (larger = follows
            motion faster, smooths less).
        noise_scale: multiplies the predicted covariance to give the measurement noise R.
        min_std_px: floor added to R (min_std_px^2 I), so an overconfident sigma cannot make R
            singular.
        max_gap: a track unseen for more than this many frames restarts.
        accel_mm, z_noise_mm: depth process noise, and the depth noise std used when no sigma_z is
            given.
        velocity_std: initial velocity std of a new track (px/frame, or mm/frame for depth).
    """

    def __init__(self, accel_px: float = 2.0, noise_scale: float = 1.0, min_std_px: float = 0.5,
                 max_gap: int = 5, accel_mm: float = 10.0, z_noise_mm: float = 30.0, velocity_std: float = 10.0):
        self.accel_px, self.noise_scale, self.min_std_px = accel_px, noise_scale, min_std_px
        self.max_gap, self.accel_mm, self.z_noise_mm = max_gap, accel_mm, z_noise_mm
        self.velocity_std = velocity_std
        self.reset()

    def reset(self) -> None:
        """Forget every track."""
        self._tracks: dict[int, _TrackState] = {}
        self._frame = -1

    def update(self, track_ids: np.ndarray, keypoints: np.ndarray, covariance_px: np.ndarray,
               sigma_z: np.ndarray | None = None) -> np.ndarray:
        """Filter one frame.

        Args:
            track_ids: (N,) ints, the ``BoxTracker`` ids of these people.
            keypoints: (N, K, 2|3) image px (x, y), plus root-relative depth z in mm for 3D models.
            covariance_px: (N, K, 2, 2) image px^2 (e.g. ``PosePrediction.covariance_px``).
            sigma_z: (N, K) depth scale in mm, or None to use ``z_noise_mm``.

        Returns:
            (N, K, 2|3) float64 smoothed keypoints, in the same units.
        """
        self._frame += 1
        kpts = np.asarray(keypoints, np.float64)
        cov = np.asarray(covariance_px, np.float64) * self.noise_scale + self.min_std_px ** 2 * np.eye(2)
        out = np.empty_like(kpts)
        for n, tid in enumerate(np.asarray(track_ids).reshape(-1).tolist()):
            z_var = None
            if kpts.shape[-1] == 3:
                sz = np.full(kpts.shape[1], self.z_noise_mm) if sigma_z is None else np.asarray(sigma_z[n], np.float64)
                z_var = (sz ** 2 * self.noise_scale)[:, None, None]
            out[n] = self._update_track(int(tid), kpts[n], cov[n], z_var)
        self._tracks = {t: st for t, st in self._tracks.items() if self._frame - st.last_frame <= self.max_gap}
        return out

    def _update_track(self, tid: int, kpts: np.ndarray, cov: np.ndarray, z_var: np.ndarray | None) -> np.ndarray:
        """Step (or start) one track: kpts (K, 2|3), cov (K, 2, 2), z_var (K, 1, 1) -> (K, 2|3)."""
        state = self._tracks.get(tid)
        fresh = (state is None or self._frame - state.last_frame > self.max_gap
                 or state.xy.shape[0] != kpts.shape[0] or (state.z is None) != (z_var is None))
        if fresh:
            xy, xy_cov = _initial_state(kpts[:, :2], cov, self.velocity_std)
            z, z_cov = (None, None) if z_var is None else _initial_state(kpts[:, 2:], z_var, self.velocity_std)
        else:
            dt = float(self._frame - state.last_frame)
            xy, xy_cov = kalman_step(state.xy, state.xy_cov, kpts[:, :2], cov, dt, self.accel_px)
            z, z_cov = (None, None) if z_var is None else kalman_step(state.z, state.z_cov, kpts[:, 2:], z_var,
                                                                      dt, self.accel_mm)
        self._tracks[tid] = _TrackState(xy, xy_cov, z, z_cov, self._frame)
        out = xy[:, :2] if z is None else np.concatenate([xy[:, :2], z[:, :1]], axis=1)
        never_seen = xy_cov[:, 0, 0] >= _UNSEEN_VAR  # no finite measurement yet: nothing to report
        out[never_seen] = np.nan
        return out
