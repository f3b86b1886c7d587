"""The one geometry of crops and cameras, used by training, evaluation and the app.

Frames and units:
    *_px    image pixels (x right, y down), float.
    *_crop  crop pixels of the model input (0..W, 0..H).
    *_norm  crop coordinates normalised as u = x_crop / W - 0.5, v = y_crop / H - 0.5.

A box becomes a centre and a (width, height) at the model's aspect ratio, enlarged by the box
factor; with a rotation this defines the similarity ``crop_from_image`` (2x3), the same map the
official code builds from three points with ``cv2.getAffineTransform``. The crop is one bilinear
``cv2.warpAffine`` (``warp_crops``, also from a reduced, partial decode). Sigma maps to image-pixel
covariances through the inverse affine. ``crop_maps_for_boxes`` picks the box -> map convention
by name (``PoseModelConfig.warp``): "official" (the above, float64) or "mmpose" (mmpose's own
float32 computation, so that its checkpoints see the very crops mmpose's inference gives them).

Cameras (the Human3.6M pinhole model): ``*_world`` mm, ``*_cam`` mm with
``X_cam = R @ (X_world - t)``, pixels ``x = X/Z * f_x + c_x``; ``pixel_depth_to_camera`` inverts
the projection given the depth Z.
"""
from __future__ import annotations

import cv2
import numpy as np


