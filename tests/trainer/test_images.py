"""Region JPEG decoding (trainer/data/images.py): crops equal the full decode's at image borders,
rotated and flipped, grey and colour, reduced, from plain JPEGs and from restart-marker copies
(spliced); targets identical; the restart cache; the OpenCV fallback."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from models.config import coco_config
from models.geometry import apply_affine, invert_affine
from trainer.config import AugmentConfig
from trainer.data import images as image_io
from trainer.data.images import (ArrayReader, ImageReadError, JpegReader, RestartCache, _jpeg_roi, crop_bounds_px,
                                 crop_rgb, decode_region, exif_orientation, restart_copy)
from trainer.data.transforms import EvalTransform, Instance, TrainTransform

CFG = coco_config("resnet10t", input_hw=(128, 96))
HW = (237, 317)   # not a multiple of the 16 px MCU: partial MCUs at the right and bottom
# Skipped only outside CI: CI (env CI set, as .ci/run does) builds the extension, so there these
# tests run, and fail loudly if the build went missing.
needs_extension = pytest.mark.skipif(_jpeg_roi is None and not os.environ.get("CI"),
                                     reason="trainer.data._jpeg_roi not built")


def _write_jpeg(path, gray: bool = False, restarts: bool = False):
    """A textured image (smooth waves + noise) as a quality-90 JPEG (4:2:0 colour or grey); with
    ``restarts``, replaced by its restart-marker copy (``restart_copy``)."""
    yy, xx = np.mgrid[0:HW[0], 0:HW[1]].astype(np.float64)
    noise = np.random.default_rng(0).normal(0, 12, (*HW, 3))
    rgb = np.stack([128 + 90 * np.sin(xx / 13 + yy / 29), 128 + 90 * np.cos(xx / 23 - yy / 11),
                    128 + 70 * np.sin((xx + yy) / 17)], -1) + noise
    bgr = np.clip(rgb, 0, 255).astype(np.uint8)[..., ::-1]
    cv2.imwrite(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if gray else bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if restarts:
        path.write_bytes(restart_copy(path.read_bytes()))
    return path


def _instance(box_xyxy) -> Instance:
    joints = np.array([[box_xyxy[0] + 5.0 * j, box_xyxy[1] + 7.0 * j] for j in range(17)])
    return Instance(np.asarray(box_xyxy, np.float64), joints, np.full(17, 2.0), (HW[1], HW[0]))


BOXES = {"inside": (100, 60, 180, 200), "top_left": (-20, -30, 60, 90), "bottom_right": (250, 150, 330, 250),
         "wider_than_image": (-50, 20, 400, 220)}


@needs_extension
@pytest.mark.parametrize("restarts", [False, True], ids=["plain", "restarts"])
@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("where", BOXES)
def test_region_crops_equal_full_decode_crops(tmp_path, where, gray, restarts):
    """Against OpenCV's whole-image decode at the same DCT reduction (r = 1 but for the crop wider
    than the image, r = 4): the same pixels exactly (at r = 1 the full-resolution warp's: a region
    decode at full resolution is as exact as the whole decode)."""
    path = _write_jpeg(tmp_path / "a.jpg", gray, restarts)
    rotated = AugmentConfig(rot_prob=1.0, rot_factor=40.0, flip_prob=0.5, half_body_prob=0.0,
                            color_factor=0.0, occlusion=False)
    reductions = set()
    for transform in (EvalTransform(CFG), TrainTransform(CFG, rotated)):
        for seed in range(4):
            reader = JpegReader(path)
            ours = transform(_instance(BOXES[where]), reader, np.random.default_rng(seed))
            r = reader(ours.crop_from_image, CFG.input_hw).reduction
            whole = JpegReader(path, "full" if r == 1 else "reduced").whole(r)
            full = transform(_instance(BOXES[where]), lambda mat, hw, whole=whole: whole, np.random.default_rng(seed))
            np.testing.assert_array_equal(full.target, ours.target)
            np.testing.assert_array_equal(full.weight, ours.weight)
            np.testing.assert_array_equal(full.image, ours.image, err_msg=f"{where} {gray} {seed} {r}")
            reductions.add(r)
    assert reductions == ({4} if where == "wider_than_image" else {1})


@needs_extension
@pytest.mark.parametrize("restarts", [False, True], ids=["plain", "restarts"])
def test_region_is_partial_and_placed(tmp_path, restarts):
    """Only the region is decoded, and its pixels sit at their full-image place."""
    path = _write_jpeg(tmp_path / "a.jpg", restarts=restarts)
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
@pytest.mark.parametrize("restarts", [False, True], ids=["plain", "restarts"])
@pytest.mark.parametrize("input_hw, r", [((64, 48), 2), ((32, 24), 4), ((21, 16), 8)])
def test_reduced_region_equals_reduced_full_decode(tmp_path, input_hw, r, restarts):
    """Small crops: the region is DCT-scaled exactly as OpenCV's whole reduced decode."""
    path = _write_jpeg(tmp_path / "a.jpg", restarts=restarts)
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
    np.testing.assert_array_equal(ours.image, whole.image)
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
    monkeypatch.setattr(image_io, "_jpeg_roi", None)
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
    assert not crop_rgb(decoded, mat, (16, 12)).any()


