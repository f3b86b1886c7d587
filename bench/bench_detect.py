"""Person-detector latency on CPU at 640x480: torchvision's candidates, HOG and mediapipe.

    python bench/bench_detect.py [--threads 2] [--repeats 10] [--task FILE]

The torchvision models run with random weights (no download needed) through the same
``TorchvisionDetector`` the app uses, its resize and score cut (0.5) included; random scores never
pass that cut, so the NMS of the few real detections trained weights give is left out (small).
The frame is a real COCO photo from tests/data/real resized to 640x480. HOG runs at its app
setting (half size); mediapipe (image mode) only with a ``.task`` (``--task`` or $RLE_POSE_TASK).
Times: median and best ms per frame over ``--repeats`` calls after one warm-up, detectors
interleaved so load from other processes hits them alike.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from rle_app.detect import build_detector
from rle_app.detect_torchvision import TORCHVISION_ARCHS

PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "real" / "coco" / "000000040083.jpg"


def frame_640x480() -> np.ndarray:
    """RGB uint8 (480, 640, 3): the COCO photo, resized (aspect not kept)."""
    bgr = cv2.imread(str(PHOTO))
    return cv2.cvtColor(cv2.resize(bgr, (640, 480), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def detectors(task: str | None) -> dict[str, object]:
    """Row label -> detector, built (and warmed) before timing."""
    found = {f"torchvision {arch} ({spec.coco_box_map} COCO box mAP)":
             build_detector("torchvision", arch=arch, pretrained=False)
             for arch, spec in TORCHVISION_ARCHS.items()}
    found["hog (downscale 0.5)"] = build_detector("hog")
    if task and Path(task).is_file():
        found["mediapipe (image mode, num_poses default)"] = build_detector("mediapipe", model_path=task)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--task", default=os.environ.get("RLE_POSE_TASK"), help="mediapipe .task file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    image = frame_640x480()
    dets = detectors(args.task)
    times: dict[str, list[float]] = {name: [] for name in dets}
    for det in dets.values():
        det(image, timestamp_ms=0)                     # warm-up (and model build)
    for _ in range(args.repeats):
        for name, det in dets.items():
            start = time.perf_counter()
            det(image, timestamp_ms=0)
            times[name].append(1000 * (time.perf_counter() - start))
    print(f"640x480 frame, torch threads {torch.get_num_threads()}, {args.repeats} repeats, CPU")
    print("| detector | median ms/frame | best ms/frame |")
    print("| --- | --- | --- |")
    for name, ms in times.items():
        print(f"| {name} | {np.median(ms):.1f} | {min(ms):.1f} |")
    for det in dets.values():
        getattr(det, "close", lambda: None)()


if __name__ == "__main__":
    main()
