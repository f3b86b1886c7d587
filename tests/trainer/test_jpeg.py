"""Region JPEG decoding (trainer/data/jpeg.py): crops equal the full decode's at image borders,
rotated and flipped, grey and colour, reduced; targets identical; the OpenCV fallback."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.config import coco_config
from models.geometry import apply_affine, invert_affine
from trainer.config import AugmentConfig
from trainer.data import jpeg
from trainer.data.jpeg import ImageReadError, JpegReader, crop_bounds_px, decode_region, exif_orientation
from trainer.data.transforms import ArrayReader, EvalTransform, Instance, TrainTransform, warp_crop

CFG = coco_config("resnet10t", input_hw=(128, 96))
HW = (237, 317)   # not a multiple of the 16 px MCU: partial MCUs at the right and bottom
needs_extension = pytest.mark.skipif(jpeg._jpeg_roi is None, reason="trainer.data._jpeg_roi not built")


def _write_jpeg(path, gray: bool = False):
    """A textured image (smooth waves + noise) as a quality-90 JPEG (4:2:0 colour or grey)."""
    yy, xx = np.mgrid[0:HW[0], 0:HW[1]].astype(np.float64)
    noise = np.random.default_rng(0).normal(0, 12, (*HW, 3))
    rgb = np.stack([128 + 90 * np.sin(xx / 13 + yy / 29), 128 + 90 * np.cos(xx / 23 - yy / 11),
                    128 + 70 * np.sin((xx + yy) / 17)], -1) + noise
    bgr = np.clip(rgb, 0, 255).astype(np.uint8)[..., ::-1]
    cv2.imwrite(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if gray else bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def _instance(box_xyxy) -> Instance:
    joints = np.array([[box_xyxy[0] + 5.0 * j, box_xyxy[1] + 7.0 * j] for j in range(17)])
    return Instance(np.asarray(box_xyxy, np.float64), joints, np.full(17, 2.0), (HW[1], HW[0]))


BOXES = {"inside": (100, 60, 180, 200), "top_left": (-20, -30, 60, 90), "bottom_right": (250, 150, 330, 250),
         "wider_than_image": (-50, 20, 400, 220)}


@needs_extension
@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("where", BOXES)
def test_region_crops_equal_full_decode_crops(tmp_path, where, gray):
    """Against OpenCV's whole-image decode at the same DCT reduction (r = 1 but for the crop wider
    than the image, r = 4): the same pixels (libjpeg versions may round 1 grey level apart)."""
    path = _write_jpeg(tmp_path / "a.jpg", gray)
    rotated = AugmentConfig(rot_prob=1.0, rot_factor=40.0, flip_prob=0.5, half_body_prob=0.0,
                            color_factor=0.0, occlusion=False)
    reductions = set()
    for transform in (EvalTransform(CFG), TrainTransform(CFG, rotated)):
        for seed in range(4):
            reader = JpegReader(path)
            ours = transform(_instance(BOXES[where]), reader, np.random.default_rng(seed))
            r = reader(ours.crop_from_image, CFG.input_hw).reduction
            whole = JpegReader(path, "full" if r == 1 else "reduced").whole(r)
            full = transform(_instance(BOXES[where]), lambda mat, hw: whole, np.random.default_rng(seed))
            np.testing.assert_array_equal(full.target, ours.target)
            np.testing.assert_array_equal(full.weight, ours.weight)
            diff = np.abs(full.image.astype(int) - ours.image.astype(int))
            assert diff.max() <= 1, (where, gray, seed, r, diff.max())
            reductions.add(r)
    assert reductions == ({4} if where == "wider_than_image" else {1})


@needs_extension
def test_region_is_partial_and_placed(tmp_path):
    """Only the region is decoded, and its pixels sit at their full-image place."""
    path = _write_jpeg(tmp_path / "a.jpg")
    full = cv2.imread(str(path))[..., ::-1]
    bounds = (101, 37, 160, 90)
    decoded = decode_region(path.read_bytes(), 1, bounds)
    h, w = decoded.image.shape[:2]
    x, y = decoded.origin_px
    assert x <= bounds[0] - 1 and y <= bounds[1] - 1 and x + w >= bounds[2] and y + h >= bounds[3]
    assert h * w < 0.1 * HW[0] * HW[1] and not decoded.bgr
    inner = np.abs(decoded.image[:, 1:].astype(int) - full[y:y + h, x + 1:x + w].astype(int))
    assert inner.max() <= 1   # column 0 may differ: libjpeg's edge upsampling (outside the margin)


@needs_extension
@pytest.mark.parametrize("input_hw, r", [((64, 48), 2), ((32, 24), 4), ((21, 16), 8)])
def test_reduced_region_equals_reduced_full_decode(tmp_path, input_hw, r):
    """Small crops: the region is DCT-scaled exactly as OpenCV's whole reduced decode."""
    path = _write_jpeg(tmp_path / "a.jpg")
    cfg = CFG.replace(input_hw=input_hw)
    transform = TrainTransform(cfg, AugmentConfig(rot_prob=1.0, half_body_prob=0.0, color_factor=0.0,
                                                  occlusion=False, scale_factor=0.0))
    inst = _instance(BOXES["inside"])
    reader = JpegReader(path)
    ours = transform(inst, reader, np.random.default_rng(1))
    assert reader(ours.crop_from_image, input_hw).reduction == r
    whole = transform(inst, lambda mat, hw: JpegReader(path).whole(r), np.random.default_rng(1))
    full = transform(inst, JpegReader(path, "full"), np.random.default_rng(1))
    np.testing.assert_array_equal(ours.target, full.target)
    assert np.abs(ours.image.astype(int) - whole.image.astype(int)).max() <= 1
    assert np.abs(ours.image.astype(float) - full.image.astype(float))[2:-2, 2:-2].mean() < 6.0


