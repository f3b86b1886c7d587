"""Distributed training on the CPU: gloo processes under torchrun, tiny ResNet at 64x48 on
generated COCO data (about 1.5 min on 2 cores). Two processes on one host: disjoint training
shards, identical weights on both ranks after each epoch (DDP synchronises the gradients), only
rank 0 writes (an audit hook records every write) and speaks; validation is sharded, each instance
evaluated exactly once, with a single process's predictions and AP. A rank killed by SIGKILL ends
the run (bounded timeout, the failed rank named, rank 0 one line at most) and ``--resume auto``
then matches the uninterrupted run bit for bit. Two torchrun agents standing for two machines
(c10d rendezvous on 127.0.0.1) train to the end and match the one-machine run."""
import json
import socket
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from models.checkpoint import load_model
from trainer.config import resolve_config
from trainer.data.coco import build_train_loader, build_val_loader
from trainer.data.synthetic import SyntheticSpec, write_coco
from trainer.engine import peer_lost_message
from trainer.evaluate import predict_loader, score_coco

REPO = Path(__file__).resolve().parents[2]
SETS = ["model.backbone=resnet10t", "model.input_hw=[64, 48]", "data.batch_size_per_gpu=4",
        "data.val_batch_size=3", "optim.milestones=[]", "data.workers=0", "data.image_decode=full"]

# Each rank: its stdout/stderr to its own file; then, recorded by wrapping the trainer's functions:
# the sharded validation's gathered predictions (rank 0), each epoch's training shard (the sampler's
# indices) and the parameters after it, and every write under the run directory (an audit hook sees
# open-for-write, mkdir, rename, link, remove); KILL_RANK / KILL_EPOCH make that rank die by SIGKILL
# as it starts that epoch. Then rle-train as the CLI runs it.
SCRIPT = """
import json, os, signal, sys
rank = int(os.environ["RANK"])
out, run_dir = sys.argv[1], os.path.realpath(sys.argv[2])
for fd, name in ((1, "out"), (2, "err")):
    os.dup2(os.open(f"{out}/rank{rank}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
writes = []
def audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1] or "", args[2] or 0
        if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append(os.fsdecode(args[0]))
    elif event in ("os.mkdir", "os.rename", "os.link", "os.remove", "shutil.copyfile"):
        writes.extend(os.fsdecode(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike)))
sys.addaudithook(audit)
import torch
import trainer.fit, trainer.tasks
from trainer.cli import train_main
real_predict, real_epoch = trainer.tasks.predict_sharded, trainer.fit.train_one_epoch
def recording_predict(model, loader, rt, flip):
    preds = real_predict(model, loader, rt, flip)
    if preds is not None:
        with open(f"{out}/gathered.json", "w") as f:
            json.dump({"order": preds.order.tolist(), "keypoints": preds.keypoints.tolist()}, f)
    return preds
def recording_epoch(model, loader, optimizer, rt, epoch, *args):
    if rank == int(os.environ.get("KILL_RANK", -1)) and epoch == int(os.environ.get("KILL_EPOCH", -1)):
        os.kill(os.getpid(), signal.SIGKILL)
    with open(f"{out}/shard_rank{rt.rank}_epoch{epoch}.json", "w") as f:
        json.dump(list(loader.sampler), f)
    result = real_epoch(model, loader, optimizer, rt, epoch, *args)
    params = {k: v.detach().clone() for k, v in model.module.named_parameters()}
    torch.save(params, f"{out}/params_rank{rt.rank}_epoch{epoch}.pt")
    return result
trainer.tasks.predict_sharded, trainer.fit.train_one_epoch = recording_predict, recording_epoch
try:
    train_main(json.loads(sys.argv[3]), prog_name="rle-train")   # exits as the CLI does
finally:
    ours = [w for w in writes if os.path.realpath(w).startswith(run_dir + os.sep) or os.path.realpath(w) == run_dir]
    with open(f"{out}/writes_rank{rank}.json", "w") as f:
        json.dump(ours, f)
"""
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _args(root: Path, run: Path, *extra: str) -> list[str]:
    args = ["coco", "--preset", "synthetic-coco", "--data-root", str(root), "--out", str(run),
            "--epochs", "2", "--max-steps", "2", "--device", "cpu", *extra]
    for item in SETS:
        args += ["--set", item]
    return args


