#!/usr/bin/env bash
# One GPU check for the day a device is lent: a few minutes on one GPU, one table at the end.
#
#   bash bench/gpu_check.sh            # work files in a temporary folder (GPU_CHECK_DIR=DIR to keep them)
#
# 1. bench/bench_train.py's CUDA rows: ResNet-50, 256x192, batch 64, fp32 vs bf16 + channels_last,
#    each eager and with torch.compile: img/s and peak memory.
# 2. A 200-step smoke training on generated COCO data (synthetic-coco preset: resnet10t, 128x96,
#    batch 16, 256 people -> 16 steps per epoch, 13 epochs = 208 steps) with bf16 autocast.
# 3. rle-eval coco on its last.pth (generated val split, GT boxes, flip test).
# Without CUDA it says what it skips (the CUDA rows) and runs the rest on the CPU, shortened to
# 2 epochs x 3 steps, so the script itself is checked on any machine.
# It runs this checkout's code (python -c from the repository root), not an installed copy.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False MPLBACKEND=Agg
WORK="${GPU_CHECK_DIR:-$(mktemp -d -t rle-gpu-check.XXXXXX)}"
mkdir -p "$WORK"
rle_train() { python -c 'from trainer.cli import train_main; train_main(prog_name="rle-train")' "$@"; }
rle_eval() { python -c 'from trainer.cli import eval_main; eval_main(prog_name="rle-eval")' "$@"; }

if python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  DEVICE=cuda EPOCHS=13 STEPS=() WORKERS=8
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
else
  DEVICE=cpu EPOCHS=2 STEPS=(--max-steps 3) WORKERS=0
  echo "gpu_check: no CUDA here: skipping the CUDA benchmark rows (and the ResNet-50 batch-64 CPU row,"
  echo "gpu_check: minutes per step); the smoke training and rle-eval run on the CPU, 2 epochs x 3 steps"
fi
echo "gpu_check: work folder $WORK"

python bench/bench_train.py --device cuda --backbone resnet50 --batch 64 --steps 20 \
  --threads "$(nproc)" --json "$WORK/bench.json"

start=$SECONDS
rle_train coco --synthetic --data-root "$WORK/data" --out "$WORK/run" --device "$DEVICE" \
  --epochs "$EPOCHS" "${STEPS[@]}" --workers "$WORKERS" --set amp=bf16 --set val_every_epochs="$EPOCHS"
train_s=$((SECONDS - start))

start=$SECONDS
rle_eval coco "$WORK/run/last.pth" --data-root "$WORK/data" --device "$DEVICE" --workers "$WORKERS" \
  --out "$WORK/eval.json"
eval_s=$((SECONDS - start))

python - "$WORK" "$DEVICE" "$train_s" "$eval_s" <<'EOF'
import json, sys
from pathlib import Path
work, device, train_s, eval_s = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
bench = json.loads((work / "bench.json").read_text())
records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
epochs = [r for r in records if r["kind"] == "epoch"]
metrics = json.loads((work / "eval.json").read_text())
print(f"\n| check | setting | result |\n| --- | --- | --- |")
for row in bench["rows"]:
    setting = f"{bench['backbone']} 256x192 batch {bench['batch']}, {row['variant']}"
    result = (f"skipped: {row['skipped']}" if "skipped" in row else
              f"{row['img_s']:.1f} img/s, peak {row['peak_gib']:.2f} GiB")
    print(f"| train step ({row['device']}) | {setting} | {result} |")
steps, img_s = epochs[-1]["step"], sum(e["img_s"] for e in epochs) / len(epochs)
print(f"| smoke training ({device}) | synthetic-coco, bf16, {len(epochs)} epochs | {steps} steps in {train_s} s, "
      f"{img_s:.1f} img/s, last loss {epochs[-1]['loss']:.3f}, val AP {epochs[-1].get('val_AP', float('nan')):.3f} |")
print(f"| rle-eval coco ({device}) | last.pth, generated val, GT boxes, flip | AP {metrics['AP']:.3f}, "
      f"AR {metrics['AR']:.3f} in {eval_s} s |")
EOF
