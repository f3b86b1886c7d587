"""The annotated-video writer: OpenCV's VP8 writer against libvpx through PyAV (what
``rle_app.media.VideoSink`` uses), on frames a user would write: a real COCO photo
(tests/data/real/coco) panned and zoomed over 640x480, with a skeleton, ellipses and labels drawn.

    python bench/bench_video_writer.py [--frames 60]

Per writer: encode ms per frame (one thread, best of the two passes), bit rate, and PSNR against
the lossless 4:2:0 encoding of the same frames (the best any 4:2:0 codec can do), every file
decoded by PyAV alike.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from models import coco_config
from rle_app.draw import draw_poses
from rle_app.media import VIDEO_BITS_PER_PIXEL

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "real" / "coco"
FPS = 30


def annotated_frames(num_frames: int) -> list[np.ndarray]:
    """Photo 785 (one skier, its annotated joints) panned and zoomed over 640x480, drawn as the app draws."""
    image = cv2.cvtColor(cv2.imread(str(REAL / "000000000785.jpg")), cv2.COLOR_BGR2RGB)
    ann = [a for a in json.loads((REAL / "test_coco.json").read_text())["annotations"] if a["image_id"] == 785][0]
    joints = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)[:, :2]
    edges, frames = coco_config("resnet18").edges, []
    for i in range(num_frames):
        t = i / max(num_frames - 1, 1)
        scale, centre = 0.8 + 0.35 * t, np.array([390.0 - 60 * np.sin(np.pi * t), 217.0 + 20 * t])
        m = np.array([[scale, 0, 320 - scale * centre[0]], [0, scale, 240 - scale * centre[1]]], np.float32)
        frame = cv2.warpAffine(image, m, (640, 480), flags=cv2.INTER_LINEAR)
        k = (joints @ m[:, :2].T + m[:, 2])[None]
        cov = np.broadcast_to(25.0 * np.eye(2, dtype=np.float32), (1, 17, 2, 2))
        frames.append(draw_poses(frame, k, np.full((1, 17), 0.9, np.float32), cov, edges,
                                 boxes_xyxy=np.r_[k[0].min(0), k[0].max(0)][None], labels=["#0"], fps=30.0))
    return frames


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def encode_pyav(frames, path: Path, codec: str, options: dict, bit_rate: int | None = None) -> float:
    """Seconds per frame to encode ``frames`` into ``path`` with PyAV, one encoder thread."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        if bit_rate:
            stream.bit_rate = bit_rate
        stream.codec_context.thread_count = 1
        t0 = time.perf_counter()
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
        return (time.perf_counter() - t0) / len(frames)


def encode_opencv(frames, path: Path) -> float:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), FPS, (640, 480))
    t0 = time.perf_counter()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return (time.perf_counter() - t0) / len(frames)


def psnr(ref, test) -> float:
    return float(np.mean([10 * np.log10(255.0 ** 2 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-9))
                          for a, b in zip(ref, test)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    frames = annotated_frames(args.frames)
    rate = round(VIDEO_BITS_PER_PIXEL * 640 * 480 * FPS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encode_pyav(frames, tmp / "ref.mkv", "libx264", {"preset": "ultrafast", "qp": "0"})
        reference = decode(tmp / "ref.mkv")
        writers = {
            "OpenCV VideoWriter VP80 (before)": lambda p: encode_opencv(reference, p),
            f"PyAV libvpx realtime, {rate / 1e6:.1f} Mbit/s (VideoSink)":
                lambda p: encode_pyav(reference, p, "libvpx", {"deadline": "realtime", "cpu-used": "8"}, rate),
        }
        print(f"{args.frames} frames 640x480 at {FPS} fps, load average {os.getloadavg()[0]:.2f}")
        print(f"{'writer':<46} {'ms/frame':>9} {'Mbit/s':>7} {'PSNR dB':>8}")
        for name, write in writers.items():
            path = tmp / "out.webm"
            seconds = min(write(path), write(path))
            mbps = path.stat().st_size * 8 / (args.frames / FPS) / 1e6
            print(f"{name:<46} {1000 * seconds:>9.1f} {mbps:>7.1f} {psnr(reference, decode(path)):>8.1f}")


if __name__ == "__main__":
    main()
