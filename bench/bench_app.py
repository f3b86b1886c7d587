"""End-to-end app FPS on a generated 640x480 clip (CPU): detector + predictor + smoothing + drawing.

    python bench/bench_app.py [--backbones demo resnet50] [--detector full-frame] [--frames 60]
    python bench/bench_app.py --write-assets assets     # (re)writes demo.webm and demo.jpg
    python bench/bench_app.py --end-to-end --detector mediapipe --backbones mobilenetv2_100 resnet50
        # rle-predict FPS with and without tracking, and MediaPipe's own landmarker as the peer row

``demo`` is the shipped model (assets/demo-coco.pth); other names are timm backbones with random
weights at 256x192 (timing only). The clip is one generated figure walking across the frame
(trainer/data, painted with OpenCV). Each stage is timed per frame; FPS = 1 / total per frame.
Numbers depend on the machine's load: other processes on the same cores slow every stage alike.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")      # rle-predict's progress bar (tqdm reads TQDM_* defaults)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import build_model, coco_config  # noqa: E402
from rle_app.draw import annotate  # noqa: E402
from rle_app.loading import DEMO_CHECKPOINT, load_pose_models  # noqa: E402
from rle_app.pipeline import FramePoses, PosePipeline, StreamState  # noqa: E402
from trainer.data.synthetic.figures import (COCO_POINTS, body_points, lerp_pose, look_at, place_body,  # noqa: E402
                                            sample_pose, sample_shape)
from trainer.data.synthetic.render import render_scene  # noqa: E402

CLIP_HW, CLIP_FPS, CLIP_SECONDS = (480, 640), 10, 4.0


def clip_frames(seed: int = 7, num_frames: int = int(CLIP_FPS * CLIP_SECONDS), image_hw=CLIP_HW, joints: bool = False):
    """Frames (RGB uint8 (H, W, 3)) of one figure (about 370 px tall) walking left to right, turning slowly, limbs
    swinging between two walking poses; the same background and palette in every frame. With ``joints``
    also the figure's true COCO-17 joints per frame ((17, 2) px each)."""
    rng = np.random.default_rng(seed)
    h, w = image_hw
    camera = look_at([0.0, 0.0, 1000.0], [0.0, 4000.0, 900.0], [w * 1.1, w * 1.1], [w / 2, h / 2])
    shape, poses = sample_shape(rng, 1.0), [sample_pose(rng, "walking") for _ in range(2)]
    frames, truth = [], []
    for i in range(num_frames):
        t = i / max(num_frames - 1, 1)
        pose = lerp_pose(*poses, 0.5 - 0.5 * np.cos(2 * np.pi * 2 * t))
        points = body_points(shape, pose)
        anchor = np.array([-500.0 + 1000.0 * t, 3200.0, 950.0])
        world = place_body(points, np.pi + 0.6 * np.sin(np.pi * t), 0.0, 0.0, anchor, 0.5 * (points[0] + points[8]))
        image, (figure,) = render_scene(np.random.default_rng(seed), image_hw, camera, [(world, shape)])
        frames.append(image)
        truth.append(figure.points_px[COCO_POINTS].astype(np.float32))
    return (frames, truth) if joints else frames