@needs_extension
@pytest.mark.parametrize("gray", [False, True])
def test_restart_copy_is_lossless_and_splices_only_the_region(tmp_path, gray, monkeypatch):
    """The copy decodes to the original's pixels exactly; decoding a region of it hands libjpeg a
    spliced JPEG of the region's MCUs only, whose pixels are the full image's at their place."""
    path = _write_jpeg(tmp_path / "a.jpg", gray)
    copy = restart_copy(path.read_bytes())
    original = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(copy, np.uint8), cv2.IMREAD_UNCHANGED), original)
    assert copy.count(b"\xff\xdd") == 1 and 0.9 < len(copy) / path.stat().st_size < 1.1
    seen = []
    real_decode = _jpeg_roi.decode
    monkeypatch.setattr(_jpeg_roi, "decode", lambda data, *a: seen.append(len(data)) or real_decode(data, *a))
    bounds = (150, 100, 190, 140)
    decoded = decode_region(copy, 1, bounds)
    assert seen[-1] < 0.2 * len(copy)   # the whole file is ~100 % of it: the splice was used
    (x, y), (h, w) = decoded.origin_px, decoded.image.shape[:2]
    assert x <= bounds[0] - 1 and y <= bounds[1] - 1 and x + w >= bounds[2] and y + h >= bounds[3]
    full = original if gray else original[..., ::-1]
    np.testing.assert_array_equal(decoded.image[1:-1, 1:-1], full[y + 1:y + h - 1, x + 1:x + w - 1])


@needs_extension
@pytest.mark.parametrize("interval, spliced", [(20, True), (5, True), (40, True), (7, False), (0, False)])
def test_encoder_restart_intervals(tmp_path, interval, spliced):
    """An encoder's own restart markers are spliced when the interval divides the 20-MCU rows or
    spans whole rows; otherwise (or without markers) the region decode is used. Same pixels."""
    bgr = cv2.imread(str(_write_jpeg(tmp_path / "a.jpg")))
    path = tmp_path / "rst.jpg"
    cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, interval])
    data = path.read_bytes()
    assert (_jpeg_roi.splice(data, 100, 100, 140, 140) is not None) == spliced
    full = cv2.imread(str(path))[..., ::-1]
    decoded = decode_region(data, 1, (100, 100, 140, 140))
    (x, y), (h, w) = decoded.origin_px, decoded.image.shape[:2]
    assert x <= 99 and y <= 99 and x + w >= 140 and y + h >= 140
    np.testing.assert_array_equal(decoded.image[1:-1, 1:-1], full[y + 1:y + h - 1, x + 1:x + w - 1])


@needs_extension
def test_restart_cache_makes_reuses_and_refreshes_copies(tmp_path):
    images, cache = tmp_path / "images", tmp_path / "cache"
    images.mkdir()
    _write_jpeg(images / "a.jpg")
    cv2.imwrite(str(images / "b.png"), np.full((20, 30, 3), 99, np.uint8))
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg" * 20)
    lookup = RestartCache(images, cache)
    first = lookup("a.jpg")
    assert first == cache / "a.jpg" and _jpeg_roi.splice(first.read_bytes(), 0, 0, 16, 16) is not None
    made = first.stat().st_ino, first.stat().st_mtime_ns
    assert made[1] == (images / "a.jpg").stat().st_mtime_ns   # the copy carries the original's mtime
    assert lookup("a.jpg") == first and (first.stat().st_ino, first.stat().st_mtime_ns) == made   # reused
    os.utime(images / "a.jpg", ns=(made[1] - 10**9, made[1] - 10**9))   # another file of that name
    assert lookup("a.jpg") == first and first.stat().st_ino != made[0]  # (even an older one): copied again
    assert first.stat().st_mtime_ns == made[1] - 10**9
    assert lookup("b.png") == images / "b.png" and lookup("broken.jpg") == images / "broken.jpg"
    assert lookup("gone.jpg") == images / "gone.jpg" and sorted(p.name for p in cache.iterdir()) == ["a.jpg"]


