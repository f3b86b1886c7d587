"""Data pipeline throughput per worker process: crop-only JPEG decoding (ours) vs a full decode.

    python bench/bench_data.py [--images 200] [--image-hw 480 640] [--passes 3] [--data DIR]

One process, no DataLoader, ``cv2.setNumThreads(1)`` (as in a loader worker): samples/s of one
core. Data: ``write_coco`` (trainer/data/synthetic/) train images at ``--image-hw`` (plain
baseline JPEGs, as COCO's), every kept person instance, COCO training augmentation (the same
random draws for every method).
- ours: ``data.image_cache`` (``RestartCache`` + ``JpegReader('reduced')``, trainer/data/images.py):
  the lossless restart-marker copy of the image; only the restart segments under the crop are
  decoded, DCT-scaled at the largest reduction keeping >= 1 source px per crop px, to RGB. The
  cache lookup (two stats) counts as decode time; the copies are made before timing, and their
  one-time cost is printed;
- region, plain files: ``JpegReader('reduced')`` without the cache (the default): rows above the
  crop entropy-decoded and skipped, columns beside it not IDCT'd;
- baseline: ``cv2.imread`` of the full image, BGR->RGB of the whole image, the same warp.
Breakdown per sample: decode (incl. the baseline's full-image BGR->RGB), warp (``images.crop_rgb``:
``geometry.warp_crops`` and the crop's colour conversion), rest (augmentation draws and targets). Per-sample medians: numbers depend on the machine's load.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import trainer.data.transforms as transforms  # noqa: E402
from models.config import coco_config  # noqa: E402
from trainer.config import AugmentConfig  # noqa: E402
from trainer.data.coco import load_coco_instances  # noqa: E402
from trainer.data.dataset import TopDownDataset  # noqa: E402
from trainer.data.images import REDUCED_FLAGS, JpegReader, RestartCache, restart_copy  # noqa: E402
from trainer.data.synthetic import SyntheticSpec, write_coco  # noqa: E402
from trainer.data.images import Decoded  # noqa: E402
from trainer.data.transforms import TrainTransform  # noqa: E402

TIMES = {"decode": 0.0, "warp": 0.0}   # accumulated by the timed reader and the timed warp


class TimedReader:
    """Wraps an ImageReader; adds its time to TIMES['decode'] and remembers the reduction."""

    def __init__(self, reader) -> None:
        self.reader, self.reduction = reader, 1

    def __call__(self, crop_from_img: np.ndarray, input_hw: tuple[int, int]) -> Decoded:
        start = time.perf_counter()
        out = self.reader(crop_from_img, input_hw)
        TIMES["decode"] += time.perf_counter() - start
        self.reduction = out.reduction
        return out


class FullDecodeReader:
    """The straightforward baseline: full decode, BGR->RGB of the whole image."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __call__(self, crop_from_img: np.ndarray, input_hw: tuple[int, int]) -> Decoded:
        return Decoded(cv2.cvtColor(cv2.imread(self.path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), 1, False)


def _timed_warp(original):
    def warp(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        TIMES["warp"] += time.perf_counter() - start
        return out
    return warp


class CachedReader:
    """Ours: the restart-marker copy from the cache (looked up per sample, as the data set does)."""

    def __init__(self, path: Path) -> None:
        self.name = path.name

    def __call__(self, crop_from_img: np.ndarray, input_hw: tuple[int, int]) -> Decoded:
        return JpegReader(CACHE(self.name))(crop_from_img, input_hw)


CACHE: RestartCache   # set in main()
READERS = {"baseline": FullDecodeReader, "region": lambda path: JpegReader(path, "reduced"),
           "ours": CachedReader}
NAMES = {"baseline": "full decode (baseline)", "region": "region decode, plain files",
         "ours": "restart copies, crop only (ours)"}


def _one(ds: TopDownDataset, transform: TrainTransform, i: int, method: str, seed: int) -> tuple:
    """One sample by ``method``: (total, decode, warp) seconds and the reduction used."""
    path = ds.image_dir / ds.instances.image_files[int(ds.instances.image_index[i])]
    rng = np.random.default_rng(seed)   # the same draws for every method (not timed: a data set
    reader = TimedReader(READERS[method](path))   # owns one generator per worker, not per sample)
    TIMES.update(decode=0.0, warp=0.0)
    start = time.perf_counter()
    transform(ds.instance(i), reader, rng)
    return time.perf_counter() - start, TIMES["decode"], TIMES["warp"], reader.reduction


def run(ds: TopDownDataset, transform: TrainTransform, passes: int) -> dict:
    """``passes`` walks over every instance, the two methods interleaved sample by sample (so
    both see the same machine load). Returns per-sample MEDIAN ms (robust to other processes
    preempting this one; "rest" = median total - median decode - median warp), samples/s =
    1 / median total, and the shares of the JPEG reductions used."""
    acc = {m: [] for m in READERS}
    reductions = []
    for p in range(passes):
        for i in range(len(ds)):
            for method in READERS:
                total, decode, warp, r = _one(ds, transform, i, method, seed=p * len(ds) + i)
                acc[method].append((total, decode, warp))
                reductions += [r] if method == "ours" else []
    share = np.bincount(reductions, minlength=9)[[1, 2, 4, 8]] / len(reductions)
    out = {}
    for method, rows in acc.items():
        total, decode, warp = 1e3 * np.median(np.array(rows), axis=0)
        out[method] = {"samples_s": 1e3 / total, "total_ms": total, "decode": decode, "warp": warp,
                       "rest": total - decode - warp,
                       "reduction": np.array([1.0, 0, 0, 0]) if method == "baseline" else share}
    return out


def decode_by_reduction(files: list[Path], repeats: int = 3) -> dict[int, float]:
    """Median ms to decode each file at reduction 1 (full), 2, 4, 8, interleaved per file
    (OpenCV, whole image)."""
    times = {r: [] for r in REDUCED_FLAGS}
    for _ in range(repeats):
        for path in files:
            for r, flag in REDUCED_FLAGS.items():
                start = time.perf_counter()
                cv2.imread(str(path), flag)
                times[r].append(time.perf_counter() - start)
    return {r: 1e3 * float(np.median(v)) for r, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--image-hw", type=int, nargs=2, default=(480, 640))
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="reuse/write the data set here")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    root = args.data or Path(tempfile.mkdtemp(prefix="bench_data_"))
    ann = root / "annotations" / "person_keypoints_train2017.json"
    if not ann.is_file():
        start = time.perf_counter()
        write_coco(root, SyntheticSpec(num_train=args.images, num_val=1, image_hw=tuple(args.image_hw)))
        print(f"wrote {args.images} images {args.image_hw[0]}x{args.image_hw[1]} to {root} "
              f"in {time.perf_counter() - start:.0f} s")
    instances = load_coco_instances(ann)
    heights = instances.boxes_xyxy[:, 3] - instances.boxes_xyxy[:, 1]
    print(f"{len(instances)} instances, box height px median {np.median(heights):.0f} "
          f"(10-90%: {np.percentile(heights, 10):.0f}-{np.percentile(heights, 90):.0f})")
    folder = root / "images" / "train2017"
    by_r = decode_by_reduction(sorted(folder.glob("*.jpg"))[:50])
    print("decode only, median ms: " + ", ".join(f"r={r}: {ms:.2f}" for r, ms in by_r.items())
          + " (full / r: " + ", ".join(f"x{by_r[1] / by_r[r]:.1f}" for r in (2, 4, 8)) + ")")
    global CACHE
    CACHE = RestartCache(folder, root / "restart-cache")
    files = sorted(folder.glob("*.jpg"))
    made = [CACHE(path.name) for path in files]
    copy_ms = []
    for path in files[:50]:
        data = path.read_bytes()
        start = time.perf_counter()
        restart_copy(data)
        copy_ms.append(1e3 * (time.perf_counter() - start))
    size = sum(p.stat().st_size for p in made) / sum(p.stat().st_size for p in files)
    print(f"restart copies (one-time, made before timing): median {np.median(copy_ms):.2f} ms/image "
          f"(full decode {by_r[1]:.2f} ms), size x{size:.3f} of the originals")
    transforms.crop_rgb = _timed_warp(transforms.crop_rgb)
    print("\n| crop | method | samples/s | decode ms | warp ms | rest ms | total ms | r=1/2/4/8 % |")
    print("|---|---|---|---|---|---|---|---|")
    for input_hw in ((256, 192), (128, 96)):
        cfg = coco_config("resnet50", input_hw=input_hw)
        transform = TrainTransform(cfg, AugmentConfig())
        ds = TopDownDataset(instances, folder, transform)
        run(ds, transform, 1)   # warm the page cache
        results = run(ds, transform, args.passes)
        for method, r in results.items():
            name = NAMES[method]
            share = "/".join(f"{100 * v:.0f}" for v in r["reduction"])
            print(f"| {input_hw[0]}x{input_hw[1]} | {name} | {r['samples_s']:.0f} | {r['decode']:.2f} | "
                  f"{r['warp']:.2f} | {r['rest']:.2f} | {r['total_ms']:.2f} | {share} |")
        base = results["baseline"]
        def ratio(key, base=base, results=results):
            return base[key] / max(results["ours"][key], 1e-9)
        print(f"| {input_hw[0]}x{input_hw[1]} | **ratio baseline / ours** | **x{1 / ratio('samples_s'):.2f}** | "
              f"x{ratio('decode'):.2f} | x{ratio('warp'):.2f} | x{ratio('rest'):.2f} | x{ratio('total_ms'):.2f} | |")


if __name__ == "__main__":
    main()
