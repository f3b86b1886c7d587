"""PosePipeline.run_stream (the overlapped video loop of rle-predict and the app's video tab) and
the background encoder of media.VideoSink: same results as the one-frame-at-a-time loop, the
detector really runs ahead on its own thread, one caller at a time, in frame order, and failures
surface as one line without leaving files or threads behind."""
import threading

import cv2
import numpy as np
import pytest

from models import build_model, coco_config
from models.predictor import PosePrediction
from rle_app import media
from rle_app import pipeline as pl
from rle_app.detections import Detections, DetectorUnavailable
from rle_app.errors import AppError
from rle_app.predict import stream_threads
from rle_app.tracking import KeypointTracker, TrackingPolicy


def _truth(num_frames):
    """One person's 17 joints per frame, walking right and growing; its true box per frame."""
    base = np.stack([np.linspace(0, 40, 17), np.linspace(0, 120, 17)], 1).astype(np.float32)
    joints = [base * (1 + 0.01 * i) + [60 + 6 * i, 40] for i in range(num_frames)]
    boxes = [np.r_[j.min(0) - 5, j.max(0) + 5].astype(np.float32) for j in joints]
    return joints, boxes


class FrameTruthPredictor:
    """The frame's true joints (the frame's index is painted into pixel (0, 0)), confidence 0.9 for
    joints inside the box, 0.05 outside; with ``lost_on`` those frames' joints all get 0.05."""

    def __init__(self, config, joints, lost_on=()):
        self.config, self.joints, self.lost_on, self.flip = config, joints, set(lost_on), False
        self.on_call = None

    def __call__(self, image_rgb, boxes_xyxy, flip=False):
        index = int(image_rgb[0, 0, 0])
        if self.on_call is not None:
            self.on_call(index)
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 1, 4)
        n, k = len(boxes), self.config.num_joints
        kpts = np.broadcast_to(self.joints[index], (n, k, 2)).copy()
        inside = ((kpts >= boxes[..., :2]) & (kpts <= boxes[..., 2:])).all(-1)
        conf = np.where(inside & (index not in self.lost_on), 0.9, 0.05).astype(np.float32)
        cov = np.broadcast_to(4.0 * np.eye(2, dtype=np.float32), (n, k, 2, 2)).copy()
        return PosePrediction(boxes.reshape(-1, 4), kpts, np.full((n, k, 2), 2.0, np.float32), cov, conf)


class FrameDetector:
    """The frame's true box with +-6 px jitter seeded by the frame's index (the same answer for the
    same frame whatever the call order); records (index, timestamp, thread) and flags overlapping
    calls. ``on_call(index)`` runs inside the call."""

    name = "frames"

    def __init__(self, boxes, fail_on=None):
        self.boxes, self.fail_on, self.calls, self.overlapped = boxes, fail_on, [], False
        self._busy, self.on_call = threading.Lock(), None

    def __call__(self, image_rgb, timestamp_ms=None):
        if not self._busy.acquire(blocking=False):
            self.overlapped = True
            self._busy.acquire()
        try:
            index = int(image_rgb[0, 0, 0])
            self.calls.append((index, timestamp_ms, threading.current_thread().name))
            if self.on_call is not None:
                self.on_call(index)
            if index == self.fail_on:
                raise DetectorUnavailable("frames detector: gone")
            jitter = np.random.default_rng(index).uniform(-6, 6, 4).astype(np.float32)
            return Detections((self.boxes[index] + jitter)[None], np.ones(1, np.float32))
        finally:
            self._busy.release()


def _frames(num_frames):
    frames = []
    for i in range(num_frames):
        frame = np.full((240, 320, 3), 80, np.uint8)
        frame[0, 0] = i                                     # the index, read back by the stand-ins
        frames.append(frame)
    return frames


def _pipeline(num_frames, lost_on=(), fail_on=None):
    joints, boxes = _truth(num_frames)
    cfg = coco_config("resnet18", input_hw=(64, 48))
    pipe = pl.PosePipeline(build_model(cfg).eval(), detector="frames")
    pipe.predictor = FrameTruthPredictor(cfg, joints, lost_on)
    pipe._detectors["frames"] = FrameDetector(boxes, fail_on)
    return pipe


def _state(track):
    return pl.StreamState(follow=KeypointTracker(TrackingPolicy(detect_every=5))) if track else \
        pl.StreamState(follow=None)


