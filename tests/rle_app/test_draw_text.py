"""rle_app/draw_text.py and the app's frame text: on the installed OpenCV the outline encloses the fill
(one copy of the glyphs, not two), the legend fits narrow frames, hidden joints are announced, large
ellipses leave the photo visible, FPS stays clear of the UI's top-left label."""
import cv2
import numpy as np
import pytest

from rle_app import draw
from rle_app.draw_text import draw_text, wrap_text

GREY = 128
LEGEND = "ellipses: nominal 68% Gaussian level (r=1.51); outline colour = confidence, red low to green high"


def _reference_fill(shape_hw, text, org, scale, thickness):
    """The glyphs as one plain cv2.putText draws them: the independent reference for the fill."""
    mask = np.zeros(shape_hw, np.uint8)
    cv2.putText(mask, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    return mask


@pytest.mark.parametrize("scale, thickness", [(0.45, 1), (0.9, 2)])
def test_outline_encloses_the_fill_on_the_installed_opencv(scale, thickness):
    canvas = np.full((80, 900, 3), GREY, np.uint8)
    org = (10, 50)
    draw_text(canvas, LEGEND, org, scale, thickness)
    ref = _reference_fill(canvas.shape[:2], LEGEND, org, scale, thickness)
    # distance of every pixel to the nearest reference glyph pixel (any / solid coverage)
    dist = cv2.distanceTransform(np.where(ref > 0, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
    dist_solid = cv2.distanceTransform(np.where(ref >= 200, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
    changed = (canvas != GREY).any(-1)
    assert changed.any()
    assert dist[changed].max() <= 1 + thickness + 1.5     # no second, shifted copy anywhere
    assert (canvas[ref == 255] >= 250).all()               # the glyph cores are white
    ring = (ref == 0) & (dist_solid <= 1 + thickness)      # just outside the glyphs
    assert (canvas[ring].max(-1) <= 60).mean() > 0.95      # ... is black: the outline encloses the fill


@pytest.mark.parametrize("width", [320, 480, 640])
def test_legend_fits_the_frame(width):
    h = width * 3 // 4
    out = draw.draw_poses(np.full((h, width, 3), GREY, np.uint8), np.zeros((0, 17, 2)), np.zeros((0, 17)),
                          np.zeros((0, 17, 2, 2)), [], ellipse_scale=1.0)
    cols = np.flatnonzero((out != GREY).any(-1).any(0))
    assert len(cols) > 0 and cols.min() >= 2 and cols.max() <= width - 3   # not cut at either edge
    rows = np.flatnonzero((out != GREY).any(-1).any(1))
    assert rows.min() > h // 2                                               # a few lines at the bottom


def test_wrap_text_keeps_every_word_and_respects_the_width():
    lines = wrap_text(LEGEND, 200, 0.45, 1)
    assert " ".join(lines) == LEGEND and len(lines) > 1
    widths = [cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] for line in lines]
    assert max(widths) <= 200


def test_hidden_joints_are_counted_and_announced():
    rng = np.random.default_rng(1)
    kpts = rng.uniform(100, 300, (2, 17, 2))
    conf = rng.uniform(0, 1, (2, 17))
    kpts[1, 3] = np.nan                                   # a missing joint is not "hidden by the threshold"
    want = sum(1 for n in range(2) for k in range(17) if np.isfinite(kpts[n, k]).all() and conf[n, k] < 0.3)
    assert draw.hidden_joints(kpts, conf, 0.3) == (want, 33)
    notice = draw.hidden_notice(want, 33, 0.3)
    assert notice.startswith(f"{want} of 33 joints hidden") and "confidence threshold slider" in notice
    assert draw.hidden_notice(0, 33, 0.3) == ""
    image = np.full((480, 640, 3), GREY, np.uint8)
    shown = draw.draw_poses(image, kpts, np.ones((2, 17)), None, [])
    hidden = draw.draw_poses(image, kpts, np.zeros((2, 17)), None, [])
    assert (hidden != GREY).any(-1)[440:].any()           # the notice: bottom lines
    assert not (hidden != GREY).any(-1)[:400].any()       # and nothing of the hidden people
    assert not (shown != GREY).any(-1)[440:, :80].any()   # no notice when all are shown


def test_large_ellipses_leave_the_photo_visible_and_scale_zero_turns_them_off():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (480, 640, 3), np.uint8)
    kpts = rng.uniform(200, 400, (1, 17, 2))
    cov = np.broadcast_to(np.eye(2) * 300.0 ** 2, (1, 17, 2, 2))   # sigma 300 px: larger than the frame
    out = draw.draw_poses(image, kpts, np.ones((1, 17)), cov, [])
    changed = (out != image).any(-1)[:400]                # above the legend
    assert changed.mean() < 0.05                          # outlines only: the old 30 % fill tinted ~all
    off = draw.draw_poses(image, kpts, np.ones((1, 17)), cov, [], ellipse_scale=0.0)
    assert np.array_equal(off, draw.draw_poses(image, kpts, np.ones((1, 17)), None, []))


def test_small_ellipses_get_a_light_fill():
    image = np.zeros((480, 640, 3), np.uint8)
    out = draw.draw_poses(image, np.array([[[320.0, 240.0]]]), np.ones((1, 1)),
                          np.array([[np.eye(2) * 10.0 ** 2]]), [], joint_names=["nose"])
    inside = out[240, 320 - 8]                            # inside the 15 px ellipse, off the dot
    assert 0 < inside.max() <= 0.2 * 255                  # tinted, lightly


def test_fps_is_drawn_top_right_clear_of_the_ui_label():
    out = draw.draw_poses(np.full((480, 640, 3), GREY, np.uint8), np.zeros((0, 17, 2)), np.zeros((0, 17)),
                          None, [], fps=29.7)
    changed = (out != GREY).any(-1)
    assert changed[:40, 520:].any() and not changed[:, :400].any()
