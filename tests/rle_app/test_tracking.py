"""rle_app.tracking's keypoint-driven tracking, alone and through PosePipeline streams: a real photo
panned and zoomed (real mediapipe detector, VIDEO mode) and a generated walking figure (noisy
detector). The pose model is a stand-in that reports the true joints inside the crop it is given,
so a box that drifts off the person loses its keypoints."""
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from models import build_model, coco_config
from models.predictor import PosePrediction
from rle_app import pipeline as pl
from rle_app.detections import Detections
from rle_app.tracking import KeypointTracker, TrackingPolicy, boxes_from_keypoints

REAL = Path(__file__).resolve().parents[1] / "data" / "real" / "coco"
POSE_TASK = os.environ.get("RLE_POSE_TASK")


class TruthPredictor:
    """Stand-in pose model: ``truth[frame]`` (P, K, 2) px are the people's joints; each box gets the
    person whose joints it holds most of, with confidence 0.9 for joints inside the box's crop
    (the box times the model's box factor) and 0.05 outside (a crop shows only what is in it). ``frame`` is set by the test before each frame."""

    def __init__(self, config, truth):
        self.config, self.truth, self.frame, self.flip = config, truth, 0, False

    def __call__(self, image_rgb, boxes_xyxy, flip=False):
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
        people = np.asarray(self.truth[self.frame], np.float32)
        n, k = len(boxes), self.config.num_joints
        centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2 * self.config.box_factor
        crops = np.concatenate([centre - half, centre + half], axis=1)  # the region a crop covers (aspect aside)
        inside = ((people[None, :, :, :] >= crops[:, None, None, :2]) &
                  (people[None, :, :, :] <= crops[:, None, None, 2:])).all(-1)     # (N, P, K)
        best = inside.sum(-1).argmax(-1) if len(people) else np.zeros(n, int)
        kpts = people[best] if len(people) else np.zeros((n, k, 2), np.float32)
        conf = np.where(inside[np.arange(n), best], 0.9, 0.05).astype(np.float32)
        cov = np.broadcast_to(4.0 * np.eye(2, dtype=np.float32), (n, k, 2, 2)).copy()
        return PosePrediction(boxes, kpts, np.full((n, k, 2), 2.0, np.float32), cov, conf)


def _pipeline(truth, detector="mediapipe", detector_model=None):
    cfg = coco_config("resnet18", input_hw=(64, 48))
    pipe = pl.PosePipeline(build_model(cfg).eval(), detector=detector, detector_model=detector_model)
    pipe.predictor = TruthPredictor(cfg, truth)
    return pipe


def _covers(box, kpts, image_hw, tol=1.0):
    """Does box (4,) contain every joint (K, 2) px that lies in the image (H, W)?"""
    h, w = image_hw
    seen = kpts[((kpts >= 0) & (kpts <= [w, h])).all(-1)]
    return bool(((seen >= box[:2] - tol) & (seen <= box[2:] + tol)).all())


def test_boxes_from_keypoints_span_confident_joints_padded_and_clipped():
    kpts = np.array([[[100, 50], [140, 250], [400, 400], [120, 100]],
                     [[10, 10], [20, 20], [30, 30], [40, 40]]], np.float32)
    conf = np.array([[0.9, 0.8, 0.1, 0.7], [0.9, 0.1, 0.1, 0.1]], np.float32)
    boxes, ok = boxes_from_keypoints(kpts, conf, (300, 200), min_confidence=0.3, min_joints=3, pad=0.1)
    # independent: joints 0, 1, 3 span x 100..140, y 50..250; margin 0.1 * 200 = 20; clipped to W=200, H=300
    np.testing.assert_allclose(boxes[0], [80, 30, 160, 270])
    assert ok.tolist() == [True, False] and not boxes[1].any()
    boxes, _ = boxes_from_keypoints(kpts[:1] * 2, conf[:1], (300, 200), min_joints=3, pad=0.1)
    np.testing.assert_allclose(boxes[0], [160, 60, 200, 300])        # clipped at the right and bottom


def test_schedule_detects_every_n_frames_on_a_lost_track_and_with_no_track():
    tracker = KeypointTracker(TrackingPolicy(detect_every=4, min_joints=2))
    kpts, good = np.array([[[10, 10], [50, 90]]], np.float32), np.ones((1, 2), np.float32)
    pattern = []
    for frame in range(9):
        detect = tracker.needs_detection()
        pattern.append(detect)
        tracks = tracker.detected(np.array([[0, 0, 60, 100]]), np.ones(1)) if detect else tracker.coast()
        tracker.follow(tracks.track_ids, kpts, good if frame != 5 else 0.0 * good, (200, 200))
    # frame 0 first, 4 scheduled, 6 and 7 after the lost frame 5 (the re-detection confirmed once
    # more), then 4 frames later: 11 (not in range)
    assert [i for i, d in enumerate(pattern) if d] == [0, 4, 6, 7]
    assert tracker.detections_run == 4 and tracker.coast().track_ids.tolist() == [0]
    empty = KeypointTracker()
    empty.detected(np.zeros((0, 4)))
    assert empty.needs_detection()                                  # no one tracked: look every frame


