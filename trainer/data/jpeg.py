"""Decode only what a crop needs: the JPEG region under the crop, DCT-scaled where allowed.

``JpegReader`` is the data sets' ``ImageReader`` for image files. Given the crop's affine it
finds the full-image bounding box of the (possibly rotated) crop plus a bilinear margin, picks
the largest DCT reduction r in {1, 2, 4, 8} keeping >= 1 source px per crop px, and decodes only
that region (``_jpeg_roi``, a small libjpeg-turbo extension: rows above the region are entropy-
decoded and skipped, columns beside it never reach the IDCT, rows below are never read), as RGB.
``transforms.warp_crop`` folds the reduction and the region's origin into the affine, so the crop
equals the full decode's crop up to the DCT scaling (identical at r = 1).

Fallback, same pixels: without the extension (not built), for non-JPEG files, CMYK JPEGs and JPEGs
with an EXIF orientation (OpenCV rotates those; the region would not), OpenCV decodes the whole
image at reduction r (``cv2.IMREAD_REDUCED_COLOR_*``). ``image_decode="full"`` is the plain full
decode (the baseline).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from trainer.data.transforms import Decoded

try:   # optional C extension (pyproject.toml ext-modules); absent -> OpenCV fallback
    from trainer.data import _jpeg_roi
except ImportError:   # pragma: no cover - depends on the build
    _jpeg_roi = None

REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
IMAGE_DECODES = ("reduced", "full")
MARGIN_PX = 2   # beyond the bilinear footprint: covers warpAffine's fixed-point rounding and
                # libjpeg's edge upsampling (the region's first column differs from a full decode)


class ImageReadError(OSError):
    """An image file is missing or cannot be decoded."""


def choose_reduction(src_px_per_out_px: float, max_reduction: int = 8) -> int:
    """Largest JPEG reduction r in {1, 2, 4, 8} (<= max) keeping >= 1 source px per crop px."""
    return max(r for r in REDUCED_FLAGS if r <= max_reduction and r <= max(src_px_per_out_px, 1.0))


def src_px_per_crop_px(crop_from_img: np.ndarray) -> float:
    """Image pixels one crop pixel spans (1 / sqrt|det|) of an affine (2, 3) image px -> crop px."""
    return 1.0 / float(np.sqrt(abs(np.linalg.det(np.asarray(crop_from_img, np.float64)[:, :2]))))


def crop_bounds_px(crop_from_img: np.ndarray, input_hw: tuple[int, int],
                   margin: int = MARGIN_PX) -> tuple[int, int, int, int]:
    """Full-image pixels (x0, y0, x1, y1), ends exclusive, that a bilinear warp of an (H, W) crop
    with ``crop_from_img`` (2, 3) reads: the crop's corner pixel centres mapped to the image, their
    bounding box widened to whole pixels and by ``margin``. Not clipped to the image."""
    mat = np.asarray(crop_from_img, np.float64)
    h, w = input_hw
    corners_crop = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    corners_img = np.linalg.solve(mat[:, :2], (corners_crop - mat[:, 2]).T).T
    lo = np.floor(corners_img.min(0)).astype(np.int64) - margin
    hi = np.floor(corners_img.max(0)).astype(np.int64) + 2 + margin
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


def exif_orientation(data: bytes) -> int:
    """EXIF orientation tag (1..8) of a JPEG's APP1 block, 1 when absent or unreadable."""
    start = data.find(b"Exif\x00\x00", 0, 65536)
    if start < 0:
        return 1
    tiff = data[start + 6:start + 65536]
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    num = lambda at, size: int.from_bytes(tiff[at:at + size], order)
    ifd = num(4, 4)
    for i in range(num(ifd, 2) if ifd + 2 <= len(tiff) else 0):
        entry = ifd + 2 + 12 * i
        if entry + 12 <= len(tiff) and num(entry, 2) == 0x0112:
            return num(entry + 8, 2)
    return 1


def decode_region(data: bytes, reduction: int, bounds_px: tuple[int, int, int, int]) -> Decoded | None:
    """Decode the full-image px region ``bounds_px`` (x0, y0, x1, y1) of a JPEG at ``reduction``
    -> ``Decoded`` RGB (h, w, 3) or grey (h, w) uint8 with its origin; None when the extension is
    missing or cannot take this file (not a JPEG, CMYK, EXIF-rotated): use the fallback."""
    if _jpeg_roi is None or data[:2] != b"\xff\xd8" or exif_orientation(data) != 1:
        return None
    r = reduction   # full px x covers reduced px (x - (r - 1) / 2) / r: widen to whole reduced px
    x0, y0, x1, y1 = bounds_px
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
    return Decoded(image, r, False, (r * x, r * y))


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
            decoded = decode_region(data, r, crop_bounds_px(crop_from_img, input_hw))
            if decoded is not None:
                return decoded
        return self.whole(r)

    def whole(self, reduction: int) -> Decoded:
        """The whole image at ``reduction`` by OpenCV (BGR, grey as 3 channels)."""
        image = cv2.imread(self.path, REDUCED_FLAGS[reduction])
        if image is None:
            raise ImageReadError(f"{self.path}: missing or not a decodable image")
        return Decoded(image, reduction, True)
