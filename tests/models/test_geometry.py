import math

import cv2
import numpy as np

from models import geometry


def _official_three_point_affine(center, width, rot_deg, out_w, out_h):
    """The reference's construction: centre, a point above it rotated, and a third point at 90 deg."""
    rot = math.radians(rot_deg)
    sn, cs = math.sin(rot), math.cos(rot)
    up = np.array([0.0, -0.5 * width])
    src_dir = np.array([up[0] * cs - up[1] * sn, up[0] * sn + up[1] * cs])
    dst_c = np.array([out_w * 0.5, out_h * 0.5])
    src = np.stack([center, center + src_dir, np.zeros(2)])
    dst = np.stack([dst_c, dst_c + np.array([0.0, -0.5 * out_w]), np.zeros(2)])
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))


def test_crop_affine_matches_the_three_point_construction():
    rng = np.random.default_rng(0)
    for _ in range(20):
        center = rng.uniform(0, 500, 2)
        width, rot = rng.uniform(20, 400), rng.uniform(-60, 60)
        ours = geometry.crop_from_image(center[None], np.array([[width, width * 4 / 3]]), rot, (256, 192))[0]
        ref = _official_three_point_affine(center, width, rot, 192, 256)
        np.testing.assert_allclose(ours, ref, atol=2e-3 * max(1, np.abs(ref).max()))


def test_box_to_center_scale_aspect_and_factor():
    center, size = geometry.boxes_to_center_scale(np.array([[10, 20, 110, 420], [0, 0, 300, 100]]), 0.75, 1.25)
    np.testing.assert_allclose(center, [[60, 220], [150, 50]])
    np.testing.assert_allclose(size, [[300 * 1.25, 400 * 1.25], [300 * 1.25, 400 * 1.25]])


def test_inverse_and_apply():
    mats = geometry.crop_from_image(np.array([[100.0, 80.0]]), np.array([[60.0, 80.0]]), 30.0, (256, 192))
    pts = np.array([[[100.0, 80.0], [130.0, 50.0]]])
    crop = geometry.apply_affine(mats, pts)
    np.testing.assert_allclose(crop[0, 0], [96, 128])
    np.testing.assert_allclose(geometry.apply_affine(geometry.invert_affine(mats), crop), pts)
    np.testing.assert_allclose(geometry.norm_to_crop(geometry.crop_to_norm(crop, (256, 192)), (256, 192)), crop)


def test_covariance_maps_through_the_inverse_affine():
    # a crop at 2x magnification rotated by 90 degrees: crop x is image -y, crop y is image x
    mats = geometry.crop_from_image(np.array([[50.0, 50.0]]), np.array([[96.0, 128.0]]), 90.0, (256, 192))
    inv = geometry.invert_affine(mats)
    sigma_norm = np.array([[[4 / 192, 2 / 256]]])  # 4 crop px along x, 2 along y
    cov = geometry.sigma_to_covariance_px(sigma_norm, inv, (256, 192))[0, 0]
    # in the image: half the size (magnification 2), axes swapped by the rotation
    np.testing.assert_allclose(cov, np.diag([1.0 ** 2, 2.0 ** 2]), atol=1e-9)


def test_warp_puts_the_centre_pixel_at_the_crop_centre():
    image = np.zeros((100, 120, 3), np.uint8)
    image[40, 70] = 255
    mats = geometry.crop_from_image(np.array([[70.0, 40.0]]), np.array([[12.0, 16.0]]), 0.0, (16, 12))
    crop = geometry.warp_crops(image, mats, (16, 12))[0]
    assert crop.shape == (16, 12, 3)
    assert crop[8, 6, 0] == 255 and crop.sum() == 255 * 3


def test_crop_size_is_read_back_from_a_rotated_map():
    center, size = np.array([[50.0, 80.0]]), np.array([[120.0, 160.0]])     # aspect 3:4 like 64x48
    mats = geometry.crop_from_image(center, size, 30.0, (64, 48))
    np.testing.assert_allclose(geometry.crop_wh_px(geometry.invert_affine(mats), (64, 48)), size)


def test_warp_of_a_reduced_partial_decode_reads_full_image_coordinates():
    """A linear ramp: bilinear sampling reproduces it exactly, and the block mean of an r x r block
    is the ramp at the block's centre, so a reduced, cropped copy (reduction r, origin o) warped
    with the full-image maps must give the ramp at each crop pixel's full-image position."""
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    full = 0.5 * xx + 0.25 * yy
    mats = geometry.crop_from_image(np.array([[150.0, 120.0], [170.0, 110.0]]), np.array([[96.0, 128.0]] * 2),
                                    np.array([0.0, 25.0]), (32, 24))
    crop_px = np.stack(np.meshgrid(np.arange(24.0), np.arange(32.0)), -1).reshape(1, -1, 2)
    for r, origin in ((1, (0, 0)), (1, (40, 24)), (2, (16, 8)), (4, (32, 16)), (2, (17, 9))):   # last: r does not divide o
        part = full[origin[1]:, origin[0]:]
        h, w = part.shape[0] // r * r, part.shape[1] // r * r
        reduced = part[:h, :w].reshape(h // r, r, w // r, r).mean(axis=(1, 3))
        crops = geometry.warp_crops(reduced, mats, (32, 24), reduction=r, origin_px=origin)
        assert crops.shape == (2, 32, 24) and crops.dtype == np.float32
        for crop, mat in zip(crops, mats):
            xy = geometry.apply_affine(geometry.invert_affine(mat[None]), crop_px)[0]
            expected = (0.5 * xy[:, 0] + 0.25 * xy[:, 1]).reshape(32, 24)
            np.testing.assert_allclose(crop, expected, atol=0.5 * r / 32 + 0.25 * r / 32 + 1e-3)


def test_warp_of_a_full_resolution_region_is_the_whole_image_warp_exactly():
    """A region (r = 1) cut at an origin gives the whole image's crops to the grey level, for rotated
    and scaled maps: the region's pixels are the same, only the origin bookkeeping differs."""
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3)).astype(np.uint8)
    centers = np.array([[150.0, 120.0], [171.3, 109.7], [140.2, 131.9]])
    mats = geometry.crop_from_image(centers, np.array([[75.3, 100.4]] * 3), np.array([0.0, 17.0, -33.0]), (64, 48))
    whole = geometry.warp_crops(image, mats, (64, 48))
    corners = np.array([[[0.0, 0.0], [47.0, 0.0], [47.0, 63.0], [0.0, 63.0]]] * 3)
    read_from = geometry.apply_affine(geometry.invert_affine(mats), corners).min(axis=(0, 1))   # (x, y) px
    for x0, y0 in ((60, 40), (73, 29), (1, 3)):   # all left of and above what the crops read
        assert np.all(read_from - 1 > (x0, y0))   # the region holds every pixel the warps read
        region = image[y0:, x0:].copy()
        np.testing.assert_array_equal(geometry.warp_crops(region, mats, (64, 48), origin_px=(x0, y0)), whole)