def _pan_zoom_clip(num_frames=40, out_hw=(480, 640)):
    """Frames of photo 785 (one skier) panned and zoomed over time, and its 17 true joints per frame."""
    image = cv2.cvtColor(cv2.imread(str(REAL / "000000000785.jpg")), cv2.COLOR_BGR2RGB)
    ann = [a for a in json.loads((REAL / "test_coco.json").read_text())["annotations"] if a["image_id"] == 785][0]
    joints = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)[:, :2]
    frames, truth = [], []
    for i in range(num_frames):
        t = i / (num_frames - 1)
        scale = 0.8 + 0.35 * t                                       # zoom in by ~45%
        centre = np.array([390.0 - 60 * np.sin(np.pi * t), 217.0 + 20 * t])   # pan left and back, down
        m = np.array([[scale, 0, out_hw[1] / 2 - scale * centre[0]], [0, scale, out_hw[0] / 2 - scale * centre[1]]])
        frames.append(cv2.warpAffine(image, m, out_hw[::-1], flags=cv2.INTER_LINEAR))
        truth.append((joints @ m[:, :2].T + m[:, 2])[None])
    return frames, truth


@pytest.mark.skipif(not (POSE_TASK and Path(POSE_TASK).is_file()),
                    reason="set RLE_POSE_TASK to a .task (python -m rle_app.build_pose_task)")
def test_real_photo_panned_and_zoomed_keeps_one_id_and_box_covers_joints():
    frames, truth = _pan_zoom_clip()
    pipe = _pipeline(truth, "mediapipe", POSE_TASK)
    state = pl.StreamState(follow=KeypointTracker(TrackingPolicy(detect_every=10)))
    ids, widths = set(), []
    try:
        for i, frame in enumerate(frames):
            pipe.predictor.frame = i
            poses = pipe.run_frame(frame, state=state, timestamp_ms=i * 40)
            assert len(poses.boxes_xyxy) == 1, f"frame {i}: {len(poses.boxes_xyxy)} people"
            ids.add(int(poses.track_ids[0]))
            # the box the next frame will use covers this frame's joints
            box = state.follow.boxes.current().boxes_xyxy[0]
            assert _covers(box, truth[i][0], frame.shape[:2]), f"frame {i}: box {box} misses joints"
            widths.append(box[2] - box[0])
        assert state.detectors["mediapipe"].running_mode == "video"
    finally:
        pipe.close(state)
    assert ids == {0}
    assert state.follow.detections_run <= len(frames) // 10 + 1      # amortised: 4 of 40 frames
    joint_w = np.ptp(truth[-1][0][:, 0]) / np.ptp(truth[0][0][:, 0])
    assert widths[-1] / widths[0] == pytest.approx(joint_w, rel=0.1)  # the box zoomed with the person


def _walking_clip(num_frames=30):
    """A generated figure walking across a 320x240 frame: frames, true points per frame, true boxes."""
    from trainer.data.synthetic.figures import body_points, lerp_pose, look_at, place_body, sample_pose, sample_shape
    from trainer.data.synthetic.render import render_scene
    rng = np.random.default_rng(3)
    h, w = 240, 320
    camera = look_at([0.0, 0.0, 1000.0], [0.0, 4000.0, 900.0], [w * 1.1, w * 1.1], [w / 2, h / 2])
    shape, poses = sample_shape(rng, 1.0), [sample_pose(rng, "walking") for _ in range(2)]
    frames, truth, boxes = [], [], []
    for i in range(num_frames):
        t = i / (num_frames - 1)
        points = body_points(shape, lerp_pose(*poses, 0.5 - 0.5 * np.cos(4 * np.pi * t)))
        world = place_body(points, np.pi, 0.0, 0.0, np.array([-400.0 + 800.0 * t, 3200.0, 950.0]),
                           0.5 * (points[0] + points[8]))
        image, (fig,) = render_scene(np.random.default_rng(3), (h, w), camera, [(world, shape)])
        pick = np.linspace(0, len(fig.points_px) - 1, 17).round().astype(int)
        frames.append(image)
        truth.append(fig.points_px[pick][None].astype(np.float32))
        boxes.append(np.asarray(fig.bbox_xyxy, np.float32))
    return frames, truth, boxes


