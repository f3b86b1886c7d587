"""Per-crop inference latency and the Predictor's overhead beyond the forward pass (CPU).

    python bench/bench_predictor.py [--backbones resnet50 mobilenetv3_large_100] [--repeats 5]

For each backbone and batch size: the forward pass per crop (the model on ready uint8 tensors), the
Predictor's own work per crop (crop warps from a 640x480 image + decoding to image pixels and
covariances), and the whole Predictor call. The stages are timed interleaved, best of N, so that
load from other processes hits them alike. Overhead = own work / forward; target <= 10 %.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import Predictor, build_model, coco_config  # noqa: E402
from models.predictor import crops_for_boxes, decode  # noqa: E402


def best_of_interleaved(fns: list, repeats: int) -> list[float]:
    """Best wall time of each function, running them in turn ``repeats`` times."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()  # warm-up
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def measure(backbone: str, batch: int, repeats: int) -> tuple[float, float, float]:
    model = build_model(coco_config(backbone)).eval()
    predictor = Predictor(model)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    x0 = rng.uniform(0, 400, batch)
    y0 = rng.uniform(0, 200, batch)
    boxes = np.stack([x0, y0, x0 + 150, y0 + 250], 1)
    crops, mats = crops_for_boxes(image, boxes, model.config)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2)
    with torch.inference_mode():
        out = model(x)
        times = best_of_interleaved([
            lambda: model(x),
            lambda: decode(out, crops_for_boxes(image, boxes, model.config)[1], model.config, boxes),
            lambda: predictor(image, boxes)], repeats)
    return tuple(t / batch for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "mobilenetv3_large_100"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input 256x192, CPU")
    print(f"{'backbone':<24}{'batch':>6}{'forward ms/crop':>17}{'crop+decode ms/crop':>21}"
          f"{'predictor ms/crop':>19}{'overhead':>10}")
    for name in args.backbones:
        for batch in args.batches:
            fwd, own, full = measure(name, batch, args.repeats)
            print(f"{name:<24}{batch:>6}{fwd * 1e3:>17.2f}{own * 1e3:>21.2f}{full * 1e3:>19.2f}"
                  f"{own / fwd * 100:>9.1f}%")


if __name__ == "__main__":
    main()
