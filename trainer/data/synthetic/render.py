"""Rendering of synthetic people with OpenCV: painter's algorithm, visibility, silhouettes.

A figure (the P body points of ``synthetic.figures``, world mm) becomes parts: capsules for the
limbs, a dilated hull for the torso, an ellipse for the head with face marks. Parts of all figures
are painted far to near by their mean camera depth, into the RGB image and into a label image of
part ids, so a point is visible (2) when the part on top at its pixel carries it, occluded (1) when
another part or an occluder rectangle is on top, and 0 outside the image. Left limbs are red to
orange with a light stripe along them, right limbs blue to cyan without: left and right differ in
colour and in grey. ``synthetic.writers`` composes scenes and writes the data sets.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import NamedTuple
from collections.abc import Sequence

import cv2
import numpy as np

from trainer.data.synthetic.figures import FACE_POINTS, BodyShape, Camera

_SHIFT = 4                    # fixed-point bits of the cv2 drawing calls
_SCALE = float(1 << _SHIFT)
# (point a, point b, radius field, radius factor, colour key, points carried)
_CAPSULES = (
    (11, 12, "arm_radius", 1.0, "l_upper", (11, 12)), (12, 13, "arm_radius", 0.85, "l_lower", (12, 13)),
    (14, 15, "arm_radius", 1.0, "r_upper", (14, 15)), (15, 16, "arm_radius", 0.85, "r_lower", (15, 16)),
    (4, 5, "leg_radius", 1.0, "l_upper", (4, 5)), (5, 6, "leg_radius", 0.8, "l_lower", (5, 6)),
    (1, 2, "leg_radius", 1.0, "r_upper", (1, 2)), (2, 3, "leg_radius", 0.8, "r_lower", (2, 3)),
    (6, 22, "leg_radius", 0.55, "shoe", (6,)), (3, 23, "leg_radius", 0.55, "shoe", (3,)),
    (8, 24, "head_radius", 0.45, "skin", (8,)),
)
_TORSO_POINTS = (0, 1, 4, 7, 8, 11, 14, 21)


class Part(NamedTuple):
    """One painted primitive of a figure, in image pixels.

    kind: "capsule" (coords (2, 2): ends), "hull" (coords (M, 2)), "head" (coords (2, 2): centre
    and head top), "rect" (coords (2, 2): corners). ``marks`` are (xy (2,), radius px, rgb) dots
    painted on top (a capsule's stripe is its two ends with a negative radius).
    """

    depth_mm: float
    owner: int
    points: tuple[int, ...]
    kind: str
    coords_px: np.ndarray
    radius_px: float
    rgb: tuple[int, int, int]
    marks: tuple = ()


@dataclass
class RenderedFigure:
    """A figure as rendered: P points of ``figures.POINT_NAMES``.

    points_px (P, 2) px; visibility (P,) int8: 2 visible, 1 occluded, 0 outside the image;
    points_cam_mm / points_world_mm (P, 3); mask (H, W) bool: its visible silhouette; bbox_xyxy
    (4,) px, the mask's tight box (x1, y1 exclusive; zeros when empty); area: mask pixels.
    """

    points_px: np.ndarray
    visibility: np.ndarray
    points_cam_mm: np.ndarray
    points_world_mm: np.ndarray
    mask: np.ndarray
    bbox_xyxy: np.ndarray
    area: int


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * x)) for x in colorsys.hsv_to_rgb(h % 1.0, s, v))


def sample_palette(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """Colours of one figure: left limbs hue 0-0.09 (red-orange), right 0.55-0.67 (blue)."""
    lh, rh, sat = rng.uniform(0.0, 0.09), rng.uniform(0.55, 0.67), rng.uniform(0.55, 1.0)
    tones = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (92, 56, 32))
    skin = np.clip(np.array(tones[rng.integers(len(tones))]) + rng.integers(-15, 16, 3), 0, 255)
    torso_h = rng.choice([rng.uniform(0.2, 0.45), rng.uniform(0.75, 0.9)])
    torso_s = 0.0 if rng.random() < 0.2 else rng.uniform(0.3, 0.9)
    return {
        "l_upper": _rgb(lh, sat, rng.uniform(0.45, 0.65)), "l_lower": _rgb(lh, sat, rng.uniform(0.8, 1.0)),
        "r_upper": _rgb(rh, sat, rng.uniform(0.45, 0.65)), "r_lower": _rgb(rh, sat, rng.uniform(0.8, 1.0)),
        "torso": _rgb(torso_h, torso_s, rng.uniform(0.3, 0.9)), "shoe": _rgb(0.08, 0.4, rng.uniform(0.1, 0.3)),
        "skin": tuple(int(x) for x in skin), "stripe": (255, 250, 200),
        "l_eye": (110, 10, 10), "r_eye": (10, 20, 120), "nose": (170, 60, 50),
        "l_ear": _rgb(lh, 0.8, 0.95), "r_ear": _rgb(rh, 0.8, 0.95),
    }


def facing_camera(cam: np.ndarray) -> np.ndarray:
    """(P,) bool: False for face points (camera frame (P, 3) mm) on the far side of the head."""
    facing = np.ones(len(cam), bool)
    facing[FACE_POINTS] = np.einsum("kd,kd->k", cam[FACE_POINTS] - cam[24], cam[FACE_POINTS]) < 0
    return facing


def _head_part(owner: int, px: np.ndarray, cam: np.ndarray, shape: BodyShape, f: float,
               colours: dict) -> Part:
    """Head ellipse plus the marks of the face points that face the camera."""
    r_px = f * shape.head_radius / cam[24, 2]
    marks, facing = [], facing_camera(cam)
    for k, name, size in zip(FACE_POINTS, ("nose", "l_eye", "r_eye", "l_ear", "r_ear"),
                             (0.14, 0.12, 0.12, 0.2, 0.2)):
        if facing[k]:
            marks.append((px[k], max(1.0, size * r_px), colours[name]))
    return Part(cam[24, 2], owner, (9, 10, 17, 18, 19, 20), "head", px[[24, 10]], r_px,
                colours["skin"], tuple(marks))


def figure_parts(owner: int, cam: np.ndarray, shape: BodyShape, camera: Camera,
                 colours: dict) -> list[Part]:
    """The parts of one figure from its points in the camera frame (P, 3) mm (all at Z > 0)."""
    px = cam[:, :2] / cam[:, 2:3] * camera.f + camera.c
    f = float(camera.f.mean())
    parts = [_head_part(owner, px, cam, shape, f, colours)]
    for a, b, field, factor, key, carried in _CAPSULES:
        r_px = f * getattr(shape, field) * factor / (0.5 * (cam[a, 2] + cam[b, 2]))
        stripe = ((px[a], -max(1.0, r_px / 3), colours["stripe"]), (px[b], 0.0, None)) \
            if key in ("l_upper", "l_lower") else ()
        parts.append(Part(0.5 * (cam[a, 2] + cam[b, 2]), owner, carried, "capsule", px[[a, b]],
                          r_px, colours[key], stripe))
    right = cam[14] - cam[11]
    forward = np.cross(cam[8] - cam[0], right)
    forward *= 0.45 * shape.torso_radius / max(np.linalg.norm(forward), 1e-6)
    box = np.concatenate([cam[[11, 14, 1, 4]] + forward, cam[[11, 14, 1, 4]] - forward])
    box_px = box[:, :2] / box[:, 2:3] * camera.f + camera.c
    r_px = f * 0.3 * shape.torso_radius / cam[7, 2]
    parts.append(Part(float(box[:, 2].mean()), owner, _TORSO_POINTS, "hull", box_px, r_px,
                      colours["torso"]))
    return parts


def _fixed(xy: np.ndarray) -> tuple[int, int]:
    return int(round(xy[0] * _SCALE)), int(round(xy[1] * _SCALE))


def draw_part(canvas: np.ndarray, part: Part, value, antialias: bool) -> None:
    """Paints ``part`` into ``canvas`` (H, W, 3 uint8 or H, W uint16) with ``value``; the marks
    and outline only when ``antialias`` (the RGB pass)."""
    line = cv2.LINE_AA if antialias else cv2.LINE_8
    thick = max(1, int(round(2 * part.radius_px)))
    outline = tuple(int(0.5 * c) for c in part.rgb) if antialias else value
    if part.kind == "capsule":
        p0, p1 = _fixed(part.coords_px[0]), _fixed(part.coords_px[1])
        cv2.line(canvas, p0, p1, outline, thick + 2, line, _SHIFT)
        cv2.line(canvas, p0, p1, value, thick, line, _SHIFT)
    elif part.kind == "hull":
        hull = cv2.convexHull(np.round(part.coords_px * _SCALE).astype(np.int32))
        cv2.polylines(canvas, [hull], True, outline, thick + 2, line, _SHIFT)
        cv2.fillConvexPoly(canvas, hull, value, line, _SHIFT)
        cv2.polylines(canvas, [hull], True, value, thick, line, _SHIFT)
    elif part.kind == "head":
        centre, top = part.coords_px
        axis = top - centre
        long_px = max(float(np.hypot(*axis)), part.radius_px) * 1.1 + 0.5
        axes = _fixed(np.array([long_px, part.radius_px * 1.1 + 0.5]))
        angle = float(np.degrees(np.arctan2(axis[1], axis[0])))
        cv2.ellipse(canvas, _fixed(centre), axes, angle, 0, 360, value, -1, line, _SHIFT)
    else:
        cv2.rectangle(canvas, _fixed(part.coords_px[0]), _fixed(part.coords_px[1]), value, -1,
                      line, _SHIFT)
    if antialias:
        _draw_marks(canvas, part)


def _draw_marks(canvas: np.ndarray, part: Part) -> None:
    """Face dots, or a capsule's stripe (marks ((a, -width, rgb), (b, 0, None)))."""
    if part.kind == "capsule" and part.marks:
        (a, width, rgb), (b, _, _) = part.marks
        cv2.line(canvas, _fixed(a), _fixed(b), rgb, max(1, int(round(-width))), cv2.LINE_AA, _SHIFT)
        return
    for xy, radius, rgb in part.marks:
        cv2.circle(canvas, _fixed(xy), int(round(radius * _SCALE)), rgb, -1, cv2.LINE_AA, _SHIFT)


def paint(image: np.ndarray, parts: Sequence[Part]) -> np.ndarray:
    """Paints ``parts`` in list order (see ``depth_order``) into ``image`` (H, W, 3) uint8 in place.

    Returns the label image (H, W) uint16: 0 background, i + 1 where ``parts[i]`` is on top.
    """
    label = np.zeros(image.shape[:2], np.uint16)
    for i, part in enumerate(parts):
        draw_part(image, part, part.rgb, antialias=True)
        draw_part(label, part, i + 1, antialias=False)
    return label


def depth_order(parts: list[Part]) -> list[Part]:
    """Parts sorted far to near; occluder rects (depth -inf) come last."""
    return sorted(parts, key=lambda p: -p.depth_mm)


def point_visibility(label: np.ndarray, parts: Sequence[Part], owner: int, points_px: np.ndarray,
                     facing: np.ndarray) -> np.ndarray:
    """Visibility (P,) int8 of one figure's points (P, 2) px: 0 outside the image, 2 where the part
    on top at the point's pixel carries the point and ``facing`` (P,) bool holds, else 1."""
    height, width = label.shape
    vis = np.zeros(len(points_px), np.int8)
    for k, (x, y) in enumerate(points_px):
        if not (0 <= x < width and 0 <= y < height):
            continue
        top = int(label[int(y), int(x)])
        carried = top > 0 and parts[top - 1].owner == owner and k in parts[top - 1].points
        vis[k] = 2 if carried and facing[k] else 1
    return vis


def mask_box(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Tight box (4,) xyxy px of a (H, W) bool mask (x1, y1 exclusive; zeros if empty), area."""
    area = int(mask.sum())
    if area == 0:
        return np.zeros(4), 0
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64), area


def random_background(rng: np.random.Generator, image_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a gradient, smooth blobs or stripes, noise, and 3-12 clutter shapes."""
    height, width = image_hw
    style = int(rng.integers(3))
    cells = 2 if style == 0 else int(rng.integers(3, 10))
    small = rng.integers(0, 256, (cells, cells, 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    if style == 2:
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 30)
        phase = (np.arange(width)[None] * np.cos(theta) + np.arange(height)[:, None] * np.sin(theta))
        stripes = (np.sin(phase * 2 * np.pi / period) > 0)[..., None]
        image = np.where(stripes, image, 255 - image).astype(np.uint8)
    noise = rng.integers(-12, 13, image.shape, dtype=np.int16)
    image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 13))):
        _clutter(rng, image)
    return image


