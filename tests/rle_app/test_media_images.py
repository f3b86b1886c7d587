"""media.read_image (pixel cap before decoding, GIF / palette / 16-bit / EXIF), the video length
limit and the ETA, each against arrays computed here."""
import cv2
import numpy as np
import pytest
from PIL import Image

from rle_app.errors import AppError
from rle_app.loading import ASSETS_DIR, load_2d
from rle_app.media import eta_text, process_video, read_image
from rle_app.pipeline import PosePipeline


def test_huge_png_is_refused_before_any_pixel_is_decoded(huge_png, decoded_sizes):
    assert huge_png.stat().st_size < 1_000_000
    with pytest.raises(AppError, match=r"^huge.png: 13000x13000 px is over this app's limit of 40 megapixels"):
        read_image(huge_png)
    assert decoded_sizes == []


def test_a_small_png_decodes_exactly(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    with pytest.raises(AppError, match="a.png: 40x30 px is over"):
        read_image(tmp_path / "a.png", max_pixels=1199)


def test_gif_palette_grey_alpha_become_rgb(tmp_path):
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    index = np.random.default_rng(1).integers(0, 4, (20, 24), np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette(palette.ravel().tolist())
    im.save(tmp_path / "a.gif")
    im.save(tmp_path / "p.png")
    for name in ("a.gif", "p.png"):
        out = read_image(tmp_path / name)
        assert out.shape == (20, 24, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, palette[index])
    grey = index * 60
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(grey[..., None], 3, axis=2))
    rgba = np.dstack([palette[index], np.full((20, 24), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), palette[index])


def test_16_bit_png_keeps_the_high_byte(tmp_path):
    deep = np.random.default_rng(2).integers(0, 65535, (16, 18)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)               # a 16-bit greyscale PNG
    out = read_image(tmp_path / "d.png")
    assert out.shape == (16, 18, 3)
    np.testing.assert_array_equal(out[..., 0], (deep.astype(np.int64) * 255 // 65535).astype(np.uint8))


def test_exif_rotation_is_honoured(tmp_path):
    rgb = np.zeros((10, 30, 3), np.uint8)
    rgb[:, :5] = 255                                         # a white band on the left
    exif = Image.Exif()
    exif[274] = 6                                            # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (30, 10, 3)
    assert out[:5].mean() > 200 and out[10:].mean() < 30     # the band is now on top


def test_junk_is_a_one_line_error_with_the_name_only(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really" * 50)
    with pytest.raises(AppError) as err:
        read_image(tmp_path / "junk.png")
    assert str(err.value).startswith("junk.png: cannot read this image") and str(tmp_path) not in str(err.value)


def test_eta_text():
    assert eta_text(0, 10, 1.0) == "" and eta_text(10, 10, 5.0) == ""
    assert eta_text(4, 10, 2.0) == "ETA 3 s"                 # 0.5 s per frame, 6 frames left
    assert eta_text(3, 10, 1.0) == "ETA 3 s"                 # 2.33 s, rounded up


def test_video_stops_at_its_length_limit(tmp_path):
    clip = tmp_path / "clip.webm"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"VP80"), 10, (64, 48))
    for i in range(20):                                      # 2.0 s at 10 fps
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    pipe = PosePipeline(load_2d(None, "cpu"), detector="full-frame", checkpoint=ASSETS_DIR / "demo-coco.pth")
    calls = []
    doc = process_video(pipe, clip, tmp_path / "out.webm", progress=lambda i, n: calls.append((i, n)),
                        max_seconds=0.5)
    assert len(doc["frames"]) == 5 and doc["truncated"] is True and doc["duration_s"] == 2.0
    assert calls == [(i, 5) for i in range(1, 6)]
    doc = process_video(pipe, clip, tmp_path / "all.webm", max_seconds=5.0)
    assert len(doc["frames"]) == 20 and doc["truncated"] is False
