"""Learning check for the 3D path: does a short CPU run on generated Human3.6M (+ MPII) data learn,
and how does RLE compare with plain L1 regression at the same budget?

    python bench/learn_h36m.py [--backbone resnet18] [--input 96] [--epochs 6] [--data DIR]

Writes (or reuses) generated data under ``--data`` (``h36m/`` and ``mpii/``, the seed README
layout), then prints protocol-2 MPJPE / PA-MPJPE (mm, no flip) of the untrained model and after
training with ``loss: rle`` and ``loss: l1`` (same seed, data, steps, recipe otherwise the
``synthetic-h36m`` preset: Adam 1e-3, per-tensor clipping 35, the H36M augmentations).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from models.checkpoint import load_model  # noqa: E402
from models.build import build_model  # noqa: E402
from trainer.config import resolve_config  # noqa: E402
from trainer.data import h36m as h36m_data  # noqa: E402
from trainer.data.synthetic import SyntheticSpec, write_h36m, write_mpii  # noqa: E402
from trainer.engine import resolve_device  # noqa: E402
from trainer.evaluate import evaluate_h36m_loader  # noqa: E402
from trainer.fit import fit  # noqa: E402


def ensure_data(root: Path, num_train: int, num_val: int) -> None:
    """Generated H36M (train/test) and MPII under ``root`` unless already there."""
    spec = SyntheticSpec(num_train=num_train, num_val=num_val, h36m_image_hw=(256, 256), image_hw=(192, 192))
    for folder, writer in ((root / "h36m", write_h36m), (root / "mpii", write_mpii)):
        if not (folder / "annotations").is_dir():
            writer(folder, spec)


def config(args, root: Path, head: str, out: Path):
    milestones = int(args.epochs * 0.8) if args.epochs >= 3 else ""
    sets = [f"data.data_root={root}", f"model.backbone={args.backbone}",
            f"model.input_hw=[{args.input},{args.input}]", f"optim.epochs={args.epochs}",
            f"optim.milestones=[{milestones}]", f"loss={head}", f"out_dir={out}",
            f"data.batch_size_per_gpu={args.batch}", f"data.workers={args.workers}",
            f"seed={args.seed}", "log_every_steps=1000", f"device={args.device}"]
    return resolve_config("synthetic-h36m", sets=sets)


def untrained_metrics(cfg):
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(resolve_device(cfg.device))
    return evaluate_h36m_loader(model, h36m_data.build_val_loader(cfg), resolve_device(cfg.device), flip=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--input", type=int, default=96, help="square input size, px")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--num-train", type=int, default=192)
    parser.add_argument("--num-val", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", help="data folder (default: a new temporary folder)")
    args = parser.parse_args()
    root = Path(args.data or tempfile.mkdtemp(prefix="learn_h36m_"))
    tic = time.perf_counter()
    ensure_data(root, args.num_train, args.num_val)
    print(f"data in {root} ({time.perf_counter() - tic:.0f} s)")
    rows = [("untrained", untrained_metrics(config(args, root, "rle", root / "runs" / "none")), 0.0)]
    for head in ("rle", "l1"):
        tic = time.perf_counter()
        cfg = config(args, root, head, root / "runs" / head)
        fit(cfg, echo=lambda line, head=head: print(f"[{head}] {line}"))
        seconds = time.perf_counter() - tic
        rows.append((f"{head}, {args.epochs} ep", last_metrics(cfg, root / "runs" / head), seconds))
    print(f"\n{args.backbone} {args.input}x{args.input}, {args.num_train} H36M + MPII train, "
          f"{args.num_val} test images, batch {args.batch}, {args.device}")
    print(f"{'model':<14}{'MPJPE mm':>10}{'PA-MPJPE mm':>13}{'train s':>9}")
    for name, metrics, seconds in rows:
        print(f"{name:<14}{metrics.mpjpe:10.1f}{metrics.pa_mpjpe:13.1f}{seconds:9.0f}")


def last_metrics(cfg, run_dir: Path):
    """Protocol-2 metrics of the run's last checkpoint."""
    device = resolve_device(cfg.device)
    model = load_model(run_dir / "last.pth", device)
    return evaluate_h36m_loader(model, h36m_data.build_val_loader(cfg), device, flip=False)


if __name__ == "__main__":
    main()
