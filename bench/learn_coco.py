"""Does RLE beat plain L1 regression at the same small budget? A short CPU run on generated COCO.

    python bench/learn_coco.py [--backbone resnet10t] [--epochs 4] [--num-train 192] [--num-val 48]

Writes a generated COCO-layout data set (trainer/data/synthetic/) into a temp folder, trains
the same model from scratch (no ImageNet weights) twice, ``loss=rle`` and ``loss=l1``, with the
same seed, data order, steps and schedule (Adam 1e-3, no lr step), 128x96 input (--input), and reports the
validation AP with ground-truth boxes (no flip test). The paper's claim is +12.4 AP on real COCO
after 270 epochs; a few CPU minutes on toy data say little about that, and the numbers printed
are whatever they are.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from trainer.config import resolve_config  # noqa: E402
from trainer.data.synthetic import SyntheticSpec, write_coco  # noqa: E402
from trainer.fit import fit  # noqa: E402


def run(root: Path, out: Path, head: str, args) -> tuple[dict, float]:
    """Train with one loss; returns (final GT-box validation metrics, seconds)."""
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(root), "out_dir": str(out),
                                                      "loss": head, "optim.epochs": args.epochs},
                         sets=[f"model.backbone={args.backbone}", f"model.input_hw=[{args.input[0]}, {args.input[1]}]",
                               f"data.batch_size_per_gpu={args.batch}", "optim.milestones=[]",
                               f"val_every_epochs={args.epochs}", "log_every_steps=1000"])
    start = time.perf_counter()
    result = fit(cfg, echo=lambda line: print(f"  [{head}] {line}"))
    return result.last_val, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--num-train", type=int, default=192)
    parser.add_argument("--num-val", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input", type=int, nargs=2, default=[128, 96], metavar=("H", "W"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="learn_coco_") as tmp:
        root = write_coco(Path(tmp) / "coco", SyntheticSpec(num_train=args.num_train, num_val=args.num_val))
        rows = [(head, *run(root, Path(tmp) / head, head, args)) for head in ("rle", "l1")]
    print(f"\n{args.backbone} from scratch, {args.input[0]}x{args.input[1]}, {args.epochs} epochs x {args.num_train} train "
          f"images (batch {args.batch}), val {args.num_val} images, GT boxes, no flip")
    print(f"{'loss':<5}| {'AP':>6} | {'AP50':>6} | {'AR':>6} | {'time s':>7}")
    print(f"{'-' * 5}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 8}")
    for head, metrics, seconds in rows:
        print(f"{head:<5}| {metrics['AP']:6.3f} | {metrics['AP50']:6.3f} | {metrics['AR']:6.3f} | {seconds:7.0f}")


if __name__ == "__main__":
    main()
