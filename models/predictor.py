"""Predictor: an RGB image and person boxes in, keypoints in image pixels out.

    predictor = Predictor(load_model("coco-laplace-rle.pth"), flip=True)
    result = predictor(image_rgb, boxes_xyxy)        # result.keypoints (N, K, 2) px
    plain = predictor(image_rgb, boxes_xyxy, flip=False)   # flip test chosen per call
    fast = Predictor(model, backend="auto")          # torch or ONNX Runtime (models/backends.py)

All boxes of an image go through one forward pass. The crop is the reference's (box -> centre and
size at the model's aspect ratio, times the box factor, one bilinear affine warp); the inverse of
the same affine maps keypoints back and turns each sigma into a 2x2 covariance in image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import geometry
from .backends import make_runner
from .build import PoseModel
from .pose_model import PoseOutput
from .skeleton import flip_permutation


@dataclass
class PosePrediction:
    """Poses of N people with K joints, in image pixels.

    boxes_xyxy: (N, 4) float32, the input boxes.
    keypoints: (N, K, 2) x, y px; (N, K, 3) for 3D models with z = depth relative to the root
        joint in mm (camera axis, same scale as the crop).
    sigma: (N, K, D) per-coordinate scale of the learned residual distribution in px (and mm for
        z): sqrt of the covariance diagonal. Not a calibrated standard deviation.
    covariance_px: (N, K, 2, 2) diag(sigma_crop^2) mapped through the inverse crop affine.
    confidence: (N, K) in [0, 1], 1 - mean(sigma in normalised units) (the official score).
    crop_wh_px: (N, 2) float32 width, height in image px of the region each crop covered (the
        box at the model's input aspect times the box factor); None when not known.
    """

    boxes_xyxy: np.ndarray
    keypoints: np.ndarray
    sigma: np.ndarray
    covariance_px: np.ndarray
    confidence: np.ndarray
    crop_wh_px: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes_xyxy)


def crops_for_boxes(image_rgb: np.ndarray, boxes_xyxy: np.ndarray, config) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, H, W, 3) uint8 and their ``crop_from_image`` maps (N, 2, 3) for boxes (N, 4) px,
    the maps by the config's ``warp`` convention (official, or mmpose's for its checkpoints)."""
    mats = geometry.crop_maps_for_boxes(boxes_xyxy, config.input_hw, config.box_factor, config.warp)
    return geometry.warp_crops(image_rgb, mats, config.input_hw), mats


@torch.no_grad()
def forward_with_flip(model: PoseModel, x: torch.Tensor, flip: bool) -> PoseOutput:
    """Run the model (or a ``models.backends`` runner); with ``flip`` also on the mirrored input,
    and average as the reference.

    The mirrored pass's u becomes ``-u - 1/W`` (one input pixel, the official shift), left/right
    joints are swapped, and mu and sigma are averaged (the official code averages only mu and
    the confidence; averaging the swapped sigma gives the same confidence and a correct sigma).
    """
    out = model(x)
    if not flip:
        return out
    flipped = model(torch.flip(x, dims=[3]))
    cfg = model.config
    perm = torch.as_tensor(flip_permutation(cfg.flip_pairs, cfg.num_joints), device=x.device)
    mu_f = flipped.mu[:, perm].clone()
    mu_f[..., 0] = -mu_f[..., 0] - 1.0 / cfg.input_hw[1]
    return PoseOutput((out.mu + mu_f) / 2, (out.sigma + flipped.sigma[:, perm]) / 2)


def decode(out: PoseOutput, crop_from_image: np.ndarray, config, boxes_xyxy: np.ndarray) -> PosePrediction:
    """Model output in the normalised crop frame -> PosePrediction in image pixels (with each
    crop's size in image px, read from the same ``crop_from_image`` maps (N, 2, 3))."""
    mu = out.mu.float().cpu().numpy().astype(np.float64)
    sigma = out.sigma.float().cpu().numpy().astype(np.float64)
    image_from_crop = geometry.invert_affine(crop_from_image)
    xy_px = geometry.apply_affine(image_from_crop, geometry.norm_to_crop(mu[..., :2], config.input_hw))
    cov = geometry.sigma_to_covariance_px(sigma[..., :2], image_from_crop, config.input_hw)
    sig = np.sqrt(np.stack([cov[..., 0, 0], cov[..., 1, 1]], axis=-1))
    if config.dims == 3:
        xy_px = np.concatenate([xy_px, mu[..., 2:] * config.depth_range_mm], axis=-1)
        sig = np.concatenate([sig, sigma[..., 2:] * config.depth_range_mm], axis=-1)
    return PosePrediction(
        boxes_xyxy=np.asarray(boxes_xyxy, np.float32).reshape(-1, 4),
        keypoints=xy_px.astype(np.float32), sigma=sig.astype(np.float32),
        covariance_px=cov.astype(np.float32),
        confidence=(1.0 - sigma.mean(axis=-1)).astype(np.float32),
        crop_wh_px=geometry.crop_wh_px(image_from_crop, config.input_hw).astype(np.float32))


def empty_prediction(config) -> PosePrediction:
    """A PosePrediction of no people (every array with N = 0)."""
    k, d = config.num_joints, config.dims
    return PosePrediction(np.zeros((0, 4), np.float32), np.zeros((0, k, d), np.float32),
                          np.zeros((0, k, d), np.float32), np.zeros((0, k, 2, 2), np.float32),
                          np.zeros((0, k), np.float32), np.zeros((0, 2), np.float32))


class Predictor:
    """Batched top-down inference for any ``PoseModel`` (RLE or heatmap).

    Args:
        model: a PoseModel, e.g. from ``load_model`` (put in eval mode here).
        flip: the default of the flip test (mirror pass averaged in, as the reference's
            evaluation); each call may choose otherwise.
        device: where to run; defaults to the model's device.
        backend: "torch" (eager), "onnxruntime" (the model's graph, exported once and cached:
            ``models.export.cached_onnx``) or "auto" (the faster, measured at construction on a
            CPU; torch on a GPU). ``self.backend`` is the one in use.
    """

    def __init__(self, model: PoseModel, flip: bool = False, device: str | torch.device | None = None,
                 backend: str = "torch") -> None:
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.flip = flip
        self.runner, self.backend = make_runner(self.model, backend, self.device)

    def __call__(self, image_rgb: np.ndarray, boxes_xyxy: np.ndarray, *, flip: bool | None = None) -> PosePrediction:
        """image_rgb: (H, W, 3) uint8 RGB; boxes_xyxy: (N, 4) px; ``flip``: flip test for this call
        (None: the predictor's default). Returns a PosePrediction."""
        image = np.asarray(image_rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return empty_prediction(self.config)
        crops, mats = crops_for_boxes(image, boxes, self.config)
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2)
        if self.device.type == "cuda" and self.backend == "torch":
            x = x.contiguous(memory_format=torch.channels_last)
        out = forward_with_flip(self.runner, x, self.flip if flip is None else flip)
        return decode(out, mats, self.config, boxes)
