"""Training and evaluation transforms: one affine maps image and keypoints together.

A transform turns an ``Instance`` (box and joints in image pixels) into a ``PoseSample`` (the RGB
crop, normalised targets and weights, the ``crop_from_image`` affine). Geometry is
``models.geometry``'s: ``boxes_to_center_scale`` -> ``crop_from_image`` -> one bilinear warp
(``warp_crops``); targets are ``crop_to_norm(apply_affine(...))``. The pixels come from an
``ImageReader`` (``trainer/data/images.py``): given the crop's affine and size, it may decode only
the region the crop covers, at 1/2, 1/4 or 1/8 size (libjpeg DCT scaling); ``images.crop_rgb``
warps that region, its origin and reduction folded into the affine.

Flip convention (as the official ``flip_joints_3d``): the image is mirrored as x -> width - 1 - x,
the joints and the box centre alike, left/right joints and their visibilities are swapped. The
mirrored centre maps to the crop centre, so a flipped sample's targets are exactly u -> -u of the
unflipped one (pairs swapped); the crop's pixel column j shows what column W - j showed. (The
flip TEST mirrors the input tensor around (W - 1) / 2 instead, hence its u -> -u - 1/W.)
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from models.config import PoseModelConfig
from models.geometry import apply_affine, boxes_to_center_scale, crop_from_image, crop_to_norm
from models.skeleton import flip_permutation
from trainer.config import AugmentConfig
from trainer.data.images import ImageReader, crop_rgb

LOWER_BODY_WORDS = ("hip", "knee", "ankle", "foot", "heel", "toe", "pelvis", "leg", "thigh")


class Instance(NamedTuple):
    """One person instance, image pixels.

    ``joints`` (K, D) float: x, y in px, plus the normalised depth d for D = 3; ``joints_vis``
    (K,) or (K, D), > 0 where labelled; ``box_xyxy`` (4,) px; ``image_wh`` (width, height) px.
    """

    box_xyxy: np.ndarray
    joints: np.ndarray
    joints_vis: np.ndarray
    image_wh: tuple[int, int]
    image_id: int = -1
    ann_id: int = -1
    score: float = 1.0


class PoseSample(NamedTuple):
    """A model input with its targets.

    ``image`` (H, W, 3) uint8 RGB crop; ``target`` (K, D) float32 in [-0.5, 0.5] (u, v[, d]);
    ``weight`` (K, D) float32; ``crop_from_image`` (2, 3) float32 (image px -> crop px, includes
    the flip); ``center_px``, ``size_px`` (2,) float32: the crop region (w, h) in image px.
    """

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    crop_from_image: np.ndarray
    center_px: np.ndarray
    size_px: np.ndarray
    image_id: int
    ann_id: int
    score: float


def upper_body_ids(joint_names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Indices of upper-body joints: every name without a lower-body word (COCO-17: 0..10)."""
    return tuple(i for i, n in enumerate(joint_names)
                 if not any(w in n.lower() for w in LOWER_BODY_WORDS))


def targets_from_joints(joints: np.ndarray, joints_vis: np.ndarray, crop_from_img: np.ndarray,
                        input_hw: tuple[int, int], zero_outside: bool) -> tuple[np.ndarray, np.ndarray]:
    """Joints (K, D) image px (+ depth) -> target (K, D) float32 normalised, weight (K, D) float32.

    Weight = visibility > 0; with ``zero_outside`` a joint with any coordinate outside
    [-0.5, 0.5] gets weight 0 on all its coordinates (the official 3D rule). Depth passes through.
    """
    joints = np.asarray(joints, np.float64)
    target = joints.copy()
    xy_crop = apply_affine(np.asarray(crop_from_img)[None], joints[None, :, :2])[0]
    target[:, :2] = crop_to_norm(xy_crop, input_hw)
    weight = np.empty(joints.shape, np.float32)
    weight[:] = np.asarray(joints_vis).reshape(len(joints), -1) > 0
    if zero_outside:
        weight[np.any(np.abs(target) > 0.5, axis=1)] = 0.0
    return target.astype(np.float32), weight


