"""Drawing poses: skeletons, uncertainty ellipses, a 3D figure. Pure functions of numpy arrays.

Ellipse convention. The predicted per-keypoint covariance ``cov`` (2x2, image px^2) is treated as
the covariance of a Gaussian. The region {d : d^T cov^-1 d <= r^2} holds a fraction ``level`` of
that Gaussian's mass when r^2 is the ``level`` quantile of chi^2 with 2 degrees of freedom:
r = sqrt(-2 ln(1 - level)) (r = 1.515 for 68.27 %, 2.448 for 95 %). Its semi-axes are
r * sqrt(eigenvalues of cov) along the eigenvectors; ``ellipse_scale`` further multiplies r.
RLE's sigma is the scale of a learned residual distribution (the flow's), not a calibrated
standard deviation, so the stated level is nominal: the ellipse covers ``level`` of the errors
only if sigma happens to be calibrated (``trainer/metrics/calibration.py`` measures it).

Colours are RGB: left-side joints orange, right-side blue, midline green (from joint names
starting ``left_``/``l_`` or ``right_``/``r_``); ellipse outlines go red -> yellow -> green with
confidence. Ellipses are outlines; only small ones (semi-major axis up to ``ELLIPSE_FILL_MAX_FRAC``
of the shorter image side) get a light fill, so large sigmas never tint the photo. An
``ellipse_scale`` of 0 draws no ellipses.

Text (``rle_app.draw_text``): FPS top right (the UI's image label sits top left); the legend and
the hidden-joints notice bottom left, wrapped to the frame's width.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
from matplotlib.figure import Figure

from rle_app.draw_text import draw_lines_bottom_left, draw_text, text_width

if TYPE_CHECKING:
    from rle_app.pipeline import FramePoses

LEFT_RGB, RIGHT_RGB, MID_RGB = (255, 140, 0), (30, 144, 255), (50, 205, 50)
BOX_RGB = (255, 255, 255)
ELLIPSE_FILL_ALPHA = 0.15
ELLIPSE_FILL_MAX_FRAC = 1 / 16  # larger ellipses are outline only
ELLIPSE_LEVEL = 0.6827  # the app's nominal Gaussian mass inside a drawn ellipse
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel centres and axes (1/16 px)


def ellipse_radius(level: float) -> float:
    """Mahalanobis radius r whose 2D Gaussian ellipse holds ``level`` of the mass: sqrt(-2 ln(1-level))."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"ellipse_level must be in (0, 1), got {level}")
    return float(np.sqrt(-2.0 * np.log1p(-level)))


def ellipse_params(cov: np.ndarray, level: float = 0.6827, scale: float = 1.0) -> tuple[tuple[float, float], float]:
    """Semi-axes and rotation of the ``level`` ellipse of a 2x2 covariance (image px^2).

    Returns ((a, b), angle_deg): a >= b semi-axes in px (a along the major eigenvector), and the
    major axis' angle from the image x axis in degrees, in (-90, 90], measured in image
    coordinates (y down, so positive angles turn clockwise on screen, as ``cv2.ellipse``).
    """
    axes, angle = ellipse_params_batch(np.asarray(cov, np.float64).reshape(1, 2, 2), level, scale)
    angle = float(angle[0])
    angle = angle - 180.0 if angle > 90.0 else angle + 180.0 if angle <= -90.0 else angle
    return (float(axes[0, 0]), float(axes[0, 1])), angle


