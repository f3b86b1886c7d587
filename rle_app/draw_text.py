"""Text on frames: white fill, black outline, wrapped to fit. Pure functions of numpy arrays.

The outline is grown from the fill's own mask (a dilation), never drawn by a second, thicker
``putText``: since OpenCV 5 a glyph's advance depends on the thickness (the app's legend is 368 px
wide at thickness 1 and 386 px at 3 on opencv 5.1), so two ``putText`` calls of different
thickness no longer line up. Masks are alpha in [0, 1]; positions are image px (x right, y down).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_RGB = (255, 255, 255)


def text_masks(text: str, scale: float, thickness: int = 1) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A line of text as two float32 alpha masks in [0, 1] of one (h, w) tile: the fill (one
    ``putText`` of ``thickness``) and its outline (the fill dilated by ``1 + thickness`` px), plus
    the (x, y) in the tile of the text's baseline-left origin. Both masks come from the same glyphs,
    so they line up on every OpenCV."""
    grow = 1 + thickness
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    pad = grow + thickness + 2
    fill = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    cv2.putText(fill, text, (pad, pad + th), FONT, scale, 255, thickness, cv2.LINE_AA)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    outline = cv2.dilate(fill, kernel)
    return fill.astype(np.float32) / 255.0, outline.astype(np.float32) / 255.0, (pad, pad + th)


def text_width(text: str, scale: float, thickness: int = 1) -> int:
    """Drawn width in px of ``text`` (its outline included), as ``_draw_text`` draws it."""
    return cv2.getTextSize(text, FONT, scale, thickness)[0][0] + 2 * (1 + thickness)


def draw_text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5,
              thickness: int = 1) -> None:
    """White text with a black outline, baseline-left at ``org`` (x, y px), clipped to the canvas; in place."""
    fill, outline, (ox, oy) = text_masks(text, scale, thickness)
    x0, y0 = org[0] - ox, org[1] - oy
    h, w = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + fill.shape[1], w), min(y0 + fill.shape[0], h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    tile = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    roi = canvas[cy0:cy1, cx0:cx1].astype(np.float32)
    roi *= 1.0 - outline[tile][..., None]                       # black outline
    roi += (np.float32(TEXT_RGB) - roi) * fill[tile][..., None]  # white fill on top
    canvas[cy0:cy1, cx0:cx1] = np.round(roi).astype(np.uint8)


def wrap_text(text: str, max_width: int, scale: float, thickness: int = 1) -> list[str]:
    """``text`` split at spaces into lines no wider than ``max_width`` px (a single word wider than
    that stays alone on its line)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and text_width(f"{lines[-1]} {word}", scale, thickness) <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def draw_lines_bottom_left(canvas: np.ndarray, texts: Sequence[str], scale: float, thickness: int) -> None:
    """Each text wrapped to the canvas width (a smaller font if a word is still too wide), stacked
    upwards from the bottom-left corner; the first text ends up on top. In place."""
    h, w = canvas.shape[:2]
    margin = 6
    longest = max((max(text_width(word, scale, thickness) for word in t.split(" ")) for t in texts), default=0)
    if longest > w - 2 * margin:
        scale *= (w - 2 * margin) / longest
    lines = [line for t in texts for line in wrap_text(t, w - 2 * margin, scale, thickness)]
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, thickness)
    step = th + base + 2 * thickness + 2
    y = h - margin - base
    for line in reversed(lines):
        draw_text(canvas, line, (margin, y), scale, thickness)
        y -= step
