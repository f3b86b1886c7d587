"""Decode only what a crop needs: the JPEG region under the crop, DCT-scaled where allowed.

``JpegReader`` is the data sets' ``ImageReader`` for image files. Given the crop's affine it
finds the full-image bounding box of the (possibly rotated) crop plus a bilinear margin, picks
the largest DCT reduction r in {1, 2, 4, 8} keeping >= 1 source px per crop px, and decodes only
that region, as RGB, with ``_jpeg_roi`` (a small libjpeg-turbo extension):
- a JPEG with restart markers aligned to its MCU rows (``RestartCache``'s copies): the restart
  segments under the region are spliced into a small JPEG and only that is decoded. Nothing
  outside the region is entropy-decoded: the cost follows the crop's area, not the image's;
- any other JPEG: rows above the region are entropy-decoded and skipped (Huffman data has no
  entry points), columns beside it never reach the IDCT, rows below are never read.
``crop_rgb`` (``models.geometry.warp_crops``) places the region at its origin on a zero canvas and
folds the reduction into the affine, so the crop equals the whole decode's crop at the same
reduction: at r = 1 exactly the full-resolution warp's pixels (tests/trainer/test_images.py).

``RestartCache`` keeps, per image, a lossless copy (the DCT coefficients copied, not re-encoded
from pixels) with a restart marker after every MCU, made on an image's first use (one-time cost
about 2 full decodes; the copy's size is the original's within a few per cent, as the copy's
Huffman tables are optimised). It is opt-in (``data.image_cache``), as it needs disk space.

Fallback, same pixels: without the extension (not built), for non-JPEG files, CMYK JPEGs and JPEGs
with an EXIF orientation (OpenCV rotates those; the region would not), OpenCV decodes the whole
image at reduction r (``cv2.IMREAD_REDUCED_COLOR_*``). ``image_decode="full"`` is the plain full
decode (the baseline).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np

from models.files import write_bytes_atomic
from models.geometry import apply_affine, invert_affine, warp_crops

try:   # optional C extension (pyproject.toml ext-modules); absent -> OpenCV fallback
    from trainer.data import _jpeg_roi
except ImportError:   # pragma: no cover - depends on the build
    _jpeg_roi = None

REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
IMAGE_DECODES = ("reduced", "full")
MARGIN_PX = 2   # beyond the bilinear footprint: covers warpAffine's fixed-point rounding and
                # libjpeg's edge upsampling (the region's first column differs from a full decode)


class Decoded(NamedTuple):
    """A decoded image or image region: (h, w, 3) or (h, w) uint8; pixel i of it covers full-image
    pixels [o + r*i, o + r*i + r) (centre o + r*i + (r-1)/2) for ``reduction`` r and origin o
    (``origin_px`` (x, y), full-image px); ``bgr`` tells the channel order."""

    image: np.ndarray
    reduction: int
    bgr: bool
    origin_px: tuple[int, int] = (0, 0)


# (crop_from_img (2, 3) image px -> crop px, crop input_hw) -> the pixels the crop needs
ImageReader = Callable[[np.ndarray, tuple[int, int]], Decoded]


class ArrayReader:
    """An in-memory RGB (or grey) image as an ``ImageReader`` (never reduced)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image

    def __call__(self, crop_from_img: np.ndarray, input_hw: tuple[int, int]) -> Decoded:
        return Decoded(self.image, 1, False)


def crop_rgb(decoded: Decoded, crop_from_img: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """The (H, W, 3) uint8 RGB crop of a (possibly reduced, possibly partial) decode with
    ``crop_from_img`` (2, 3, full-image px -> crop px): ``geometry.warp_crops`` at the decode's
    reduction and origin, then colour conversion on the crop only."""
    crop = warp_crops(decoded.image, np.asarray(crop_from_img)[None], input_hw, decoded.reduction,
                      decoded.origin_px)[0]
    if crop.ndim == 2 or crop.shape[2] == 1:
        return cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB) if decoded.bgr else crop


class ImageReadError(OSError):
    """An image file is missing or cannot be decoded."""


def choose_reduction(src_px_per_out_px: float, max_reduction: int = 8) -> int:
    """Largest JPEG reduction r in {1, 2, 4, 8} (<= max) keeping >= 1 source px per crop px."""
    return max(r for r in REDUCED_FLAGS if r <= max_reduction and r <= max(src_px_per_out_px, 1.0))


def src_px_per_crop_px(crop_from_img: np.ndarray) -> float:
    """Image pixels one crop pixel spans (1 / sqrt|det|) of an affine (2, 3) image px -> crop px."""
    (a, b, _), (c, d, _) = np.asarray(crop_from_img, np.float64).tolist()
    return 1.0 / float(np.sqrt(abs(a * d - b * c)))