class NoisyDetector:
    """The true box with seeded +-8 px jitter on every side; counts its calls."""

    name = "noisy"

    def __init__(self, boxes):
        self.boxes, self.frame, self.calls, self.rng = boxes, 0, 0, np.random.default_rng(0)

    def __call__(self, image_rgb, timestamp_ms=None):
        self.calls += 1
        box = self.boxes[self.frame] + self.rng.uniform(-8, 8, 4).astype(np.float32)
        return Detections(box[None], np.ones(1, np.float32))


@pytest.mark.parametrize("tracked", [True, False])
def test_generated_walk_keeps_one_id_box_covers_joints_and_is_steadier(tracked):
    frames, truth, true_boxes = _walking_clip()
    pipe = _pipeline(truth, "noisy")
    det = pipe._detectors["noisy"] = NoisyDetector(true_boxes)
    state = pl.StreamState() if tracked else pl.StreamState(follow=None)
    used = []
    for i, frame in enumerate(frames):
        pipe.predictor.frame = det.frame = i
        poses = pipe.run_frame(frame, state=state)
        assert poses.track_ids.tolist() == [0]
        used.append(poses.boxes_xyxy[0])
        if tracked:      # the box the next frame will use covers this frame's joints
            assert _covers(state.follow.boxes.current().boxes_xyxy[0], truth[i][0], frame.shape[:2]), f"frame {i}"
    # jitter: the box's size changes frame to frame (the walk itself changes it smoothly)
    size_steps = np.abs(np.diff(np.array([[b[2] - b[0], b[3] - b[1]] for b in used]), axis=0)).mean()
    true_steps = np.abs(np.diff(np.array([[b[2] - b[0], b[3] - b[1]] for b in true_boxes]), axis=0)).mean()
    if tracked:
        assert det.calls <= 4 and size_steps < true_steps + 2.0     # 3 detections in 30 frames; no jitter
    else:
        assert det.calls == len(frames) and size_steps > true_steps + 2.0


def test_a_missed_track_survives_on_confident_keypoints_only():
    """Detector dropout vs drift: a track the detector misses is kept (max_missed) while its own
    keypoints are confident, and dropped at once when they are not (nothing vouches for its box)."""
    kpts = np.array([[[20, 20], [60, 120], [40, 60], [30, 100]]], np.float32)     # inside box A
    good, bad = np.full((1, 4), 0.9, np.float32), np.full((1, 4), 0.05, np.float32)
    box_a, box_b = np.array([[10, 10, 70, 130]], np.float32), np.array([[200, 10, 260, 130]], np.float32)
    for conf, survives in ((good, True), (bad, False)):
        tracker = KeypointTracker(TrackingPolicy(detect_every=1, min_joints=2, max_missed=2))
        tracks = tracker.detected(box_a, np.ones(1))
        tracker.follow(tracks.track_ids, kpts, conf, (240, 320))
        tracks = tracker.detected(box_b, np.ones(1))           # the detector now sees someone else only
        assert (0 in tracks.track_ids.tolist()) is survives, conf[0, 0]
        assert 1 in tracks.track_ids.tolist()
        if survives:                                            # ... until it misses max_missed + 1 in a row
            for _ in range(2):
                assert tracks.track_ids.tolist() == [0, 1]
                tracker.follow(tracks.track_ids, np.concatenate([kpts, kpts + [190, 0]]),
                               np.concatenate([good, good]), (240, 320))
                tracks = tracker.detected(box_b, np.ones(1))
            assert tracks.track_ids.tolist() == [1]


def test_collapsed_keypoints_are_not_followed():
    """Confident keypoints bunched in the middle of the box (a failing model's output) do not
    shrink the box: the track keeps it and asks for a detection, which then matches it (one id)."""
    tracker = KeypointTracker(TrackingPolicy(detect_every=10, min_joints=2))
    box = np.array([[100, 50, 200, 350]], np.float32)
    tracks = tracker.detected(box, np.ones(1))
    bunched = np.array([[[145, 190], [155, 210], [150, 200]]], np.float32)        # 10 x 20 px
    tracker.follow(tracks.track_ids, bunched, np.full((1, 3), 0.9, np.float32), (480, 640))
    np.testing.assert_array_equal(tracker.boxes.current().boxes_xyxy, box)
    assert tracker.needs_detection()
    assert tracker.detected(box + 3, np.ones(1)).track_ids.tolist() == [0]
    # a person who only gets shorter (crouching: 80 x 100 px of joints, half the height) is followed
    crouch = np.array([[[110, 240], [190, 340], [150, 300]]], np.float32)
    tracker.follow([0], crouch, np.full((1, 3), 0.9, np.float32), (480, 640))
    assert tracker.boxes.current().boxes_xyxy[0, 1] > 53 + 100        # the top came down with the person
