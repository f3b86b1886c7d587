"""The app on loopback, driven by gradio_client: predict_image, predict_video, predict_frame.

The models are official checkpoints (coco-laplace-rle.pth, h36m-laplace-rle.pth: the official keys and
shapes, tests/data) whose head weights are zero, so every crop gets the same known (u, v[, d]) and
sigma; the expected image pixels are computed here from the box alone (centre + u * crop width, ...).
"""
import json
import socket

import cv2
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file

from models.checkpoint import load_model
from rle_app import detect
from rle_app.cli import build_app
from rle_app.loading import ASSETS_DIR

MU_2D = np.stack([np.linspace(-0.3, 0.3, 17), np.linspace(-0.4, 0.4, 17)], axis=1)
SIGMA = 0.05


def _expected_px(mu, image_hw, input_hw, box_factor):
    """Full-frame detector: the largest centred box of the model's aspect, times box_factor."""
    h, w = image_hw
    crop_h = h * box_factor                       # the box is h tall, (h * W/H) wide: aspect fits
    crop_w = crop_h * input_hw[1] / input_hw[0]
    return np.array([w / 2, h / 2]) + mu[:, :2] * [crop_w, crop_h]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory, official_state):
    folder = tmp_path_factory.mktemp("ckpt")
    mu_3d = np.concatenate([np.zeros((18, 2)), np.linspace(-0.1, 0.1, 18)[:, None]], axis=1)
    torch.save(official_state("coco-laplace-rle.pth", mu=MU_2D, sigma=SIGMA), folder / "coco-laplace-rle.pth")
    torch.save({"state_dict": official_state("h36m-laplace-rle.pth", mu=mu_3d, sigma=SIGMA)},
               folder / "h36m-laplace-rle.pth")
    config_2d = load_model(folder / "coco-laplace-rle.pth").config
    demo, allowed = build_app(str(folder / "coco-laplace-rle.pth"), str(folder / "h36m-laplace-rle.pth"),
                              detector="full-frame", device="cpu")
    demo.queue()
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, allowed_paths=allowed,
                max_file_size="20mb", show_error=True)
    yield Client(f"http://127.0.0.1:{port}", verbose=False), config_2d, mu_3d
    demo.close()


def test_predict_image_returns_the_known_keypoints(app, tmp_path):
    client, cfg, mu_3d = app
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), image)
    drawn, json_path = client.predict(handle_file(str(tmp_path / "in.png")), api_name="/predict_image")
    doc = json.loads(open(json_path).read())
    assert doc["model"]["source"] == "official:coco-laplace-rle.pth" and doc["model"]["dims"] == 2
    assert doc["model_3d"]["source"] == "official:h36m-laplace-rle.pth" and doc["detector"] == "full-frame"
    person = doc["frames"][0]["people"][0]
    np.testing.assert_allclose(person["box"], [140, 0, 500, 480], atol=1e-3)
    want = _expected_px(MU_2D, (480, 640), cfg.input_hw, cfg.box_factor)
    np.testing.assert_allclose(person["keypoints"], want, atol=0.01)
    np.testing.assert_allclose(person["confidence"], np.full(17, 1 - SIGMA), atol=1e-3)
    np.testing.assert_allclose(person["sigma"], np.tile(SIGMA * 600 * np.array([0.75, 1.0]), (17, 1)), rtol=1e-3)
    z = np.array(person["keypoints_3d"])[:, 2]   # root-relative depth: (d - d_root) * 2000 mm
    np.testing.assert_allclose(z, (mu_3d[:, 2] - mu_3d[0, 2]) * 2000.0, atol=0.01)
    assert cv2.imread(drawn).shape == (480, 640, 3)


def test_predict_video_has_one_record_per_frame(app, tmp_path):
    client, cfg, _ = app
    clip, source = tmp_path / "clip.webm", cv2.VideoCapture(str(ASSETS_DIR / "demo.webm"))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"VP80"), 10, (640, 480))
    for _ in range(8):                          # the demo clip's first 8 frames (the test's budget)
        writer.write(source.read()[1])
    writer.release()
    video, json_path = client.predict(handle_file(str(clip)), api_name="/predict_video")
    doc = json.loads(open(json_path).read())
    count = int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_COUNT))
    assert len(doc["frames"]) == count == 8 and doc["smoothing"] is True
    want = _expected_px(MU_2D, (480, 640), cfg.input_hw, cfg.box_factor)
    last = doc["frames"][-1]["people"][0]
    np.testing.assert_allclose(last["keypoints"], want, atol=0.01)
    np.testing.assert_allclose(last["keypoints_smoothed"], want, atol=0.01)  # constant input stays put
    out = cv2.VideoCapture(video)
    assert video.endswith(".webm") and out.get(cv2.CAP_PROP_FRAME_COUNT) == count


def test_predict_frame_twin_and_bad_inputs(app, tmp_path):
    client, cfg, _ = app
    blank = np.full((480, 640, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "blank.png"), blank)
    _, json_path = client.predict(handle_file(str(tmp_path / "blank.png")), api_name="/predict_frame")
    want = _expected_px(MU_2D, (480, 640), cfg.input_hw, cfg.box_factor)
    np.testing.assert_allclose(json.load(open(json_path))["frames"][0]["people"][0]["keypoints"], want, atol=0.01)
    _, json_path = client.predict(handle_file(str(tmp_path / "blank.png")), detector="hog",
                                  api_name="/predict_image")
    assert json.load(open(json_path))["frames"][0]["people"] == []   # no person: a warning, no crash
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(Exception, match="cannot read this video|Invalid video|not a valid"):
        client.predict(handle_file(str(tmp_path / "bad.mp4")), api_name="/predict_video")


def test_a_detector_error_reaches_the_client_whole(app, tmp_path, monkeypatch):
    client, _, _ = app
    message = ("mediapipe: /c/pose.task is missing and cannot download it (URLError: <urlopen error [Errno -3] "
               "Temporary failure in name resolution>); put the file there, or use --detector hog or full-frame")

    class Unreachable:
        def __init__(self, **options):
            pass

        def __call__(self, image_rgb, timestamp_ms=None):
            raise detect.DetectorUnavailable(message)
    monkeypatch.setitem(detect.DETECTORS, "mediapipe", Unreachable)
    cv2.imwrite(str(tmp_path / "in.png"), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(tmp_path / "in.png")), detector="mediapipe", api_name="/predict_image")
    shown = str(err.value)
    assert "urlopen error [Errno -3] Temporary failure in name resolution)" in shown   # no tag left to eat it
    assert shown.rstrip().endswith("or use --detector hog or full-frame")               # the remedy arrives


def test_api_names_its_outputs_and_hides_the_stream(app):
    client, _, _ = app
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/predict_frame_stream" not in api
    assert {"/predict_image", "/predict_video", "/predict_frame"} <= set(api)
    labels = [r["label"] for r in api["/predict_frame"]["returns"]]
    assert labels == ["annotated frame", "keypoints JSON"]