def write_assets(folder: Path) -> None:
    """assets/demo.webm (VP8, 10 fps, 4 s, 640x480) and assets/demo.jpg (its middle frame)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = clip_frames()
    writer = cv2.VideoWriter(str(folder / "demo.webm"), cv2.VideoWriter_fourcc(*"VP80"), CLIP_FPS, CLIP_HW[::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    cv2.imwrite(str(folder / "demo.jpg"), cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {folder / 'demo.webm'} ({len(frames)} frames) and {folder / 'demo.jpg'}")


def stage_times(pipe: PosePipeline, frames, detector: str) -> dict[str, float]:
    """Mean seconds per frame of each stage over ``frames`` (after two warm-up frames)."""
    det, state = pipe.detector(detector), StreamState()
    totals = dict.fromkeys(["detect+track", "predict", "smooth", "draw"], 0.0)
    for i, frame in enumerate(list(frames[:2]) + list(frames)):
        t0 = time.perf_counter()
        found = det(frame)
        tracks = state.tracker.update(found.boxes_xyxy, found.scores)
        t1 = time.perf_counter()
        pred = pipe.predictor(frame, tracks.boxes_xyxy)
        t2 = time.perf_counter()
        smoothed = state.smoother.update(tracks.track_ids, pred.keypoints, pred.covariance_px)
        t3 = time.perf_counter()
        poses = FramePoses(tracks.boxes_xyxy, tracks.track_ids, pred, smoothed)
        annotate(frame, poses, pipe.config, fps=10.0)
        t4 = time.perf_counter()
        if i >= 2:
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[key] += dt
    return {k: v / len(frames) for k, v in totals.items()}


class OraclePredictor:
    """Timing stand-in for trained weights on the generated clip: runs the real ``Predictor`` (its
    crops, its backend, so the cost is the architecture's), then reports each box's person as the
    clip's true COCO joints, confidence 0.9 inside the box and 0.05 outside (what tracking needs
    from a model that knows the figure). Frames are counted by calls: one per frame (no flip, no
    3D model), so warm-up frames must go through it too."""

    def __init__(self, predictor, truth):
        self.predictor, self.truth, self.calls = predictor, truth, 0
        self.config = predictor.config

    def __call__(self, image_rgb, boxes_xyxy, flip=False):
        pred = self.predictor(image_rgb, boxes_xyxy, flip=flip)
        joints = self.truth[self.calls % len(self.truth)]
        self.calls += 1
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 1, 4)
        inside = ((joints >= boxes[..., :2]) & (joints <= boxes[..., 2:])).all(-1)        # (N, 17)
        pred.keypoints = np.broadcast_to(joints, pred.keypoints.shape).copy()
        pred.confidence = np.where(inside, 0.9, 0.05).astype(np.float32)
        return pred


def end_to_end_fps(pipe: PosePipeline, frames, detector: str, track: bool) -> tuple[float, int]:
    """The app's webcam path: ``run_frame`` one frame at a time in one stream, plus drawing. FPS
    after two warm-up frames, and how many frames ran the detector."""
    state = StreamState() if track else StreamState(follow=None)
    for i, frame in enumerate(list(frames[:2])):
        pipe.run_frame(frame, detector, state=state, smooth=True, timestamp_ms=i * 100)
    pipe.close(state)
    if isinstance(pipe.predictor, OraclePredictor):
        pipe.predictor.calls = 0
    state = StreamState() if track else StreamState(follow=None)
    t0 = time.perf_counter()
    for i, frame in enumerate(frames):
        annotate(frame, pipe.run_frame(frame, detector, state=state, smooth=True, timestamp_ms=i * 100), pipe.config)
    fps = len(frames) / (time.perf_counter() - t0)
    pipe.close(state)
    return fps, (state.follow.detections_run if track else len(frames))


def write_clip(frames, path: Path) -> Path:
    """The frames as an MJPEG .avi (cheap to decode, as a camera's or a phone's video is)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def predict_fps(pipe: PosePipeline, clip: Path, num_frames: int, detector: str, track: bool, save_media: bool,
                out: Path) -> tuple[float, int]:
    """``rle-predict CLIP`` in-process (``rle_app.predict.Run``: decoding, the overlapped pipeline,
    drawing, VP8 encoding with ``save_media``, the JSON): FPS over the whole clip (wall time from
    opening it to the files closed), and the detector runs (from the stream's tracker)."""
    from rle_app import predict
    if isinstance(pipe.predictor, OraclePredictor):
        pipe.predictor.calls = 0
    run = predict.Run(pipe, predict.prepare_out(out), detector, save_media, "json", track, echo=lambda line: None)
    t0 = time.perf_counter()
    predict.run_source(run, str(clip))
    fps = num_frames / (time.perf_counter() - t0)
    follow = run.last_state.follow
    return fps, (follow.detections_run if follow is not None else num_frames)