def ellipse_params_batch(cov: np.ndarray, level: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``ellipse_params``: cov (..., 2, 2) -> axes (..., 2) px, angle_deg (...)."""
    evals, evecs = np.linalg.eigh(np.asarray(cov, np.float64))
    axes = ellipse_radius(level) * scale * np.sqrt(np.clip(evals[..., ::-1], 0.0, None))
    return axes, np.degrees(np.arctan2(evecs[..., 1, 1], evecs[..., 0, 1]))


def joint_sides(joint_names: Sequence[str] | None, num_joints: int) -> np.ndarray:
    """(K,) int: +1 left, -1 right, 0 midline (or unknown), from the names' prefixes."""
    if joint_names is None:
        return np.zeros(num_joints, np.int64)
    names = [n.lower() for n in joint_names]
    return np.array([1 if n.startswith(("left_", "l_")) else -1 if n.startswith(("right_", "r_")) else 0
                     for n in names], np.int64)


def side_colour(side: int) -> tuple[int, int, int]:
    return LEFT_RGB if side > 0 else RIGHT_RGB if side < 0 else MID_RGB


def confidence_colour(conf: float) -> tuple[int, int, int]:
    """Red (0) -> yellow (0.5) -> green (1), RGB."""
    c = float(np.clip(conf, 0.0, 1.0))
    return (255, int(255 * 2 * c), 0) if c < 0.5 else (int(255 * 2 * (1 - c)), 255, 0)


def _fx(value) -> int:
    return int(round(float(value) * (1 << _SHIFT)))


def _draw_ellipses(canvas: np.ndarray, centres: np.ndarray, axes: np.ndarray, angles: np.ndarray,
                   conf: np.ndarray, colours: list, thickness: int = 1) -> None:
    """Light fills of the small ellipses (one blend over their bounding rectangle), then opaque
    outlines of all, in place. Ellipses with a semi-major axis above ``ELLIPSE_FILL_MAX_FRAC`` of the
    shorter image side are outline only."""
    if len(centres) == 0:
        return
    h, w = canvas.shape[:2]
    small = axes[:, 0] <= ELLIPSE_FILL_MAX_FRAC * min(h, w)
    if small.any():
        reach = axes[small, 0] + 2
        x0, y0 = np.clip(np.floor((centres[small] - reach[:, None]).min(0)), 0, [w, h]).astype(int)
        x1, y1 = np.clip(np.ceil((centres[small] + reach[:, None]).max(0)) + 1, 0, [w, h]).astype(int)
        if x1 > x0 and y1 > y0:
            roi = canvas[y0:y1, x0:x1]
            overlay = roi.copy()
            for i in np.flatnonzero(small):
                (cx, cy), (a, b) = centres[i] - [x0, y0], axes[i]
                cv2.ellipse(overlay, (_fx(cx), _fx(cy)), (_fx(a), _fx(b)), float(angles[i]), 0, 360, colours[i],
                            -1, cv2.LINE_AA, _SHIFT)
            cv2.addWeighted(overlay, ELLIPSE_FILL_ALPHA, roi, 1.0 - ELLIPSE_FILL_ALPHA, 0.0, dst=roi)
    for (cx, cy), (a, b), ang, c in zip(centres, axes, angles, conf):
        cv2.ellipse(canvas, (_fx(cx), _fx(cy)), (_fx(a), _fx(b)), float(ang), 0, 360,
                    confidence_colour(c), thickness, cv2.LINE_AA, _SHIFT)


def hidden_joints(keypoints: np.ndarray, confidence: np.ndarray, conf_threshold: float) -> tuple[int, int]:
    """(joints hidden by the threshold, joints with finite keypoints), over all people."""
    conf = np.asarray(confidence, np.float64)
    kpts = np.asarray(keypoints, np.float64)
    finite = np.isfinite(kpts.reshape(*conf.shape, kpts.shape[-1])).all(-1)
    return int((finite & (conf < conf_threshold)).sum()), int(finite.sum())


def hidden_notice(hidden: int, total: int, conf_threshold: float) -> str:
    """The line shown when joints are hidden ("" when none is)."""
    if hidden == 0:
        return ""
    return (f"{hidden} of {total} joints hidden (confidence below {conf_threshold:.2f}): "
            "lower the confidence threshold slider to show them")


def _draw_person(canvas: np.ndarray, kpts: np.ndarray, visible: np.ndarray, edges, sides: np.ndarray,
                 radius: int, thickness: int) -> None:
    """Skeleton lines between visible joints, then joint dots; one person, in place."""
    for i, j in edges:
        if visible[i] and visible[j]:
            side = sides[i] if sides[i] == sides[j] else 0
            cv2.line(canvas, (_fx(kpts[i, 0]), _fx(kpts[i, 1])), (_fx(kpts[j, 0]), _fx(kpts[j, 1])),
                     side_colour(side), thickness, cv2.LINE_AA, _SHIFT)
    for k in np.flatnonzero(visible):
        cv2.circle(canvas, (_fx(kpts[k, 0]), _fx(kpts[k, 1])), radius << _SHIFT, side_colour(sides[k]),
                   -1, cv2.LINE_AA, _SHIFT)


def draw_poses(image_rgb: np.ndarray, keypoints: np.ndarray, confidence: np.ndarray,
               covariance_px: np.ndarray | None, edges: Sequence[tuple[int, int]],
               boxes_xyxy: np.ndarray | None = None, conf_threshold: float = 0.3, ellipse_scale: float = 1.0,
               ellipse_level: float = 0.6827, fps: float | None = None, labels: Sequence[str] | None = None,
               joint_names: Sequence[str] | None = None) -> np.ndarray:
    """Draw people on a copy of an RGB image.

    Args:
        image_rgb: (H, W, 3) uint8 RGB; not modified.
        keypoints: (N, K, 2|3) image px (x right, y down); a third column (depth) is ignored.
        confidence: (N, K) in [0, 1]; joints below ``conf_threshold`` are not drawn at all (nor their
            edges or ellipses); a line at the bottom says how many are hidden that way.
        covariance_px: (N, K, 2, 2) image px^2, or None for no ellipses. Ellipses hold ``level`` of a
            Gaussian with this covariance, radius times ``ellipse_scale`` (module docstring; the
            level is nominal since RLE's sigma is not a calibrated std); ``ellipse_scale`` 0: none.
        edges: skeleton (i, j) joint pairs; joint_names: K names, to colour left/right.
        boxes_xyxy: (N, 4) image px person boxes, or None; labels: N strings drawn on the boxes.
        fps: frames per second shown in the top-right corner, or None.

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    canvas = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    kpts = np.asarray(keypoints, np.float64)
    kpts = kpts.reshape(len(kpts), kpts.shape[-2] if kpts.ndim == 3 else -1, kpts.shape[-1])[..., :2]  # N may be 0
    conf = np.asarray(confidence, np.float64).reshape(kpts.shape[:2])
    visible = np.isfinite(kpts).all(-1) & (conf >= conf_threshold)
    sides = joint_sides(joint_names, kpts.shape[1])
    unit = max(1, round(max(canvas.shape[:2]) / 640))  # line widths grow with the image
    if boxes_xyxy is not None:
        for n, box in enumerate(np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)):
            cv2.rectangle(canvas, (_fx(box[0]), _fx(box[1])), (_fx(box[2]), _fx(box[3])), BOX_RGB, unit,
                          cv2.LINE_8, _SHIFT)
            if labels is not None and n < len(labels):
                draw_text(canvas, str(labels[n]), (int(box[0]) + 4, max(int(box[1]) - 6, 14 * unit)),
                           0.45 * unit, unit)
    ellipses = covariance_px is not None and ellipse_scale > 0
    if ellipses and visible.any():
        cov = np.asarray(covariance_px, np.float64)[visible]
        axes, angles = ellipse_params_batch(cov, ellipse_level, ellipse_scale)
        colours = [side_colour(s) for s in np.broadcast_to(sides, visible.shape)[visible]]
        _draw_ellipses(canvas, kpts[visible], axes, angles, conf[visible], colours, unit)
    for n in range(len(kpts)):
        _draw_person(canvas, kpts[n], visible[n], edges, sides, radius=2 * unit, thickness=2 * unit)
    if fps is not None:
        text = f"{fps:.1f} FPS"
        draw_text(canvas, text, (canvas.shape[1] - 6 - text_width(text, 0.6 * unit, unit), 22 * unit),
                   0.6 * unit, unit)
    notes = [hidden_notice(*hidden_joints(kpts, conf, conf_threshold), conf_threshold)]
    if ellipses:
        r = ellipse_radius(ellipse_level) * ellipse_scale
        notes.append(f"ellipses: nominal {100 * ellipse_level:.0f}% Gaussian level (r={r:.2f}); "
                     "outline colour = confidence, red low to green high")
    draw_lines_bottom_left(canvas, [n for n in notes if n], 0.45 * unit, unit)
    return canvas


def annotate(image_rgb: np.ndarray, poses: FramePoses, config, conf_threshold: float = 0.3,
             ellipse_scale: float = 1.0, fps: float | None = None) -> np.ndarray:
    """The app's drawing of one frame's poses: boxes, skeleton (smoothed when present), ellipses of
    the predicted covariance (nominal ``ELLIPSE_LEVEL``), track labels -> a new (H, W, 3) uint8 RGB."""
    kpts = poses.smoothed if poses.smoothed is not None else poses.pred.keypoints
    return draw_poses(image_rgb, kpts, poses.pred.confidence, poses.pred.covariance_px, config.edges,
                      boxes_xyxy=poses.boxes_xyxy, conf_threshold=conf_threshold, ellipse_scale=ellipse_scale,
                      ellipse_level=ELLIPSE_LEVEL, fps=fps, labels=[f"#{i}" for i in poses.track_ids],
                      joint_names=config.joint_names)


def _display_xyz(joints_mm: np.ndarray) -> np.ndarray:
    """Camera frame (x right, y down, z forward) -> display (x right, z depth, -y up), (K, 3)."""
    return np.stack([joints_mm[:, 0], joints_mm[:, 2], -joints_mm[:, 1]], axis=1)


def figure_3d(joints_mm: np.ndarray, edges: Sequence[tuple[int, int]], sigma_mm: np.ndarray | None = None,
              joint_names: Sequence[str] | None = None, title: str = "") -> Figure:
    """A matplotlib Figure (Agg, not registered with pyplot, so it is freed with its last reference).

    Args:
        joints_mm: (K, 3) root-relative joints in mm, camera frame (x right, y down, z away); shown
            with y flipped so up is up, depth along the second axis, equal scales on all axes.
        edges: bones as (i, j) pairs, one line each (left/right coloured from ``joint_names``).
        sigma_mm: (K, 3) per-axis scale in mm (RLE's sigma, not a calibrated std): drawn as +-sigma
            error bars (one line collection) and as the marker area.
        title: the axes' title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    pts = _display_xyz(np.asarray(joints_mm, np.float64).reshape(-1, 3))
    sides = joint_sides(joint_names, len(pts))
    fig = Figure(figsize=(4.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection="3d")
    for i, j in edges:
        side = sides[i] if sides[i] == sides[j] else 0
        ax.plot(*pts[[i, j]].T, color=np.array(side_colour(side)) / 255.0, linewidth=2)
    colours = [np.array(side_colour(s)) / 255.0 for s in sides]
    centre, half = (pts.max(0) + pts.min(0)) / 2, max(float(np.ptp(pts, axis=0).max()) / 2, 1.0) * 1.1
    size = np.full(len(pts), 12.0)
    if sigma_mm is not None:
        sig = np.abs(_display_xyz(np.asarray(sigma_mm, np.float64).reshape(-1, 3)))
        bars = [np.stack([pts[k] - d, pts[k] + d]) for k in range(len(pts)) for d in np.diag(sig[k])]
        ax.add_collection3d(Line3DCollection(bars, colors="0.4", linewidths=0.8))
        size = 12.0 + 400.0 * np.linalg.norm(sig, axis=1) / half  # area grows with sigma / figure extent
    ax.scatter(*pts.T, s=size, c=colours, depthshade=False)
    ax.set(xlim=(centre[0] - half, centre[0] + half), ylim=(centre[1] - half, centre[1] + half),
           zlim=(centre[2] - half, centre[2] + half), xlabel="x (mm)", ylabel="depth (mm)", zlabel="up (mm)")
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=15, azim=-70)
    ax.set_title(title)
    return fig