@needs_extension
@pytest.mark.parametrize("gray", [False, True])
def test_rotated_crop_skips_the_mcus_it_does_not_reach(tmp_path, gray, monkeypatch):
    """A 45-degree crop of a restart copy: the MCUs in the corners of its bounding box are fillers
    (the spliced JPEG is much smaller than the box's segments), and the crop still equals the
    full decode's crop."""
    path = _write_jpeg(tmp_path / "a.jpg", gray, restarts=True)
    data = path.read_bytes()
    transform = EvalTransform(CFG)
    mat = np.asarray(transform(_instance(BOXES["inside"]), JpegReader(path, "full")).crop_from_image, np.float64)
    center = invert_affine(mat[None])[0] @ np.array([CFG.input_hw[1] / 2, CFG.input_hw[0] / 2, 1.0])
    rot = cv2.getRotationMatrix2D((CFG.input_hw[1] / 2, CFG.input_hw[0] / 2), 45.0, 1.6)
    mat = rot @ np.vstack([mat, [0, 0, 1]])   # rotated and narrowed about the crop centre
    assert np.allclose(invert_affine(mat[None])[0] @ np.array([CFG.input_hw[1] / 2, CFG.input_hw[0] / 2, 1.0]), center)
    sizes = []
    real_decode = _jpeg_roi.decode
    monkeypatch.setattr(_jpeg_roi, "decode", lambda d, *a: sizes.append(len(d)) or real_decode(d, *a))
    ours = crop_rgb(JpegReader(path)(mat, CFG.input_hw), mat, CFG.input_hw)
    x0, y0, x1, y1 = crop_bounds_px(mat, CFG.input_hw)
    box_only = _jpeg_roi.splice(data, x0 - 2, y0 - 2, x1 + 2, y1 + 2)[0]
    assert sizes[-1] < 0.8 * len(box_only)
    whole = JpegReader(path, "full").whole(1)
    full = crop_rgb(whole, mat, CFG.input_hw)
    assert np.abs(ours.astype(int) - full.astype(int)).max() <= 1


@needs_extension
def test_restart_cache_that_cannot_be_written_warns_once_and_reads_the_originals(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        _write_jpeg(images / name)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    lookup = RestartCache(images, blocker)
    with pytest.warns(UserWarning, match="cannot write the restart copy") as caught:
        assert lookup("a.jpg") == images / "a.jpg" and lookup("b.jpg") == images / "b.jpg"
    assert len(caught) == 1


@needs_extension
def test_corrupt_restart_copies_never_crash_the_decoder(tmp_path):
    """Flipped bytes, truncations and stray markers in a restart copy: splice and decode give a
    result, None (fall back) or ValueError (a libjpeg error) — never a crash of the process.
    (Checked further under AddressSanitizer with 4000 such cases while writing the extension.)"""
    copy = restart_copy(_write_jpeg(tmp_path / "a.jpg").read_bytes())
    rng = np.random.default_rng(0)
    outcomes = set()
    for it in range(300):
        data = bytearray(copy)
        if it % 3 == 0:
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        elif it % 3 == 1:
            data = data[:int(rng.integers(2, len(data)))]
        else:
            at = int(rng.integers(300, len(data) - 2))
            data[at:at + 2] = bytes([0xFF, int(rng.choice([0xD0, 0xD9, 0xDA, 0xC4, 0xFF]))])
        x0, y0 = (int(v) for v in rng.integers(-40, 300, 2))
        quad = [float(v) for v in rng.uniform(-50, 350, 8)]
        try:
            outcomes.add(type(decode_region(bytes(data), int(rng.choice([1, 2, 4, 8])), (x0, y0, x0 + 60, y0 + 80),
                                            quad)).__name__)
            restart_copy(bytes(data))
        except ValueError:
            outcomes.add("ValueError")
    assert "Decoded" in outcomes and outcomes <= {"Decoded", "NoneType", "ValueError"}