def boxes_to_center_scale(boxes_xyxy: np.ndarray, aspect_wh: float,
                          factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) xyxy px -> centres (N, 2) px and sizes (N, 2) (w, h) px at ``aspect_wh``.

    The shorter side is grown to the aspect ratio (w / h), then both sides are multiplied by
    ``factor`` (the reference's ``_box_to_center_scale`` with pixel_std 1).
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    center = boxes[:, :2] + 0.5 * wh
    w, h = wh[:, 0], wh[:, 1]
    wider = w > aspect_wh * h
    wh[:, 1] = np.where(wider, w / aspect_wh, h)   # (w, h are views of wh: h is now the new h)
    wh[:, 0] = np.where(~wider & (w < aspect_wh * h), h * aspect_wh, w)
    return center, wh * factor


def crop_from_image(center_px: np.ndarray, size_px: np.ndarray, rot_deg: np.ndarray | float,
                    input_hw: tuple[int, int]) -> np.ndarray:
    """Affine maps (N, 2, 3) from image pixels to crop pixels.

    The centre goes to (W/2, H/2); the crop region's width ``size_px[:, 0]`` spans the crop's W
    pixels (the height follows from the aspect ratio); the image content is rotated by
    ``rot_deg`` (counter-clockwise in the image as displayed, as the official code).
    """
    center = np.asarray(center_px, dtype=np.float64).reshape(-1, 2)
    size = np.asarray(size_px, dtype=np.float64).reshape(-1, 2)
    rot = np.deg2rad(np.broadcast_to(np.asarray(rot_deg, dtype=np.float64), (len(center),)))
    out_h, out_w = input_hw
    k = out_w / np.maximum(size[:, 0], 1e-6)
    cos, sin = np.cos(rot) * k, np.sin(rot) * k
    mat = np.empty((len(center), 2, 3), dtype=np.float64)
    mat[:, 0, 0], mat[:, 0, 1] = cos, sin
    mat[:, 1, 0], mat[:, 1, 1] = -sin, cos
    mat[:, 0, 2] = out_w * 0.5 - (cos * center[:, 0] + sin * center[:, 1])
    mat[:, 1, 2] = out_h * 0.5 - (cos * center[:, 1] - sin * center[:, 0])
    return mat


def mmpose_crop_from_boxes(boxes_xyxy: np.ndarray, input_hw: tuple[int, int], factor: float) -> np.ndarray:
    """Maps (N, 2, 3) image px -> crop px for boxes (N, 4) xyxy px, computed as mmpose 1.x does.

    mmpose (``bbox_xyxy2cs``, ``TopdownAffine._fix_aspect_ratio``, ``get_warp_matrix``): the box
    in float32 -> centre and size x ``factor`` -> aspect fixed to W/H, then three float32 points
    (centre, centre - (0, w/2), their perpendicular) and their crop images go through
    ``cv2.getAffineTransform``. The same similarity as ``crop_from_image`` up to ~1e-5 in the
    matrix, which moves single grey levels in up to ~0.1% of crop pixels: enough to be seen by a
    network, so mmpose checkpoints get mmpose's matrix exactly.
    """
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    out_h, out_w = input_hw
    aspect = out_w / out_h
    mats = np.empty((len(boxes), 2, 3), np.float64)
    for i, box in enumerate(boxes):
        w, h = (box[2:] - box[:2]) * np.float32(factor)
        center = (box[2:] + box[:2]) * np.float32(0.5)
        src_w = w if w > h * np.float32(aspect) else h * np.float32(aspect)
        src = np.zeros((3, 2), np.float32)
        dst = np.zeros((3, 2), np.float32)
        src[0], src[1] = center, center + np.array([0.0, src_w * -0.5])
        dst[0], dst[1] = (out_w * 0.5, out_h * 0.5), (out_w * 0.5, out_h * 0.5 - out_w * 0.5)
        for pts in (src, dst):   # the third point: the first one turned 90 degrees about the second
            d = pts[0] - pts[1]
            pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
        mats[i] = cv2.getAffineTransform(src, dst)
    return mats


def official_crop_from_boxes(boxes_xyxy: np.ndarray, input_hw: tuple[int, int], factor: float) -> np.ndarray:
    """Maps (N, 2, 3) image px -> crop px for boxes (N, 4): ``boxes_to_center_scale`` at the crop's
    aspect, then ``crop_from_image`` without rotation (float64; the official code's crop)."""
    out_h, out_w = input_hw
    center, size = boxes_to_center_scale(boxes_xyxy, out_w / out_h, factor)
    return crop_from_image(center, size, 0.0, input_hw)


# PoseModelConfig.warp -> boxes -> crop_from_image maps (its keys are models.config.WARPS)
CROP_MAPS = {"official": official_crop_from_boxes, "mmpose": mmpose_crop_from_boxes}


def crop_maps_for_boxes(boxes_xyxy: np.ndarray, input_hw: tuple[int, int], factor: float,
                        warp: str = "official") -> np.ndarray:
    """``crop_from_image`` maps (N, 2, 3) for boxes (N, 4) xyxy px by the ``warp`` convention."""
    return CROP_MAPS[warp](boxes_xyxy, input_hw, factor)


def invert_affine(mat: np.ndarray) -> np.ndarray:
    """Inverse of affine maps (N, 2, 3) -> (N, 2, 3)."""
    mat = np.asarray(mat, dtype=np.float64)
    lin_inv = np.linalg.inv(mat[..., :2])
    return np.concatenate([lin_inv, -np.einsum("...ij,...j->...i", lin_inv, mat[..., 2])[..., None]], -1)


def apply_affine(mat: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply affine maps (N, 2, 3) to points (N, K, 2) -> (N, K, 2)."""
    mat = np.asarray(mat, dtype=np.float64)
    return np.einsum("nij,nkj->nki", mat[:, :, :2], np.asarray(points, np.float64)) + mat[:, None, :, 2]


def crop_wh_px(image_from_crop: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """(N, 2) width, height in image px of the region each crop covers, from maps (N, 2, 3).

    ``image_from_crop`` is a similarity (scale s image px per crop px, any rotation): each column
    of its linear part has norm s, so the crop's W x H pixels cover (s W, s H) image px.
    """
    lin = np.asarray(image_from_crop, np.float64).reshape(-1, 2, 3)[:, :, :2]
    return np.linalg.norm(lin, axis=1) * np.array([input_hw[1], input_hw[0]], np.float64)


def crop_to_norm(points_crop: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Crop pixels (..., 2) -> normalised [-0.5, 0.5] coordinates (u = x / W - 0.5)."""
    hw = np.array([input_hw[1], input_hw[0]], dtype=np.float64)
    return np.asarray(points_crop, np.float64) / hw - 0.5


def norm_to_crop(points_norm: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Normalised (..., 2) -> crop pixels: x = (u + 0.5) * W, y = (v + 0.5) * H."""
    hw = np.array([input_hw[1], input_hw[0]], dtype=np.float64)
    return (np.asarray(points_norm, np.float64) + 0.5) * hw


def warp_crops(image: np.ndarray, mats: np.ndarray, input_hw: tuple[int, int], reduction: int = 1,
               origin_px: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Crop an (H, W, C) or (H, W) image with each map (N, 2, 3), full-image px -> crop px,
    -> (N, h, w, C) or (N, h, w) of the image's dtype, bilinear, zero border.

    ``image`` may be a reduced and partial decode of the full image (the data pipeline's region
    JPEG decoding): its pixel i covers full-image px [o + r*i, o + r*i + r), centre
    o + r*i + (r-1)/2, for ``reduction`` r and ``origin_px`` o (x, y); the maps still take
    full-image px. A region is placed at o / r on a zero canvas (when r divides o, as a region
    decode's origin always is) and only r is folded into the maps: warpAffine rounds its source
    coordinates from the affine, and a translation shifted by the origin rounds differently now
    and then (crops 1 grey level off), so with the canvas a region at r = 1 gives the
    full-resolution warp's pixels exactly. The canvas's zeros read as the zero border would.
    """
    ox, oy = (int(v) for v in origin_px)
    if (ox, oy) != (0, 0) and ox % reduction == 0 and oy % reduction == 0 and min(ox, oy) >= 0:
        canvas = np.zeros((oy // reduction + image.shape[0], ox // reduction + image.shape[1], *image.shape[2:]),
                          image.dtype)
        canvas[oy // reduction:, ox // reduction:] = image   # (calloc'd: the pages above and left stay unmapped)
        image, ox, oy = canvas, 0, 0
    out_h, out_w = input_hw
    crops = np.empty((len(mats), out_h, out_w, *image.shape[2:]), dtype=image.dtype)
    for i, mat in enumerate(mats):
        mat = np.asarray(mat, np.float64).copy()
        if reduction != 1 or (ox, oy) != (0, 0):   # full px = o + r * image px + (r - 1) / 2
            mat[:, 2] += mat[:, :2] @ (np.asarray((ox, oy), np.float64) + (reduction - 1) / 2.0)
            mat[:, :2] *= reduction
        crops[i] = cv2.warpAffine(image, mat, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(crops.shape[1:])
    return crops


def sigma_to_covariance_px(sigma_norm: np.ndarray, image_from_crop: np.ndarray,
                           input_hw: tuple[int, int]) -> np.ndarray:
    """Per-keypoint 2x2 covariances in image pixels from sigma in normalised crop units.

    ``sigma_norm`` (N, K, 2) is scaled to crop pixels (x by W, y by H), taken as the diagonal
    cov_crop = diag(sigma_crop^2), and mapped through the linear part A of ``image_from_crop``
    (N, 2, 3): cov_px = A cov_crop A^T. Returns (N, K, 2, 2). Note that sigma is the scale of
    the learned residual distribution, not a calibrated standard deviation.
    """
    out_h, out_w = input_hw
    sig_crop = np.asarray(sigma_norm, np.float64)[..., :2] * np.array([out_w, out_h], np.float64)
    lin = np.asarray(image_from_crop, np.float64)[:, None, :, :2]          # (N, 1, 2, 2)
    scaled = lin * sig_crop[..., None, :]                                   # A diag(sigma)
    return scaled @ np.swapaxes(scaled, -1, -2)


def world_to_camera(joints_world: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N, K, 3) world mm -> camera mm: ``X_cam = R @ (X_world - t)``.

    R: (N, 3, 3) or (3, 3) rotation; t: (N, 3) or (3,) camera centre in world mm.
    """
    joints_world = np.asarray(joints_world, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(-1, 1, 3)
    return np.matmul(joints_world - t, np.swapaxes(R, -1, -2))


def camera_to_pixel(joints_cam: np.ndarray, f: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(N, K, 3) camera mm -> (N, K, 2) pixels: ``x = X/Z * f_x + c_x``; f, c (N, 2) or (2,) pixels.

    The official ``cam2pixel`` adds 1e-8 to Z; at Human3.6M depths (~5 m) that changes nothing.
    """
    joints_cam = np.asarray(joints_cam, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64).reshape(-1, 1, 2)
    c = np.asarray(c, dtype=np.float64).reshape(-1, 1, 2)
    return joints_cam[..., :2] / joints_cam[..., 2:3] * f + c


def pixel_depth_to_camera(uv_px: np.ndarray, depth_mm: np.ndarray, f: np.ndarray,
                          c: np.ndarray) -> np.ndarray:
    """Back-projection: (N, K, 2) pixels + (N, K) absolute depth Z (mm) -> (N, K, 3) camera mm.

    ``X = (x - c_x) / f_x * Z``, ``Y = (y - c_y) / f_y * Z``; f, c (N, 2) or (2,) pixels.
    """
    uv_px = np.asarray(uv_px, dtype=np.float64)
    depth_mm = np.asarray(depth_mm, dtype=np.float64)[..., None]
    f = np.asarray(f, dtype=np.float64).reshape(-1, 1, 2)
    c = np.asarray(c, dtype=np.float64).reshape(-1, 1, 2)
    return np.concatenate([(uv_px - c) / f * depth_mm, depth_mm], axis=-1)
