"""Training-step throughput (img/s): one optimiser step = forward, RLE loss, backward, Adam.

    python bench/bench_train.py [--backbone resnet18] [--batch 16] [--steps 5] [--threads 2]
                                [--device all|cpu|cuda] [--json ROWS.json]

CPU: fp32, channels_last off (the reference recipe's precision). CUDA, when a GPU exists: fp32
(the reference) and bf16 autocast + channels_last (the loss in fp32, as the trainer), each eager
and with ``torch.compile``, with the peak memory from ``torch.cuda.max_memory_allocated``; on a
machine without CUDA those rows say "skipped: no CUDA". Input 256x192 (H x W), random uint8
crops, 17 joints. The time is the median step after warm-up steps (compile's warm-up includes
the compilation). ``--json`` also writes the rows (bench/gpu_check.sh prints them in its table).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from models import build_model, coco_config  # noqa: E402
from models.files import write_json_atomic  # noqa: E402


def step_fn(model, optimizer, images, target, weight, amp_dtype):
    """One training step as trainer.engine does it (forward under autocast, loss in fp32)."""
    def step():
        with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(images)
        loss = model.loss(out, target, weight) if not hasattr(model, "_orig_mod") else \
            model._orig_mod.loss(out, target, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def measure(backbone: str, batch: int, steps: int, device: str, amp: bool, channels_last: bool,
            compile_model: bool) -> tuple[float, float | None]:
    """(img/s, peak GiB or None) for one variant."""
    dev = torch.device(device)
    model = build_model(coco_config(backbone)).to(dev).train()
    images = torch.randint(0, 256, (batch, 3, 256, 192), dtype=torch.uint8, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch, 17, 2, device=dev) - 0.5) * 0.8
    weight = torch.ones(batch, 17, 2, device=dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    run = torch.compile(model) if compile_model else model
    step = step_fn(run, optimizer, images, target, weight, torch.bfloat16 if amp else None)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(3 if compile_model else 1):
        step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    return batch / statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all", help="Which rows to run.")
    parser.add_argument("--json", help="Also write the rows to this JSON file.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = [("cpu", "fp32", False, False), ("cuda", "fp32", False, False), ("cuda", "fp32 + compile", False, True),
                ("cuda", "bf16 + channels_last", True, False), ("cuda", "bf16 + channels_last + compile", True, True)]
    variants = [v for v in variants if args.device in ("all", v[0])]
    rows = []
    print(f"training step, {args.backbone}, 256x192, batch {args.batch}, median of {args.steps} steps")
    print(f"{'device':<7}| {'variant':<32}| {'img/s':>8} | {'peak GiB':>8}")
    print(f"{'-' * 7}|{'-' * 33}|{'-' * 10}|{'-' * 9}")
    for device, name, amp, compile_model in variants:
        if device == "cuda" and not torch.cuda.is_available():
            print(f"{device:<7}| {name:<32}| skipped: no CUDA")
            rows.append({"device": device, "variant": name, "skipped": "no CUDA"})
            continue
        rate, peak = measure(args.backbone, args.batch, args.steps, device, amp, amp, compile_model)
        print(f"{device:<7}| {name:<32}| {rate:8.1f} | {peak if peak is not None else '-':>8}"
              if peak is None else f"{device:<7}| {name:<32}| {rate:8.1f} | {peak:8.2f}")
        rows.append({"device": device, "variant": name, "img_s": rate, "peak_gib": peak})
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    print(f"torch {torch.__version__}, {gpu}, {args.threads} CPU threads, load avg {os.getloadavg()[0]:.1f}")
    if args.json:
        write_json_atomic(args.json, {"backbone": args.backbone, "batch": args.batch, "steps": args.steps,
                                      "rows": rows})


if __name__ == "__main__":
    main()