def _clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """One random rectangle, circle, line or ellipse drawn into ``image`` in place."""
    height, width = image.shape[:2]
    rgb = tuple(int(c) for c in rng.integers(0, 256, 3))
    x, y = int(rng.integers(width)), int(rng.integers(height))
    size = int(rng.integers(4, max(5, min(height, width) // 3)))
    thick = -1 if rng.random() < 0.5 else int(rng.integers(1, 4))
    kind = int(rng.integers(4))
    if kind == 0:
        cv2.rectangle(image, (x, y), (x + size, y + int(rng.integers(4, size + 5))), rgb, thick)
    elif kind == 1:
        cv2.circle(image, (x, y), size // 2, rgb, thick, cv2.LINE_AA)
    elif kind == 2:
        end = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.line(image, (x, y), end, rgb, max(1, thick), cv2.LINE_AA)
    else:
        axes = (size // 2, int(rng.integers(2, size // 2 + 3)))
        cv2.ellipse(image, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, rgb, thick, cv2.LINE_AA)


def _occluder(rng: np.random.Generator, points_px: np.ndarray) -> Part:
    """A rectangle over 25-50 % of the box of a figure's points (P, 2) px, painted last."""
    lo, hi = points_px.min(0), points_px.max(0)
    size = (hi - lo) * rng.uniform(0.25, 0.5, 2)
    corner = lo + (hi - lo - size) * rng.uniform(0, 1, 2)
    rgb = tuple(int(c) for c in rng.integers(0, 256, 3))
    return Part(-np.inf, -1, (), "rect", np.stack([corner, corner + size]), 0.0, rgb)


def render_scene(rng: np.random.Generator, image_hw: tuple[int, int], camera: Camera,
                 figures: Sequence[tuple[np.ndarray, BodyShape]], occluded: Sequence[int] = (),
                 ) -> tuple[np.ndarray, list[RenderedFigure]]:
    """Renders figures (world points (P, 3) mm in front of ``camera``, shape) over a random
    background; an occluder rectangle is painted over each figure index in ``occluded``.

    Returns the RGB image (H, W, 3) uint8 and one ``RenderedFigure`` per figure, in order.
    """
    image = random_background(rng, image_hw)
    cams = [camera.to_cam(points) for points, _ in figures]
    parts = []
    for i, (cam, (_, shape)) in enumerate(zip(cams, figures)):
        parts += figure_parts(i, cam, shape, camera, sample_palette(rng))
    parts += [_occluder(rng, camera.project(figures[i][0])) for i in occluded]
    parts = depth_order(parts)
    label = paint(image, parts)
    owner_map = np.array([-1] + [p.owner for p in parts], np.int32)[label]
    rendered = []
    for i, (cam, (points_world, _)) in enumerate(zip(cams, figures)):
        px = cam[:, :2] / cam[:, 2:3] * camera.f + camera.c
        mask = owner_map == i
        box, area = mask_box(mask)
        vis = point_visibility(label, parts, i, px, facing_camera(cam))
        rendered.append(RenderedFigure(px, vis, cam, np.asarray(points_world), mask, box, area))
    return image, rendered


def encode_jpeg(image_rgb: np.ndarray, gray_mode: int = 0, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB image (H, W, 3) uint8; ``gray_mode`` 1: as 1-channel grey, 2: as grey
    in 3 channels, 0: colour."""
    image = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if gray_mode:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        image = image if gray_mode == 1 else cv2.merge([image, image, image])
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return data.tobytes()
