"""Which zoo model should the app open by default? CPU speed of each zoo 2D architecture.

    python bench/bench_zoo_default.py [--threads 2] [--repeats 10]

Random weights (speed does not depend on them) built as each zoo entry's backbone and input size;
one person, batch 1, through the Predictor (crop warp from a 640x480 image + forward + decode),
best of N interleaved runs. Prints ms per person and the FPS that leaves for one person; the
README's "Models" section quotes the table and the choice it supports.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import Predictor, build_model, coco_config  # noqa: E402
from models.zoo import ZOO  # noqa: E402

TIMM_NAMES = {"mobilenetv2": "mobilenetv2_100"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    boxes = np.array([[200.0, 60.0, 440.0, 460.0]])
    archs = sorted({(e.backbone, e.input_hw) for e in ZOO.values() if e.task == "coco-2d"})
    runs = []
    for backbone, input_hw in archs:
        model = build_model(coco_config(TIMM_NAMES.get(backbone, backbone), input_hw=input_hw)).eval()
        predictor = Predictor(model)
        runs.append(((backbone, input_hw), lambda p=predictor: p(image, boxes)))
    best = {key: float("inf") for key, _ in runs}
    for _, fn in runs:
        fn()
    for _ in range(args.repeats):
        for key, fn in runs:
            start = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - start)
    print(f"| backbone | input HxW | ms / person ({args.threads} threads) | FPS, one person | zoo names |")
    print("| --- | --- | --- | --- | --- |")
    for (backbone, input_hw), seconds in best.items():
        names = ", ".join(n for n, e in ZOO.items() if (e.backbone, e.input_hw) == (backbone, input_hw))
        print(f"| {backbone} | {input_hw[0]}x{input_hw[1]} | {1000 * seconds:.1f} | {1 / seconds:.1f} | {names} |")


if __name__ == "__main__":
    main()
