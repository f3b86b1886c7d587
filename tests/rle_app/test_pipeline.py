"""rle_app.pipeline (with loading, media, units3d) and the UI handlers without a server: left stays left,
bad inputs, 3D mm, demo model."""
import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models import build_model, coco_config, h36m_config
from models.checkpoint import save_checkpoint
from models.predictor import PosePrediction, crops_for_boxes
from rle_app import detect, loading, media, units3d
from rle_app import pipeline as pl
from rle_app.cli import main
from rle_app.errors import AppError
from rle_app.ui import MIRROR_PREVIEW, Handlers

LEFT_WRIST = 9  # COCO-17


class MarkerPredictor:
    """A stand-in model with a known output: left_wrist on the pure-red pixel, other joints at the
    box centre, sigma 2 px. Records what it returned."""

    def __init__(self, config):
        self.config, self.flip, self.last = config, False, None

    def __call__(self, image_rgb, boxes_xyxy, flip=False):
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
        n, k = len(boxes), self.config.num_joints
        kpts = np.repeat(((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None], k, axis=1)
        ys, xs = np.nonzero((image_rgb[..., 0] > 200) & (image_rgb[..., 1] < 50) & (image_rgb[..., 2] < 50))
        kpts[:, LEFT_WRIST] = [xs.mean(), ys.mean()]
        cov = np.broadcast_to(4.0 * np.eye(2, dtype=np.float32), (n, k, 2, 2)).copy()
        self.last = PosePrediction(boxes, kpts, np.full((n, k, 2), 2.0, np.float32), cov,
                                   np.ones((n, k), np.float32))
        return self.last


def _marker_pipeline():
    cfg = coco_config("resnet18", input_hw=(64, 48))
    pipe = pl.PosePipeline(build_model(cfg).eval(), detector="full-frame")
    pipe.predictor = MarkerPredictor(cfg)
    return pipe


def test_webcam_frames_are_unmirrored_so_left_stays_left(tmp_path):
    """The browser sends mirrored frames (MIRROR_PREVIEW); the model must see the real one."""
    real = np.full((120, 160, 3), 90, np.uint8)
    real[30:40, 20:30] = (255, 0, 0)                    # the person's left wrist, at x ~ 24.5 px
    sent = real[:, ::-1] if MIRROR_PREVIEW else real    # what gradio's webcam component sends
    pipe = _marker_pipeline()
    h = Handlers(pipe, tmp_path)
    drawn, state = h.webcam_step(sent, None, 0.3, 1.0, False, False, "full-frame")
    assert np.array_equal(pipe.last_input, real)
    assert pipe.predictor.last.keypoints[0, LEFT_WRIST, 0] == pytest.approx(24.5)
    assert drawn.shape == real.shape and state.frames == 1
    # the non-streaming twin takes real frames as they are
    cv2.imwrite(str(tmp_path / "real.png"), real[..., ::-1])   # the twin takes an image file (RGB -> BGR)
    h.predict_frame(str(tmp_path / "real.png"), 0.3, 1.0, False, "full-frame")
    assert pipe.predictor.last.keypoints[0, LEFT_WRIST, 0] == pytest.approx(24.5)


def test_video_json_has_every_frame_raw_and_smoothed(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for i in range(6):
        frame = np.full((120, 160, 3), 90, np.uint8)
        frame[50:54, 20 + 10 * i:24 + 10 * i] = (0, 0, 255)   # BGR red, moving right
        writer.write(frame)
    writer.release()
    calls = []
    doc = media.process_video(_marker_pipeline(), path, tmp_path / "out.webm", "full-frame", smooth=True,
                           progress=lambda i, n: calls.append((i, n)))
    assert len(doc["frames"]) == 6 and calls[-1] == (6, 6)
    xs = [f["people"][0]["keypoints"][LEFT_WRIST][0] for f in doc["frames"]]
    assert np.allclose(np.diff(xs), 10.0, atol=1.0)          # the raw track follows the marker
    smoothed = doc["frames"][-1]["people"][0]["keypoints_smoothed"][LEFT_WRIST]
    assert abs(smoothed[0] - xs[-1]) < 10.0 and doc["smoothing"] is True
    assert cv2.VideoCapture(str(tmp_path / "out.webm")).get(cv2.CAP_PROP_FRAME_COUNT) == 6


def test_bad_videos_give_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(AppError, match="cannot read this video"):
        media.process_video(_marker_pipeline(), garbage, tmp_path / "o.webm")
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    with pytest.raises(AppError, match="no frames"):
        media.process_video(_marker_pipeline(), empty, tmp_path / "o.webm")


def test_checkpoint_errors_name_the_option(tmp_path):
    small = dict(input_hw=(64, 48))
    save_checkpoint(tmp_path / "c2.pth", build_model(coco_config("resnet18", **small)))
    save_checkpoint(tmp_path / "c3.pth", build_model(h36m_config("resnet18", **small)))
    cpu = torch.device("cpu")
    with pytest.raises(AppError, match="--checkpoint .*no such file"):
        loading.load_pose_models(str(tmp_path / "missing.pth"), None, cpu)
    with pytest.raises(AppError, match="a 3D model; pass it as --checkpoint-3d"):
        loading.load_pose_models(str(tmp_path / "c3.pth"), None, cpu)
    with pytest.raises(AppError, match="a 2D model; pass it as --checkpoint$"):
        loading.load_pose_models(None, str(tmp_path / "c2.pth"), cpu)
    result = CliRunner().invoke(main, ["--checkpoint", str(tmp_path / "c3.pth")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "--checkpoint-3d" in result.output


def test_auto_detector_falls_back_with_a_notice(tmp_path, monkeypatch):
    monkeypatch.setenv("RLE_POSE_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))     # no torchvision weights cached
    monkeypatch.delenv("RLE_POSE_TASK", raising=False)
    name, notice = detect.resolve_detector("auto", download=False)
    assert name == "full-frame" and "README" in notice and "\n" not in notice
    assert "https://" not in notice                                  # what is missing, not two URLs
    with pytest.raises(AppError, match=r"^--detector mediapipe: .*missing.*build_pose_task"):
        detect.resolve_detector("mediapipe", download=False)        # explicit: refused at start, with remedy
    elsewhere = tmp_path / "elsewhere.task"
    elsewhere.write_bytes(b"x")
    monkeypatch.setenv("RLE_POSE_TASK", str(elsewhere))             # the app reads it, as the docs say
    name, notice = detect.resolve_detector("mediapipe", download=False)
    assert name == "mediapipe" and str(elsewhere) in notice and "$RLE_POSE_TASK" in notice
    monkeypatch.delenv("RLE_POSE_TASK")
    task = tmp_path / "pose_landmarker_lite.task"
    task.write_bytes(b"x")
    name, notice = detect.resolve_detector("auto", download=False)
    assert name == "mediapipe" and notice.startswith("Detector: mediapipe") and "\n" not in notice
    assert detect.resolve_detector("hog") == ("hog", "Detector: hog (--detector hog)")


def test_joints_mm_is_weak_perspective_about_the_root():
    kpts = np.array([[[100.0, 200.0, 0.0], [150.0, 180.0, -40.0]]], np.float32)
    pred = PosePrediction(np.zeros((1, 4), np.float32), kpts, np.ones((1, 2, 3), np.float32),
                          np.zeros((1, 2, 2, 2), np.float32), np.ones((1, 2), np.float32))
    out = units3d.joints_mm(pred, 0, crop_px=400.0, depth_range_mm=2000.0, root=0)
    np.testing.assert_allclose(out, [[0, 0, 0], [250.0, -100.0, -40.0]])
    np.testing.assert_allclose(units3d.sigma_mm(pred, 0, 400.0, 2000.0)[0], [5.0, 5.0, 1.0])


def test_demo_model_finds_the_figure_in_the_demo_image():
    model, model_3d, path = loading.load_pose_models(None, None, torch.device("cpu"))
    assert path == loading.DEMO_CHECKPOINT and model_3d is None and model.config.num_joints == 17
    assert loading.DEMO_CHECKPOINT.stat().st_size < 4_000_000
    image = cv2.cvtColor(cv2.imread(str(loading.ASSETS_DIR / "demo.jpg")), cv2.COLOR_BGR2RGB)
    poses = pl.PosePipeline(model, detector="full-frame").run_frame(image)
    box, kpts = poses.boxes_xyxy[0], poses.pred.keypoints[0]
    assert kpts.shape == (17, 2)
    assert ((kpts >= box[:2]) & (kpts <= box[2:])).all()
    rec = media.frame_record(poses, 0, 0.0)["people"][0]
    assert set(rec) >= {"box", "keypoints", "sigma", "confidence"} and len(rec["confidence"]) == 17


def test_3d_view_redraws_from_kept_poses_at_the_chosen_angle(tmp_path):
    small = dict(input_hw=(64, 48))
    pipe = pl.PosePipeline(build_model(coco_config("resnet18", **small)).eval(),
                           build_model(h36m_config("resnet18", **small)).eval(), detector="full-frame")
    cv2.imwrite(str(tmp_path / "in.png"), np.full((96, 128, 3), 100, np.uint8))
    drawn, json_path, kept = Handlers(pipe, tmp_path).predict_image(str(tmp_path / "in.png"), 0.3, 1.0, False,
                                                                    "full-frame")
    person = json.loads(open(json_path).read())["frames"][0]["people"][0]
    assert len(person["keypoints_3d"]) == 18 and len(person["keypoints_3d"][0]) == 3
    fig = Handlers(pipe, tmp_path).plot_3d(kept, 0, 20, 30)
    assert (fig.axes[0].elev, fig.axes[0].azim) == (20, 30)
    redrawn = Handlers(pipe, tmp_path).redraw(kept, 0.0, 2.0)   # sliders: no model run
    assert cv2.imread(redrawn).shape == cv2.imread(drawn).shape == (96, 128, 3) and pipe.frames_processed == 1
    assert redrawn != drawn                                      # a new file: a download is never rewritten


def test_3d_mm_use_the_3d_models_own_non_square_crop():
    """2D model 64x48 (portrait box), 3D model 48x64 (landscape crop): x and y mm scales differ."""
    cfg_3d = h36m_config("resnet18", input_hw=(48, 64))
    model_3d = build_model(cfg_3d)
    pipe = pl.PosePipeline(build_model(coco_config("resnet18", input_hw=(64, 48))).eval(), model_3d,
                           detector="full-frame")
    image = np.random.default_rng(3).integers(0, 255, (96, 128, 3), np.uint8)
    poses = pipe.run_frame(image)
    box = poses.boxes_xyxy[0]
    np.testing.assert_allclose(box, [28, 0, 100, 96])            # 72x96: the 2D model's 3:4 aspect
    np.testing.assert_allclose(poses.pred_3d.crop_wh_px[0], [128, 96])   # widened to 4:3, factor 1
    # independent: mm straight from the model's normalised output, u * depth_range_mm
    crops, _ = crops_for_boxes(image, box[None], cfg_3d)
    with torch.no_grad():
        out = model_3d.eval()(torch.from_numpy(crops).permute(0, 3, 1, 2))
    mu, sig, d = out.mu[0].double().numpy(), out.sigma[0].double().numpy(), cfg_3d.depth_range_mm
    joints, sigma = units3d.person_mm(poses.pred_3d, 0, cfg_3d)
    np.testing.assert_allclose(joints[:, :2], (mu[:, :2] - mu[cfg_3d.root_index, :2]) * d, atol=1e-2)
    np.testing.assert_allclose(joints[:, 2], mu[:, 2] * d, atol=1e-2)
    np.testing.assert_allclose(sigma, sig * d, rtol=1e-4)