def test_crop_bounds_cover_every_sampled_pixel():
    """Independent: map every crop pixel centre back to the image; bilinear reads floor..floor+1."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        transform = TrainTransform(CFG, AugmentConfig(rot_prob=1.0, rot_factor=60.0, half_body_prob=0.0))
        mat = transform(_instance(BOXES["inside"]), ArrayReader(np.zeros((*HW, 3), np.uint8)), rng).crop_from_image
        yy, xx = np.mgrid[0:CFG.input_hw[0], 0:CFG.input_hw[1]]
        pts = np.stack([xx.ravel(), yy.ravel()], -1)[None].astype(np.float64)
        img = apply_affine(invert_affine(mat[None].astype(np.float64)), pts)[0]
        x0, y0, x1, y1 = crop_bounds_px(mat, CFG.input_hw, margin=0)
        assert np.floor(img[:, 0]).min() >= x0 and np.floor(img[:, 0]).max() + 1 < x1
        assert np.floor(img[:, 1]).min() >= y0 and np.floor(img[:, 1]).max() + 1 < y1


@pytest.mark.parametrize("gray", [False, True])
def test_fallback_without_extension_gives_the_same_crop(tmp_path, monkeypatch, gray):
    path = _write_jpeg(tmp_path / "a.jpg", gray)
    transform = TrainTransform(CFG, AugmentConfig(rot_prob=1.0, half_body_prob=0.0))
    with_ext = transform(_instance(BOXES["top_left"]), JpegReader(path), np.random.default_rng(5))
    monkeypatch.setattr(jpeg, "_jpeg_roi", None)
    decoded = JpegReader(path)(with_ext.crop_from_image, CFG.input_hw)
    assert decoded.bgr and decoded.origin_px == (0, 0) and decoded.image.shape[:2] == HW
    fallback = transform(_instance(BOXES["top_left"]), JpegReader(path), np.random.default_rng(5))
    np.testing.assert_array_equal(with_ext.target, fallback.target)
    assert np.abs(with_ext.image.astype(int) - fallback.image.astype(int)).max() <= 1


def test_files_the_region_decoder_refuses_fall_back(tmp_path):
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.full((40, 50, 3), 200, np.uint8))
    mat = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert decode_region(png.read_bytes(), 1, (0, 0, 10, 10)) is None
    decoded = JpegReader(png)(mat, (16, 12))
    assert decoded.bgr and decoded.image.shape == (40, 50, 3)
    broken = tmp_path / "b.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg" * 10)
    with pytest.raises(ImageReadError, match="b.jpg: missing or not a decodable image"):
        JpegReader(broken)(mat, (16, 12))
    with pytest.raises(ImageReadError, match="nothere.jpg: missing"):
        JpegReader(tmp_path / "nothere.jpg")(mat, (16, 12))
    with pytest.raises(ValueError, match="image_decode 'roi'"):
        JpegReader(broken, "roi")


def _exif_app1(orientation: int, order: bytes = b"MM") -> bytes:
    end = "big" if order == b"MM" else "little"
    u16, u32 = (lambda v: v.to_bytes(2, end)), (lambda v: v.to_bytes(4, end))
    tiff = order + u16(42) + u32(8) + u16(1) + u16(0x0112) + u16(3) + u32(1) + u16(orientation) + u16(0) + u32(0)
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body


@pytest.mark.parametrize("order", [b"MM", b"II"])
def test_exif_rotated_jpegs_use_opencv(tmp_path, order):
    """OpenCV applies EXIF orientation; the region decoder would not, so such files fall back."""
    data = _write_jpeg(tmp_path / "a.jpg").read_bytes()
    rotated = data[:2] + _exif_app1(6, order) + data[2:]
    assert exif_orientation(rotated) == 6 and exif_orientation(data) == 1
    assert exif_orientation(data[:2] + _exif_app1(1, order) + data[2:]) == 1
    assert decode_region(rotated, 1, (0, 0, 10, 10)) is None


@needs_extension
def test_crop_outside_the_image_is_zero(tmp_path):
    path = _write_jpeg(tmp_path / "a.jpg")
    mat = np.array([[1.0, 0, 1000.0], [0, 1.0, 1000.0]])   # the crop sees image px (-1000, -1000)...
    decoded = JpegReader(path)(mat, (16, 12))
    assert not decoded.image.any()
    assert not warp_crop(decoded, mat, (16, 12)).any()