def crop_corners_px(crop_from_img: np.ndarray, input_hw: tuple[int, int]) -> list[float]:
    """The crop's corner pixel centres in full-image px, in order around the crop:
    [x, y] * 4 flattened (the quad a bilinear warp reads within 1 px of)."""
    h, w = input_hw
    corners_crop = np.array([[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]], np.float64)
    image_from_crop = invert_affine(np.asarray(crop_from_img, np.float64)[None])
    return apply_affine(image_from_crop, corners_crop)[0].reshape(-1).tolist()


def crop_bounds_px(crop_from_img: np.ndarray, input_hw: tuple[int, int],
                   margin: int = MARGIN_PX) -> tuple[int, int, int, int]:
    """Full-image pixels (x0, y0, x1, y1), ends exclusive, that a bilinear warp of an (H, W) crop
    with ``crop_from_img`` (2, 3) reads: the crop's corner pixel centres mapped to the image, their
    bounding box widened to whole pixels and by ``margin``. Not clipped to the image."""
    return quad_bounds_px(crop_corners_px(crop_from_img, input_hw), margin)


def quad_bounds_px(quad_px: list[float], margin: int = MARGIN_PX) -> tuple[int, int, int, int]:
    """``crop_bounds_px`` from the crop's corners (``crop_corners_px``)."""
    xs, ys = quad_px[0::2], quad_px[1::2]
    return (math.floor(min(xs)) - margin, math.floor(min(ys)) - margin,
            math.floor(max(xs)) + 2 + margin, math.floor(max(ys)) + 2 + margin)


def exif_orientation(data: bytes) -> int:
    """EXIF orientation tag (1..8) of a JPEG's APP1 block, 1 when absent or unreadable. Walks the
    marker segments before the image data (an EXIF block elsewhere is not the image's)."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF and data[at + 1] not in (0xDA, 0xD9):
        size = int.from_bytes(data[at + 2:at + 4], "big")
        if data[at + 1] == 0xE1 and data[at + 4:at + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[at + 10:at + 2 + size])
        at += 2 + size
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    """The orientation tag (0x0112) of a TIFF header's first IFD, 1 when absent or unreadable."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    def num(at, size):
        return int.from_bytes(tiff[at:at + size], order)
    ifd = num(4, 4)
    for i in range(num(ifd, 2) if ifd + 2 <= len(tiff) else 0):
        entry = ifd + 2 + 12 * i
        if entry + 12 <= len(tiff) and num(entry, 2) == 0x0112:
            return num(entry + 8, 2)
    return 1