@pytest.mark.parametrize("track", [True, False])
def test_overlapped_stream_gives_the_serial_loops_results(track):
    n, fps, lost = 24, 25.0, (7, 8, 15)
    serial_pipe, serial_state = _pipeline(n, lost), _state(track)
    serial = [serial_pipe.run_frame(f, state=serial_state, smooth=True, timestamp_ms=round(1000 * i / fps))
              for i, f in enumerate(_frames(n))]
    pipe, state = _pipeline(n, lost), _state(track)
    out = list(pipe.run_stream(iter(_frames(n)), fps, state=state))
    assert len(out) == n
    for i, ((image, poses), ref) in enumerate(zip(out, serial)):
        assert int(image[0, 0, 0]) == i
        np.testing.assert_array_equal(poses.boxes_xyxy, ref.boxes_xyxy, err_msg=f"frame {i}")
        np.testing.assert_array_equal(poses.track_ids, ref.track_ids)
        np.testing.assert_array_equal(poses.pred.keypoints, ref.pred.keypoints)
        np.testing.assert_allclose(poses.smoothed, ref.smoothed)
    det, serial_det = pipe._detectors["frames"], serial_pipe._detectors["frames"]
    # the same frames were detected, with the same timestamps, in order, never two calls at once
    assert [c[:2] for c in det.calls] == [c[:2] for c in serial_det.calls]
    assert [c[0] for c in det.calls] == sorted({c[0] for c in det.calls}) and not det.overlapped
    if track:              # amortised: every 5 frames, and the two frames after each lost one
        assert [c[0] for c in det.calls] == [0, 5, 8, 9, 10, 15, 16, 17, 22]
        # detections known before the model ran on the frame before ran ahead on the look-ahead
        # thread; the first after a lost frame could not (the loss is seen in that frame's keypoints)
        ahead = [c[0] for c in det.calls if c[2].startswith("rle-lookahead")]
        assert ahead == [0, 5, 9, 10, 15, 17, 22]
    else:
        assert len(det.calls) == n and all(c[2].startswith("rle-lookahead") for c in det.calls)


def test_detector_runs_on_the_next_frame_while_the_model_runs_on_this_one():
    """Overlap, shown by events rather than time: the model on frame i waits for the detector to
    have started on frame i+1, which can only happen if the two run at once."""
    n = 6
    pipe = _pipeline(n)
    det, started = pipe._detectors["frames"], {i: threading.Event() for i in range(n + 1)}
    det.on_call = lambda index: started[index].set()
    waited = []
    pipe.predictor.on_call = lambda index: waited.append(started[index + 1].wait(timeout=10) or index == n - 1)
    frames = list(pipe.run_stream(iter(_frames(n)), 10.0, state=_state(False)))
    assert len(frames) == n and all(waited)


def _closing_source(num_frames, closed):
    """The frames as a generator that records being closed (as ``media.iter_frames`` releases its capture)."""
    try:
        yield from _frames(num_frames)
    finally:
        closed.append(True)


def _no_lookahead_thread():
    return not any(t.name.startswith("rle-lookahead") for t in threading.enumerate())


def test_detector_failure_ahead_is_one_line_and_the_source_is_closed():
    closed, seen = [], []
    pipe = _pipeline(10, fail_on=4)
    with pytest.raises(AppError, match="frames detector: gone"):
        for image, _ in pipe.run_stream(_closing_source(10, closed), 10.0, state=_state(False)):
            seen.append(int(image[0, 0, 0]))
    assert seen == [0, 1, 2, 3] and closed == [True] and _no_lookahead_thread()