def mediapipe_peer_fps(frames, task: str) -> float:
    """MediaPipe's own PoseLandmarker (VIDEO mode, one pose) on the same frames: the peer row."""
    from mediapipe.tasks.python import BaseOptions, vision
    import mediapipe as mp
    options = vision.PoseLandmarkerOptions(base_options=BaseOptions(model_asset_path=task),
                                           running_mode=vision.RunningMode.VIDEO, num_poses=1)
    with vision.PoseLandmarker.create_from_options(options) as landmarker:
        images = [mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(f)) for f in frames]
        landmarker.detect_for_video(images[0], 0)
        t0 = time.perf_counter()
        for i, image in enumerate(images):
            landmarker.detect_for_video(image, 100 * (i + 1))
        return len(frames) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["demo", "resnet50"])
    parser.add_argument("--detector", default="full-frame")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--write-assets", type=Path, help="write demo.webm / demo.jpg here and exit")
    parser.add_argument("--end-to-end", action="store_true", help="rle-predict rows: with and without tracking, "
                        "plus MediaPipe's own landmarker (needs --detector mediapipe and --detector-model)")
    parser.add_argument("--backend", default="torch", choices=["auto", "torch", "onnxruntime"],
                        help="the Predictor's inference backend")
    parser.add_argument("--max-people", type=int, default=None, help="PosePipeline's max_people (rle-app/rle-predict "
                        "--max-people; mediapipe's num_poses)")
    parser.add_argument("--detector-model", help="MediaPipe .task (default $RLE_POSE_TASK)",
                        default=os.environ.get("RLE_POSE_TASK"))
    args = parser.parse_args()
    if args.write_assets:
        write_assets(args.write_assets)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.end_to_end:
        end_to_end(args)
        return
    frames = clip_frames(num_frames=args.frames)
    print(f"{args.frames} frames 640x480, detector {args.detector}, backend {args.backend}, "
          f"torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':<30} {'detect+track':>12} {'predict':>9} {'smooth':>8} {'draw':>8} {'total ms':>9} {'FPS':>6}")
    for name in args.backbones:
        model, label = bench_model(name)
        pipe = PosePipeline(model, detector=args.detector, detector_model=args.detector_model, backend=args.backend)
        times = stage_times(pipe, frames, args.detector)
        total = sum(times.values())
        print(f"{label + ' ' + args.backend:<30.30} " + " ".join(f"{1000 * times[k]:>{w}.1f}" for k, w in
              zip(times, (12, 9, 8, 8))) + f" {1000 * total:>9.1f} {1 / total:>6.1f}")


def bench_model(name: str):
    """(model, label): the shipped demo model, or a timm backbone at 256x192 with random weights."""
    if name == "demo":
        return load_pose_models(None, None, torch.device("cpu"))[0], f"demo {DEMO_CHECKPOINT.stem} 128x96"
    return build_model(coco_config(name)).eval(), f"{name} 256x192"


def end_to_end(args) -> None:
    """The end-to-end table: per model, the app's webcam path (serial) and ``rle-predict`` on the
    clip as a file (overlapped; with and without the annotated video), tracking off and on; for the
    random-weight architectures also the oracle stand-in (true joints, real compute) with tracking;
    then MediaPipe's own landmarker as the peer row."""
    import tempfile

    from rle_app.predict import fit_stream_threads
    frames, truth = clip_frames(num_frames=args.frames, joints=True)
    default_threads = args.threads or torch.get_num_threads()
    print(f"{args.frames} frames 640x480, detector {args.detector}, backend {args.backend}, max people "
          f"{args.max_people or 'default'}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':<26} {'keypoints':<9} {'path':<22} {'threads':>7} {'tracking':>8} {'detections':>10} {'FPS':>6}")

    def row(label, weights, path, threads, track, detections, fps):
        print(f"{label:<26.26} {weights:<9} {path:<22} {threads:>7} {'on' if track else 'off':>8} "
              f"{detections:>10} {fps:>6.1f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(frames, Path(tmp) / "clip.avi")
        for name in args.backbones:
            model, label = bench_model(name)
            weights = ["trained"] if name == "demo" else ["random", "oracle"]
            for path, save_media in [("webcam (run_frame)", None), ("rle-predict", True),
                                     ("rle-predict --no-save", False)]:
                torch.set_num_threads(default_threads)

                def build(model=model):
                    return PosePipeline(model, detector=args.detector, detector_model=args.detector_model,
                                        backend=args.backend, max_people=args.max_people)

                pipe = build()
                if save_media is not None and not args.threads:      # rle-predict's own choice for a video
                    pipe = fit_stream_threads(pipe, build)
                threads = torch.get_num_threads()
                plain = pipe.predictor
                for kind in weights:
                    pipe.predictor = OraclePredictor(plain, truth) if kind == "oracle" else plain
                    for track in ((True,) if kind == "oracle" else (False, True)):
                        if save_media is None:
                            fps, detections = end_to_end_fps(pipe, frames, args.detector, track)
                        else:
                            fps, detections = predict_fps(pipe, clip, len(frames), args.detector, track, save_media,
                                                          Path(tmp) / "out")
                        row(label, kind, path, threads, track, detections, fps)
                pipe.close()
        torch.set_num_threads(default_threads)
    if args.detector == "mediapipe" and args.detector_model:
        print(f"{'MediaPipe PoseLandmarker':<26} {'its own':<9} {'VIDEO mode, 1 pose':<22} {'':>7} {'':>8} {'':>10} "
              f"{mediapipe_peer_fps(frames, args.detector_model):>6.1f}")


if __name__ == "__main__":
    main()
