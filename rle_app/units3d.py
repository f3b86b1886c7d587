"""A 3D model's prediction in millimetres: root-relative joints and sigma for the 3D view.

The 3D model predicts (u, v) in its normalised crop frame and depth d = z / depth_range_mm
(root-relative). Weak perspective, the reference's 3D box: the crop spans ``depth_range_mm`` (2000)
at the root's depth along each of its axes, so x mm = (x px - root x px) * depth_range_mm / crop
width px, and y likewise with the crop height; that is, mm = (normalised coordinate difference) x
depth_range_mm, the same scale as depth. The crop's size comes with the prediction
(``PosePrediction.crop_wh_px``, from ``models.geometry``), at the 3D model's own input aspect.
"""
from __future__ import annotations

import numpy as np

from models.predictor import PosePrediction


def _mm_per_px(crop_px: float | np.ndarray, depth_range_mm: float) -> np.ndarray:
    """(2,) mm per image px along x, y for a crop of (w, h) px (one number: a square crop)."""
    wh = np.broadcast_to(np.asarray(crop_px, np.float64), (2,))
    return depth_range_mm / np.maximum(wh, 1e-6)


def joints_mm(pred_3d: PosePrediction, index: int, crop_px: float | np.ndarray, depth_range_mm: float,
              root: int) -> np.ndarray:
    """(K, 3) root-relative joints in mm of person ``index`` (camera frame: x right, y down, z away).

    ``crop_px``: the 3D crop's (w, h) in image px (or its side when square), e.g.
    ``pred_3d.crop_wh_px[index]``; x, y mm = (px - root px) * depth_range_mm / (w, h).
    """
    kpts = np.asarray(pred_3d.keypoints[index], np.float64)
    xy_mm = (kpts[:, :2] - kpts[root, :2]) * _mm_per_px(crop_px, depth_range_mm)
    return np.concatenate([xy_mm, kpts[:, 2:3]], axis=1)


def sigma_mm(pred_3d: PosePrediction, index: int, crop_px: float | np.ndarray, depth_range_mm: float) -> np.ndarray:
    """(K, 3) sigma of person ``index`` in mm, x/y scaled as in ``joints_mm`` (RLE's residual
    scale, not a calibrated standard deviation)."""
    sig = np.asarray(pred_3d.sigma[index], np.float64)
    return np.concatenate([sig[:, :2] * _mm_per_px(crop_px, depth_range_mm), sig[:, 2:3]], axis=1)


def person_mm(pred_3d: PosePrediction, index: int, config) -> tuple[np.ndarray, np.ndarray]:
    """(joints (K, 3), sigma (K, 3)) in mm of person ``index``, with the 3D model's ``config``
    (depth range, root joint) and the crop size the prediction carries."""
    crop = pred_3d.crop_wh_px[index]
    return (joints_mm(pred_3d, index, crop, config.depth_range_mm, config.root_index),
            sigma_mm(pred_3d, index, crop, config.depth_range_mm))