def _mirror(width: int) -> np.ndarray:
    """Affine (2, 3) x -> width - 1 - x."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Affine (2, 3) of ``outer(inner(p))``."""
    return np.concatenate([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], 1)


class EvalTransform:
    """Box -> centred crop, no augmentation (evaluation, validation, GT or detected boxes)."""

    def __init__(self, model_cfg: PoseModelConfig) -> None:
        self.input_hw = tuple(model_cfg.input_hw)
        self.aspect_wh = model_cfg.input_hw[1] / model_cfg.input_hw[0]
        self.box_factor = model_cfg.box_factor

    def __call__(self, inst: Instance, reader: ImageReader, rng: np.random.Generator | None = None) -> PoseSample:
        center, size = boxes_to_center_scale(inst.box_xyxy, self.aspect_wh, self.box_factor)
        mat = crop_from_image(center, size, 0.0, self.input_hw)[0]
        image = crop_rgb(reader(mat, self.input_hw), mat, self.input_hw)
        target, weight = targets_from_joints(inst.joints, inst.joints_vis, mat, self.input_hw, False)
        return PoseSample(image, target, weight, mat.astype(np.float32), center[0].astype(np.float32),
                          size[0].astype(np.float32), int(inst.image_id), int(inst.ann_id), float(inst.score))