def _torchrun(out: Path, launcher: list[str], args: list[str], env=None, timeout=240):
    """Launch the recording script under ``torch.distributed.run`` with ``launcher`` options."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.py").write_text(SCRIPT)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *launcher, str(out / "run.py"),
                           str(out), str(out / "run"), json.dumps(args)],
                          cwd=REPO, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def _logs(out: Path) -> dict[str, str]:
    return {f.name: f.read_text() for f in out.glob("rank*.*")}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"), SyntheticSpec(num_train=12, num_val=5, seed=3))


@pytest.fixture(scope="module")
def two_process_run(data_root, tmp_path_factory):
    """Two epochs, 2 gloo processes on one host, uninterrupted."""
    out = tmp_path_factory.mktemp("ddp")
    proc = _torchrun(out, ["--standalone", "--nproc_per_node", "2"], _args(data_root, out / "run"))
    assert proc.returncode == 0, (proc.stderr[-3000:], _logs(out))
    return data_root, out, _logs(out)


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
    assert "done: 2 epochs in" in logs["rank0.out"] and "epoch 2: loss" in logs["rank0.out"]
    assert "done:" not in logs["rank1.out"] and "epoch 1:" not in logs["rank1.out"]
    assert "epoch 1" not in logs["rank1.err"]    # no progress bar either


def test_only_rank_0_writes_into_the_run_directory(two_process_run):
    _, out, _ = two_process_run
    rank0 = json.loads((out / "writes_rank0.json").read_text())
    rank1 = json.loads((out / "writes_rank1.json").read_text())
    names = {Path(w).name for w in rank0}
    assert {"last.pth", "best.pth", "metrics.jsonl", "config.yaml"} <= names, names   # the hook sees writes
    assert rank1 == []


def test_training_shards_are_disjoint_and_cover_the_data_set(two_process_run):
    root, out, _ = two_process_run
    n = len(build_train_loader(resolve_config("synthetic-coco", overrides={"data.data_root": str(root)},
                                              sets=SETS)).dataset)
    for epoch in (1, 2):
        shards = [json.loads((out / f"shard_rank{r}_epoch{epoch}.json").read_text()) for r in (0, 1)]
        assert len(shards[0]) == len(shards[1]) == n // 2
        union = set(shards[0]) | set(shards[1])
        assert len(union) == 2 * (n // 2) and union <= set(range(n))   # disjoint, within the data set
    first = [json.loads((out / f"shard_rank0_epoch{e}.json").read_text()) for e in (1, 2)]
    assert first[0] != first[1]                  # set_epoch reshuffles


def test_gradients_are_synchronised_weights_identical_across_ranks(two_process_run):
    _, out, _ = two_process_run
    for epoch in (1, 2):
        p0, p1 = (torch.load(out / f"params_rank{r}_epoch{epoch}.pt") for r in (0, 1))
        for key, value in p0.items():
            assert torch.equal(value, p1[key]), (epoch, key)
    e1, e2 = (torch.load(out / f"params_rank0_epoch{e}.pt") for e in (1, 2))
    assert any(not torch.equal(e1[k], e2[k]) for k in e1)   # it trained (different shards per rank)
    saved = load_model(out / "run" / "last.pth").state_dict()
    for key, value in e2.items():
        assert torch.equal(value, saved[key]), key


def _same_weights(a: Path, b: Path) -> None:
    """Two training checkpoints hold the same epoch, step and weights (bit for bit)."""
    ca, cb = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    assert (ca["epoch"], ca["step"]) == (cb["epoch"], cb["step"])
    for key, value in ca["model"].items():
        assert torch.equal(value, cb["model"][key]), key


def test_a_killed_rank_ends_the_run_and_resume_auto_continues_identically(two_process_run, tmp_path):
    """Rank 1 dies by SIGKILL as epoch 2 starts: torchrun ends the run (no hang, bounded timeout)
    naming the failed rank; last.pth stays at epoch 1; ``--resume auto`` under torchrun then gives
    the uninterrupted run's weights."""
    root, reference, _ = two_process_run
    launcher = ["--standalone", "--nproc_per_node", "2"]
    killed = _torchrun(tmp_path, launcher, _args(root, tmp_path / "run"), {"KILL_RANK": "1", "KILL_EPOCH": "2"},
                       timeout=120)
    assert killed.returncode != 0
    assert "rank      : 1" in killed.stderr and "Signal 9 (SIGKILL)" in killed.stderr, killed.stderr[-3000:]
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=False)["epoch"] == 1
    assert not (tmp_path / "run" / "epoch_002.pth").exists()
    rank0 = _logs(tmp_path)["rank0.err"]     # rank 0: stopped by torchrun, or it saw the peer go first
    assert "Traceback" not in rank0, rank0[-3000:]
    errors = [line for line in rank0.splitlines() if line.startswith("Error:")]
    assert errors in ([], [errors[0]]) and all("rank 0: another process of the run stopped" in e for e in errors)
    resumed = _torchrun(tmp_path, launcher, _args(root, tmp_path / "run", "--resume", "auto"))
    assert resumed.returncode == 0, (resumed.stderr[-3000:], _logs(tmp_path))
    assert "resumed from" in _logs(tmp_path)["rank0.out"]
    _same_weights(tmp_path / "run" / "last.pth", reference / "run" / "last.pth")


