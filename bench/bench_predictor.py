"""Per-crop inference latency and the Predictor's overhead beyond the forward pass (CPU).

    python bench/bench_predictor.py [--backbones resnet50 mobilenetv3_large_100] [--repeats 5]
    python bench/bench_predictor.py --backends [--backbones resnet50 mobilenetv2_100] [--batches 1 8]

For each backbone and batch size: the forward pass per crop (the model on ready uint8 tensors), the
Predictor's own work per crop (crop warps from a 640x480 image + decoding to image pixels and
covariances), and the whole Predictor call. The stages are timed interleaved, best of N, so that
load from other processes hits them alike. Overhead = own work / forward; target <= 10 %.

With ``--backends``: the forward pass per crop of torch eager and ONNX Runtime (the graph
``models.export`` writes, uint8 crops, same thread count), interleaved in one run, and their ratio
(target: ONNX Runtime >= 1.5x torch eager on ResNet-50, batch 1); ``--compile`` adds torch.compile
(inductor, compiled before timing).
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


def best_of_interleaved(fns: list, repeats: int, rest_s: float = 0.05) -> list[float]:
    """Best wall time of each function, running them in turn ``repeats`` times, with ``rest_s`` of
    idle before each: ONNX Runtime's worker threads keep spinning for a while after a run, and
    without the rest the function timed next (torch eager) ran up to 2x slower on 2 cores."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()  # warm-up
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            time.sleep(rest_s)
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


def measure_backends(backbone: str, batch: int, repeats: int, folder: str, compile: bool = False) -> list[float]:
    """Seconds per crop of the forward pass on random uint8 crops: torch eager, ONNX Runtime and,
    with ``compile``, torch.compile (inductor; compiled once per shape before timing)."""
    from models.backends import OnnxRuntimeRunner
    from models.export import export_onnx, random_crops
    model = build_model(coco_config(backbone)).eval()
    path = export_onnx(model, os.path.join(folder, f"{backbone}.onnx")).path
    runner = OnnxRuntimeRunner(path, model.config)
    x = random_crops(model.config, batch)
    fns = [lambda: model(x), lambda: runner(x)]
    if compile:
        compiled = torch.compile(model)
        with torch.inference_mode():
            compiled(x)                     # compile outside the timing
        fns.append(lambda: compiled(x))
    with torch.inference_mode():
        times = best_of_interleaved(fns, repeats)
    return [t / batch for t in times]


def main_backends(args) -> None:
    import tempfile

    import onnxruntime
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {torch.get_num_threads()} threads, "
          f"input 256x192, CPU, forward ms/crop (best of {args.repeats})")
    print(f"{'backbone':<20}{'batch':>6}{'torch eager':>13}{'onnxruntime':>13}{'speed-up':>10}"
          + (f"{'torch.compile':>15}{'speed-up':>10}" if args.compile else ""))
    with tempfile.TemporaryDirectory() as folder:
        for name in args.backbones:
            for batch in args.batches:
                eager, fast, *compiled = measure_backends(name, batch, args.repeats, folder, args.compile)
                print(f"{name:<20}{batch:>6}{eager * 1e3:>13.2f}{fast * 1e3:>13.2f}{eager / fast:>9.2f}x"
                      + "".join(f"{c * 1e3:>15.2f}{eager / c:>9.2f}x" for c in compiled))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "mobilenetv3_large_100"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", action="store_true", help="torch eager vs ONNX Runtime instead")
    parser.add_argument("--compile", action="store_true", help="with --backends: a torch.compile column too")
    args = parser.parse_args()
    if args.backends:
        return main_backends(args)
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