def decode_region(data: bytes, reduction: int, bounds_px: tuple[int, int, int, int],
                  quad_px: list[float] | None = None) -> Decoded | None:
    """Decode the full-image px region ``bounds_px`` (x0, y0, x1, y1) of a JPEG at ``reduction``
    -> ``Decoded`` RGB (h, w, 3) or grey (h, w) uint8 with its origin; None when the extension is
    missing or cannot take this file (not a JPEG, CMYK, EXIF-rotated): use the fallback.
    ``quad_px`` (``crop_corners_px``): with restart markers, MCUs farther than a margin from this
    quad are not decoded either (their pixels are filler, never read by the warp)."""
    if _jpeg_roi is None or data[:2] != b"\xff\xd8" or exif_orientation(data) != 1:
        return None
    r = reduction   # full px x covers reduced px (x - (r - 1) / 2) / r: widen to whole reduced px
    x0, y0, x1, y1 = bounds_px
    ox = oy = 0
    # margin around the quad: the bilinear neighbour and libjpeg's edge upsampling (1 reduced px
    # each) beside the filler MCUs, plus MARGIN_PX as for the bounds
    spliced = _jpeg_roi.splice(data, x0 - 2 * r, y0 - 2 * r, x1 + 2 * r, y1 + 2 * r, quad_px,
                               float(MARGIN_PX + 2 * r))
    if spliced is not None:   # restart markers: a small JPEG of the region's MCUs (origin: MCU
        data, ox, oy = spliced   # multiples, hence multiples of r)
        x0, y0, x1, y1 = x0 - ox, y0 - oy, x1 - ox, y1 - oy
    try:
        out = _jpeg_roi.decode(data, r, x0 // r - 1, y0 // r - 1, -(-x1 // r) + 1, -(-y1 // r) + 1)
    except ValueError:
        return None   # OpenCV decides: often a decodable-with-warnings file, else ImageReadError
    if out is None:
        return None
    pixels, x, y, w, h, channels = out
    if w == 0 or h == 0:   # the crop lies wholly outside the image: a zero crop, as a full decode's
        return Decoded(np.zeros((1, 1), np.uint8), r, False)
    image = np.frombuffer(pixels, np.uint8).reshape((h, w, channels) if channels > 1 else (h, w))
    return Decoded(image, r, False, (ox + r * x, oy + r * y))


def restart_copy(data: bytes) -> bytes | None:
    """A JPEG's lossless copy with a restart marker per MCU (``_jpeg_roi.add_restarts``), or None
    when the region decoder would not use one (no extension, not a JPEG, CMYK, EXIF-rotated) or the
    file does not decode."""
    if _jpeg_roi is None or data[:2] != b"\xff\xd8" or exif_orientation(data) != 1:
        return None
    try:
        return _jpeg_roi.add_restarts(data)
    except ValueError:
        return None


class RestartCache:
    """Image file name -> the path to read: the copy in ``cache_dir`` with a restart marker per MCU
    (made on first use), or the original where no copy helps (``restart_copy`` None; nothing is
    written then). A copy carries its original's mtime and is used only while the two agree, so
    a changed original, or another data set's file of the same name in a shared cache, is copied
    again. Several loader workers and DDP ranks may make the same copy at once: each write is
    atomic, and the copies are identical."""

    def __init__(self, image_dir: str | Path, cache_dir: str | Path) -> None:
        self.image_dir, self.cache_dir = Path(image_dir), Path(cache_dir)
        self.warned = False   # one warning per process when copies cannot be written

    def __call__(self, name: str) -> Path:
        src, cached = os.path.join(self.image_dir, name), os.path.join(self.cache_dir, name)
        try:
            mtime_ns = os.stat(src).st_mtime_ns
            if os.stat(cached).st_mtime_ns == mtime_ns:   # a copy of this very file
                return Path(cached)
        except OSError:   # no copy yet (or no original: the reader names it)
            pass
        try:
            with open(src, "rb") as f:   # the mtime of the bytes that are copied
                mtime_ns = os.fstat(f.fileno()).st_mtime_ns
                copy = restart_copy(f.read())
        except OSError:
            return Path(src)
        if copy is None:
            return Path(src)
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            # the copy carries its original's mtime from the moment it appears
            return write_bytes_atomic(cached, copy, fsync=False, mtime_ns=mtime_ns)
        except OSError as err:   # e.g. a full disk: train on, from the originals
            if not self.warned:
                warnings.warn(f"{cached}: cannot write the restart copy ({err.strerror or err}); "
                              "reading the originals where no copy exists (free space in "
                              "data.image_cache)", stacklevel=2)
                self.warned = True
            return Path(src)


def cache_overlaps_images(image_dir: str | Path, cache_dir: str | Path) -> bool:
    """Whether restart copies in ``cache_dir`` would land in ``image_dir`` itself or inside it
    (over the originals, or nested in the image folder): such a cache is refused."""
    images, cache = Path(image_dir).resolve(), Path(cache_dir).resolve()
    return cache == images or images in cache.parents


def truncated_jpegs(paths: list[Path], tail_bytes: int = 4096) -> list[Path]:
    """The JPEG files (by their first bytes, FF D8) among ``paths`` whose end-of-image marker
    (FF D9) is missing from their last ``tail_bytes``: cut-off files, which OpenCV decodes
    without an error (grey below the cut). FF D9 cannot occur inside entropy-coded data (an FF
    there is followed by 00 or a restart marker), so its presence near the end is a sound test."""
    bad = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                if f.read(2) != b"\xff\xd8":
                    continue
                f.seek(max(0, os.fstat(f.fileno()).st_size - tail_bytes))
                if b"\xff\xd9" not in f.read():
                    bad.append(Path(path))
        except OSError:
            continue   # missing or unreadable: require_images names those
    return bad


class JpegReader:
    """``ImageReader`` for an image file. ``image_decode``: "reduced" (the fast path: the crop's
    region only, DCT-scaled; module docstring) or "full" (whole image, full size, as cv2.imread).
    Returns RGB or grey (region) or BGR (OpenCV) pixels; raises ImageReadError."""

    def __init__(self, path: str | Path, image_decode: str = "reduced") -> None:
        if image_decode not in IMAGE_DECODES:
            raise ValueError(f"image_decode '{image_decode}': expected one of {', '.join(IMAGE_DECODES)}")
        self.path, self.fast = str(path), image_decode == "reduced"

    def __call__(self, crop_from_img: np.ndarray, input_hw: tuple[int, int]) -> Decoded:
        r = choose_reduction(src_px_per_crop_px(crop_from_img), 8 if self.fast else 1)
        if self.fast and _jpeg_roi is not None:
            try:
                data = Path(self.path).read_bytes()
            except OSError:
                raise ImageReadError(f"{self.path}: missing or not a decodable image") from None
            quad = crop_corners_px(crop_from_img, input_hw)
            decoded = decode_region(data, r, quad_bounds_px(quad), quad)
            if decoded is not None:
                return decoded
        return self.whole(r)

    def whole(self, reduction: int) -> Decoded:
        """The whole image at ``reduction`` by OpenCV (BGR, grey as 3 channels)."""
        image = cv2.imread(self.path, REDUCED_FLAGS[reduction])
        if image is None:
            raise ImageReadError(f"{self.path}: missing or not a decodable image")
        return Decoded(image, reduction, True)