class TrainTransform(EvalTransform):
    """Random half-body, scale, rotation, flip (in the official order), one warp, then colour and
    occlusion on the crop. ``rng`` is passed per call, so each worker owns its own stream."""

    def __init__(self, model_cfg: PoseModelConfig, augment_cfg: AugmentConfig,
                 flip_pairs: tuple[tuple[int, int], ...] | None = None,
                 upper_ids: tuple[int, ...] | None = None) -> None:
        super().__init__(model_cfg)
        self.aug = augment_cfg
        k = model_cfg.num_joints
        self.flip_perm = flip_permutation(model_cfg.flip_pairs if flip_pairs is None else flip_pairs, k)
        self.upper_ids = set(upper_body_ids(model_cfg.joint_names) if upper_ids is None else upper_ids)

    def __call__(self, inst: Instance, reader: ImageReader, rng: np.random.Generator | None = None) -> PoseSample:
        rng = np.random.default_rng() if rng is None else rng
        joints, vis = np.asarray(inst.joints, np.float64), np.asarray(inst.joints_vis)
        center, size = boxes_to_center_scale(inst.box_xyxy, self.aspect_wh, self.box_factor)
        center, size = center[0], size[0]
        visible = vis.reshape(len(joints), -1)[:, 0] > 0
        if visible.sum() > self.aug.half_body_min_joints and rng.random() < self.aug.half_body_prob:
            center, size = self._half_body(joints[:, :2], visible, rng) or (center, size)
        size = size * self._draw(self.aug.scale_mode, self.aug.scale_factor, rng, scale=True)
        rot = self._draw(self.aug.rot_mode, self.aug.rot_factor, rng) if rng.random() < self.aug.rot_prob else 0.0
        flip = rng.random() < self.aug.flip_prob
        if flip:   # mirror the image AND the centre: crop_from_image(mirrored centre) o mirror
            width = inst.image_wh[0]
            mirrored_center = np.array([width - 1 - center[0], center[1]])
            mat = _compose(crop_from_image(mirrored_center, size, rot, self.input_hw)[0], _mirror(width))
            joints, vis = joints[self.flip_perm], vis[self.flip_perm]
        else:
            mat = crop_from_image(center, size, rot, self.input_hw)[0]
        image = crop_rgb(reader(mat, self.input_hw), mat, self.input_hw)
        image = self._color_and_occlusion(image, inst, mat, rng)
        target, weight = targets_from_joints(joints, vis, mat, self.input_hw, self.aug.zero_weight_outside)
        return PoseSample(image, target, weight, mat.astype(np.float32), center.astype(np.float32),
                          size.astype(np.float32), int(inst.image_id), int(inst.ann_id), float(inst.score))

    @staticmethod
    def _draw(mode: str, factor: float, rng: np.random.Generator, scale: bool = False) -> float:
        """Scale multiplier (scale=True) or rotation in degrees, per ``AugmentConfig``'s modes."""
        if mode == "uniform":
            value = rng.uniform(-factor, factor)
        else:   # clipped_normal: scale clip(f*N, -f, f), rotation clip(f*N, -2f, 2f)
            value = float(np.clip(factor * rng.standard_normal(), -factor * (1 if scale else 2),
                                  factor * (1 if scale else 2)))
        return 1.0 + value if scale else value

    def _half_body(self, joints_xy: np.ndarray, visible: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        """Centre (mean of the chosen joints) and size of an upper- or lower-body crop, 50/50
        (the official ``randn() < 0.5`` picks the upper body ~69%: not copied), x half_body_factor."""
        ids = np.flatnonzero(visible)
        upper = [i for i in ids if i in self.upper_ids]
        lower = [i for i in ids if i not in self.upper_ids]
        if rng.random() < 0.5 and len(upper) > 2:
            chosen = upper
        else:
            chosen = lower if len(lower) > 2 else upper
        if len(chosen) < 2:
            return None
        pts = joints_xy[chosen]
        box = np.concatenate([pts.min(0), pts.max(0)])
        _, size = boxes_to_center_scale(box, self.aspect_wh, self.aug.half_body_factor)
        return pts.mean(0), size[0]

    def _color_and_occlusion(self, crop: np.ndarray, inst: Instance, mat: np.ndarray,
                             rng: np.random.Generator) -> np.ndarray:
        """Per-channel gain in [1-c, 1+c]; a uniform-noise rectangle inside the box (as the
        official H36M transform, but drawn in crop pixels, axis-aligned in the crop)."""
        if self.aug.color_factor > 0:   # uint8(clip(v * gain)) per channel, as a lookup table
            gains = rng.uniform(1 - self.aug.color_factor, 1 + self.aug.color_factor, 3)
            table = np.clip(np.arange(256.0)[:, None] * gains, 0, 255).astype(np.uint8)
            crop = cv2.LUT(np.ascontiguousarray(crop), table[None])
        if self.aug.occlusion:
            crop = _occlude(crop, inst.box_xyxy, mat, rng)
        return crop


def _occlude(crop: np.ndarray, box_xyxy: np.ndarray, mat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint a noise rectangle of area U(0, 0.7) x box area, aspect U(0.3, 1/0.3), inside the
    box's footprint in the crop; up to 20 tries to fit it inside the crop, else no occlusion."""
    out_h, out_w = crop.shape[:2]
    box = np.asarray(box_xyxy, np.float64)
    k = float(np.sqrt(abs(np.linalg.det(mat[:, :2]))))
    box_w, box_h = (box[2] - box[0]) * k, (box[3] - box[1]) * k
    cx, cy = mat[:, :2] @ ((box[:2] + box[2:]) / 2) + mat[:, 2]
    for _ in range(20):
        area = rng.uniform(0.0, 0.7) * box_w * box_h
        ratio = rng.uniform(0.3, 1 / 0.3)
        h, w = np.sqrt(area * ratio), np.sqrt(area / ratio)
        x0 = rng.random() * (box_w - w - 1) + cx - box_w / 2
        y0 = rng.random() * (box_h - h - 1) + cy - box_h / 2
        if x0 >= 0 and y0 >= 0 and x0 + w < out_w and y0 + h < out_h:
            x0, y0, w, h = int(x0), int(y0), int(w), int(h)
            crop = crop.copy()
            crop[y0:y0 + h, x0:x0 + w] = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            return crop
    return crop
