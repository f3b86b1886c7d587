"""Resume on generated COCO data (tiny ResNet, 64x48): kills injected between the steps of an
epoch's end leave consistent records, interrupted saves' temporary files are removed, and the
resume rules refuse architecture changes and apply epochs / lr changes truthfully."""
import json
import shutil

import pytest
import torch

from models.checkpoint import read_checkpoint
from trainer import fit as fit_module, run_state
from trainer.config import ConfigError, resolve_config
from trainer.data.synthetic import SyntheticSpec, write_coco
from trainer.fit import fit


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the code catches it, so no cleanup runs after it."""


def _cfg(root, out, epochs=2, *sets):
    return resolve_config("synthetic-coco", overrides={"data.data_root": str(root), "out_dir": str(out),
                                                       "optim.epochs": epochs},
                          sets=["model.backbone=resnet10t", "model.input_hw=[64, 48]", "data.workers=0",
                                "data.batch_size_per_gpu=4", "val_every_epochs=100", "optim.milestones=[]",
                                "log_every_steps=1", "save_every_epochs=1", *sets])


def _fit(cfg, resume=None, lines=None):
    return fit(cfg, resume=resume, max_steps_per_epoch=1, echo=(lines.append if lines is not None else lambda *_: None))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"), SyntheticSpec(num_train=8, num_val=4, seed=3))


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    """'one': a run of 2 epochs stopped in epoch 2; 'two': the same run, uninterrupted."""
    base = tmp_path_factory.mktemp("runs")
    real = fit_module.train_one_epoch

    def stop_in_epoch_2(*args, **kwargs):
        if args[4] == 2:
            raise Killed
        return real(*args, **kwargs)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(fit_module, "train_one_epoch", stop_in_epoch_2)
        _fit(_cfg(data_root, base / "one", 2))
    _fit(_cfg(data_root, base / "two", 2))
    return base


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _kill_at(monkeypatch, point):
    """Raise Killed at ``point`` of epoch 2's end: before last.pth is written, after it (before
    best.pth), after best.pth (before epoch_002.pth), or after both links (before the log line)."""
    calls = []
    real_save, real_link, real_write = run_state.save_checkpoint, run_state._link_or_copy, run_state.MetricsLog.write

    def save(*args, **kwargs):
        if point == "before_last":
            raise Killed
        calls.append("last.pth")           # count the links made after this save only
        return real_save(*args, **kwargs)

    def link(src, dst):
        if calls:
            calls.append(dst.name)
        if (point, calls) in (("before_best", ["last.pth", "best.pth"]),
                              ("before_epoch_file", ["last.pth", "best.pth", "epoch_002.pth"])):
            raise Killed
        return real_link(src, dst)

    def write(self, record):
        if point == "before_log" and record.get("kind") == "epoch":
            raise Killed
        return real_write(self, record)
    monkeypatch.setattr(run_state, "save_checkpoint", save)
    monkeypatch.setattr(run_state, "_link_or_copy", link)
    monkeypatch.setattr(run_state.MetricsLog, "write", write)


@pytest.mark.parametrize("point", ["before_last", "before_best", "before_epoch_file", "before_log"])
def test_a_kill_at_any_step_of_an_epochs_end_leaves_consistent_records(runs, data_root, tmp_path,
                                                                        monkeypatch, point):
    run = tmp_path / "run"
    shutil.copytree(runs / "one", run)
    _kill_at(monkeypatch, point)
    with pytest.raises(Killed):
        _fit(_cfg(data_root, run), resume="auto")
    assert (run / "last.pth").is_file() and read_checkpoint(run / "last.pth")["epoch"] == (
        1 if point == "before_last" else 2)
    monkeypatch.undo()
    _fit(_cfg(data_root, run), resume="auto")
    want, got = _records(runs / "two"), _records(run)
    strip = [{k: v for k, v in r.items() if k not in ("time_s", "img_s")} for r in want]
    assert [{k: v for k, v in r.items() if k not in ("time_s", "img_s")} for r in got] == strip
    assert [r["epoch"] for r in got if r["kind"] == "epoch"] == [1, 2]          # one line per epoch
    last, best = read_checkpoint(run / "last.pth"), read_checkpoint(run / "best.pth")
    assert last["epoch"] == best["epoch"] == last["best_epoch"] == 2
    assert [read_checkpoint(run / f"epoch_{e:03d}.pth")["epoch"] for e in (1, 2)] == [1, 2]
    reference = read_checkpoint(runs / "two" / "last.pth")["model"]
    assert all(torch.equal(value, last["model"][key]) for key, value in reference.items())


def test_interrupted_saves_temporary_files_are_removed_at_resume(runs, data_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "one", run)
    left = [run / ".last.pth.abc123.tmp", run / ".best.pth.x9.tmp", run / ".epoch_002.pth.q.tmp"]
    for path in left:
        path.write_bytes(b"\0" * 1000)
    mine = run / ".notes.txt.tmp"            # not a run file's temporary: kept
    mine.write_text("keep")
    lines = []
    _fit(_cfg(data_root, run), resume="auto", lines=lines)
    assert not any(path.exists() for path in left) and mine.read_text() == "keep"
    assert "removed 3 temporary files (0 MB) left by interrupted saves" in lines


def test_epoch_files_are_kept_only_every_n_epochs(data_root, tmp_path):
    _fit(_cfg(data_root, tmp_path / "none", 2, "save_every_epochs=0"))
    assert sorted(p.name for p in (tmp_path / "none").glob("*.pth")) == ["best.pth", "last.pth"]
    _fit(_cfg(data_root, tmp_path / "even", 3, "save_every_epochs=2"))
    assert sorted(p.name for p in (tmp_path / "even").glob("*.pth")) == ["best.pth", "epoch_002.pth", "last.pth"]


@pytest.mark.parametrize("sets,key", [(["model.backbone=resnet18"], "model.backbone"),
                                      (["loss=l1"], "loss"),
                                      (["model.input_hw=[96, 64]"], "model.input_hw"),
                                      (["data.batch_size_per_gpu=2"], "data.batch_size_per_gpu")])
def test_resume_refuses_another_architecture_in_one_line(runs, data_root, tmp_path, sets, key):
    run = tmp_path / "run"
    shutil.copytree(runs / "one", run)
    with pytest.raises(ConfigError, match=rf"{key} is .* in the run but .* now; it cannot change") as err:
        _fit(_cfg(data_root, run, 2, *sets), resume="auto")
    assert "\n" not in str(err.value) and f"--config {run}/config.yaml" in str(err.value)


def test_resume_with_the_runs_config_yaml_continues(runs, data_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "one", run)
    cfg = resolve_config("synthetic-coco", str(run / "config.yaml"), {"optim.epochs": 2, "out_dir": str(run)})
    assert _fit(cfg, resume="auto").epochs_done == 2


def test_resume_with_fewer_epochs_than_done_is_refused_and_equal_trains_nothing(runs, data_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "two", run)
    with pytest.raises(ConfigError, match="already finished 2 epochs, more than optim.epochs 1; give --epochs 3"):
        _fit(_cfg(data_root, run, 1), resume="auto")
    lines = []
    assert _fit(_cfg(data_root, run, 2), resume="auto", lines=lines).epochs_done == 2
    assert any("nothing to train" in line for line in lines)
    assert read_checkpoint(run / "last.pth")["step"] == read_checkpoint(runs / "two" / "last.pth")["step"]


def test_a_new_lr_on_resume_is_applied_and_recorded(runs, data_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "one", run)
    lines = []
    _fit(_cfg(data_root, run, 2, "optim.lr=0.05"), resume="auto", lines=lines)
    stored = read_checkpoint(run / "last.pth")
    assert stored["optimizer"]["param_groups"][0]["lr"] == 0.05 == stored["train_config"]["optim"]["lr"]
    train = [r for r in _records(run) if r["kind"] == "train" and r["epoch"] == 2]
    assert train and all(r["lr"] == 0.05 for r in train)
    assert any("optim.lr: 0.001 -> 0.05" in line for line in lines), lines


def test_milestones_that_rewrite_past_decays_are_refused(runs, data_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "two", run)
    with pytest.raises(ConfigError, match=r"optim.milestones \[1\] would rewrite the lr decays"):
        _fit(_cfg(data_root, run, 4, "optim.milestones=[1]"), resume="auto")
    _fit(_cfg(data_root, run, 4, "optim.milestones=[3]"), resume="auto")   # a future decay: allowed
    stored = read_checkpoint(run / "last.pth")
    assert stored["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)   # x0.1 after epoch 3
