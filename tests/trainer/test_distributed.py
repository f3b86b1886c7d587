"""Distributed training on the CPU: two gloo processes under torchrun, tiny ResNet at 64x48 on
generated COCO data. Validation is sharded: the predictions gathered on rank 0 cover each
instance exactly once, equal a single process's predictions of the saved model, and give the
same AP; only rank 0 prints."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import load_model
from trainer.config import resolve_config
from trainer.data.coco import build_val_loader
from trainer.data.synthetic import SyntheticSpec, write_coco
from trainer.evaluate import predict_loader, score_coco

REPO = Path(__file__).resolve().parents[2]
SETS = ["model.backbone=resnet10t", "model.input_hw=[64, 48]", "data.batch_size_per_gpu=4",
        "data.val_batch_size=3", "optim.milestones=[]", "data.workers=0", "data.image_decode=full"]

# Each rank: its stdout/stderr to its own file; the sharded validation's gathered predictions
# (rank 0) recorded by wrapping trainer.tasks.predict_sharded; then rle-train as the CLI runs it.
SCRIPT = """
import json, os, sys
rank = int(os.environ["RANK"])
out = sys.argv[1]
for fd, name in ((1, "out"), (2, "err")):
    os.dup2(os.open(f"{out}/rank{rank}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
import trainer.tasks
from trainer.cli import train_main
real = trainer.tasks.predict_sharded
def recording(model, loader, rt, flip):
    preds = real(model, loader, rt, flip)
    if preds is not None:
        with open(f"{out}/gathered.json", "w") as f:
            json.dump({"order": preds.order.tolist(), "keypoints": preds.keypoints.tolist()}, f)
    return preds
trainer.tasks.predict_sharded = recording
train_main(json.loads(sys.argv[2]), standalone_mode=False)
"""


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = write_coco(tmp_path_factory.mktemp("coco"), SyntheticSpec(num_train=12, num_val=5, seed=3))
    out = tmp_path_factory.mktemp("ddp")
    (out / "run.py").write_text(SCRIPT)
    args = ["coco", "--preset", "synthetic-coco", "--data-root", str(root), "--out", str(out / "run"),
            "--epochs", "1", "--max-steps", "2", "--device", "cpu"]
    for item in SETS:
        args += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(out / "run.py"), str(out), json.dumps(args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    logs = {f.name: f.read_text() for f in out.glob("rank*.*")}
    assert proc.returncode == 0, (proc.stderr[-3000:], logs)
    return root, out, logs


def test_sharded_validation_covers_each_instance_once_and_matches_one_process(two_process_run):
    root, out, _ = two_process_run
    gathered = json.loads((out / "gathered.json").read_text())
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(root)}, sets=SETS)
    model = load_model(out / "run" / "last.pth")
    loader = build_val_loader(cfg)
    assert len(loader.dataset) > 2
    assert gathered["order"] == list(range(len(loader.dataset)))   # each instance exactly once
    single = predict_loader(model, loader, torch.device("cpu"), flip=False)
    np.testing.assert_allclose(np.array(gathered["keypoints"]), single.keypoints, rtol=0, atol=1e-3)
    metrics, _ = score_coco(single, root / cfg.data.val_annotation_file, False, loader.dataset.instances)
    logged = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in logged if r["kind"] == "epoch"][-1]
    assert epoch["val_AP"] == pytest.approx(metrics.to_dict()["AP"], abs=1e-9)


def test_only_rank_0_speaks(two_process_run):
    _, out, logs = two_process_run
    assert "done: 1 epochs in" in logs["rank0.out"] and "epoch 1: loss" in logs["rank0.out"]
    assert "done:" not in logs["rank1.out"] and "epoch 1:" not in logs["rank1.out"]
    assert "epoch 1" not in logs["rank1.err"]    # no progress bar either