def test_stopping_early_closes_the_source_and_leaves_no_thread():
    closed = []
    stream = _pipeline(30).run_stream(_closing_source(30, closed), 10.0, state=_state(True))
    assert [int(next(stream)[0][0, 0, 0]) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert closed == [True] and _no_lookahead_thread()


def test_video_sink_encodes_every_frame_in_order_on_its_thread(tmp_path):
    sink = media.VideoSink(tmp_path / "out.webm", 10.0, queue_frames=2)
    shades = [20 * i for i in range(12)]
    for shade in shades:
        sink.write(np.full((96, 128, 3), shade, np.uint8))
    assert not (tmp_path / "out.webm").exists()            # written under a temporary name until close
    sink.close()
    cap, means = cv2.VideoCapture(str(tmp_path / "out.webm")), []
    while (got := cap.read())[0]:
        means.append(float(got[1].mean()))
    assert np.allclose(means, shades, atol=4)
    assert not any(t.name == "rle-video-encoder" for t in threading.enumerate())
    assert list(tmp_path.iterdir()) == [tmp_path / "out.webm"]


def test_video_sink_takes_odd_sizes_and_a_fractional_rate(tmp_path):
    sink = media.VideoSink(tmp_path / "odd.webm", 29.97)
    for shade in (40, 200, 40):
        sink.write(np.full((121, 161, 3), shade, np.uint8))
    sink.close()
    cap = cv2.VideoCapture(str(tmp_path / "odd.webm"))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(29.97, abs=0.01)
    assert [round(cap.read()[1].mean() / 10) * 10 for _ in range(3)] == [40, 200, 40]


def test_video_sink_encoder_failure_is_one_line_and_leaves_no_file(tmp_path):
    sink = media.VideoSink(tmp_path / "out.webm", 10.0)
    sink.write(np.zeros((48, 64, 3), np.uint8))
    sink.write(np.zeros((24, 32, 3), np.uint8))           # another size mid-stream: the encoder thread fails
    with pytest.raises(AppError, match="out.webm: the video encoder failed"):
        for _ in range(10):
            sink.write(np.zeros((48, 64, 3), np.uint8))
        sink.close()
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_stream_threads_leave_a_core_to_the_look_ahead_unless_the_model_is_heavy():
    assert [stream_threads(cpus=n) for n in (1, 2, 8)] == [1, 1, 7]
    assert [stream_threads(cpus=n, forward_ms=3.5) for n in (1, 2, 8)] == [1, 1, 7]
    assert [stream_threads(cpus=n, forward_ms=21.0) for n in (1, 2, 8)] == [1, 2, 8]


@pytest.mark.parametrize("sleep_s, heavy", [(0.0, False), (0.015, True)])
def test_fit_stream_threads_times_the_model_and_rebuilds_when_the_count_changes(monkeypatch, sleep_s, heavy):
    import time
    import types

    import torch

    from rle_app.predict import fit_stream_threads
    cfg = coco_config("resnet18", input_hw=(64, 48))
    calls = []

    def runner(crops):
        calls.append(tuple(crops.shape))
        time.sleep(sleep_s)

    class Pipe:
        predictor = types.SimpleNamespace(runner=runner, config=cfg, device=torch.device("cpu"))
        closed = False

        def close(self):
            self.closed = True

    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)     # built on 3 threads
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    first, rebuilt = Pipe(), Pipe()
    got = fit_stream_threads(first, lambda: rebuilt)
    assert calls and all(shape == (1, 3, 64, 48) for shape in calls)    # timed on one crop of the model's size
    assert set_to == [3 if heavy else 2]
    assert (got is first and not first.closed) if heavy else (got is rebuilt and first.closed)


class ThreePeople:
    """Three boxes a frame, scores 0.2, 0.9, 0.5 (in that order)."""

    name = "three"

    def __call__(self, image_rgb, timestamp_ms=None):
        boxes = np.array([[0, 0, 40, 100], [60, 0, 100, 100], [120, 0, 160, 100]], np.float32)
        return Detections(boxes, np.array([0.2, 0.9, 0.5], np.float32))


def test_max_people_keeps_the_best_scored_and_caps_mediapipe():
    cfg = coco_config("resnet18", input_hw=(64, 48))
    model = build_model(cfg).eval()
    for cap, kept in ((None, [0, 60, 120]), (2, [60, 120]), (1, [60])):
        pipe = pl.PosePipeline(model, detector="three", max_people=cap)
        pipe._detectors["three"] = ThreePeople()
        frame = np.zeros((120, 160, 3), np.uint8)
        assert pipe.run_frame(frame).boxes_xyxy[:, 0].tolist() == kept             # in the detector's order
        stream = pl.StreamState(follow=None)
        assert [p.boxes_xyxy[:, 0].tolist() for _, p in pipe.run_stream([frame] * 2, 10.0, state=stream)] == [kept] * 2
    # mediapipe is asked for that many poses, in image and VIDEO mode (the model opens on first use only)
    pipe = pl.PosePipeline(model, detector="mediapipe", max_people=1)
    assert pipe.detector("mediapipe").num_poses == 1
    assert pipe._stream_detector("mediapipe", pl.StreamState()).num_poses == 1
    assert pl.PosePipeline(model, detector="mediapipe").detector("mediapipe").num_poses == 6
    with pytest.raises(ValueError, match="--max-people must be at least 1"):
        pl.PosePipeline(model, max_people=0)


@pytest.mark.parametrize("command", ["rle-predict", "rle-app"])
def test_max_people_zero_is_a_usage_error(command, tmp_path):
    from click.testing import CliRunner

    from rle_app import cli, predict
    main = predict.main if command == "rle-predict" else cli.main
    args = [str(tmp_path)] if command == "rle-predict" else []
    result = CliRunner().invoke(main, [*args, "--max-people", "0"])
    assert result.exit_code == 2 and "--max-people" in result.output