def test_a_lost_peer_reads_as_one_line_and_other_errors_keep_their_traceback():
    gloo = RuntimeError("[/x/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:5: Connection reset by "
                        "peer. This is typically caused by a remote worker hanging")
    assert peer_lost_message(gloo) is None            # no process group: not a distributed failure
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        assert peer_lost_message(gloo) == (
            "rank 0: another process of the run stopped or hung (Read error [127.0.0.1]:5: Connection reset "
            "by peer); torchrun's summary names the rank that failed first; fix it and relaunch with --resume auto")
        assert peer_lost_message(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_on_one_host_rendezvous_train_and_match_one_node(two_process_run, tmp_path):
    """Two torchrun agents standing for two machines (``--nnodes 2 --node-rank 0|1``, c10d
    rendezvous on 127.0.0.1, one process each) train to the end, and give the parameters of the
    single-node 2-process run (same world size, seed and data)."""
    root, reference, _ = two_process_run
    port = _free_port()
    nodes = []
    for node in (0, 1):
        out = tmp_path / f"node{node}"
        out.mkdir()
        (out / "run.py").write_text(SCRIPT)
        launcher = ["--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "i14"]
        cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, str(out / "run.py"), str(out),
               str(tmp_path / "run"), json.dumps(_args(root, tmp_path / "run"))]
        nodes.append(subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        outputs = [node.communicate(timeout=180)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], [o[-2000:] for o in outputs]
    logs = {**_logs(tmp_path / "node0"), **{"1/" + k: v for k, v in _logs(tmp_path / "node1").items()}}
    spoke = [name for name, text in logs.items() if "done: 2 epochs in" in text]
    assert len(spoke) == 1, logs                        # one rank 0 across both machines
    saved = torch.load(tmp_path / "run" / "last.pth", weights_only=False)
    ref = torch.load(reference / "run" / "last.pth", weights_only=False)
    assert (saved["epoch"], saved["step"]) == (ref["epoch"], ref["step"])
    params = dict(load_model(reference / "run" / "last.pth").named_parameters())
    for key, value in load_model(tmp_path / "run" / "last.pth").named_parameters():
        torch.testing.assert_close(value, params[key], rtol=0, atol=1e-6)
