"""trainer/run_state.py file writing: epoch/best copies and the run's config.yaml, atomically; a
full disk during a save; checkpoint file modes."""
import errno
import os
import shutil
import stat

import pytest
import torch
import yaml

from models.build import build_model
from models.checkpoint import CheckpointError
from models.config import PoseModelConfig
from trainer import run_state
from trainer.run_state import _link_or_copy, save_training_checkpoint, write_run_config


def test_link_or_copy_replaces_the_target_with_the_source(tmp_path):
    src, dst = tmp_path / "last.pth", tmp_path / "best.pth"
    src.write_bytes(b"epoch 2")
    dst.write_bytes(b"epoch 1")
    _link_or_copy(src, dst)
    assert dst.read_bytes() == b"epoch 2" and os.path.samefile(src, dst)   # a hard link on one file system
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "last.pth"]


def test_link_or_copy_copies_when_links_fail(tmp_path, monkeypatch):
    src, dst = tmp_path / "last.pth", tmp_path / "epoch_001.pth"
    src.write_bytes(b"weights")

    def no_links(*args):
        raise OSError("links not supported")
    monkeypatch.setattr(os, "link", no_links)
    _link_or_copy(src, dst)
    assert dst.read_bytes() == b"weights" and not os.path.samefile(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_001.pth", "last.pth"]


def test_run_config_round_trips_as_yaml(tmp_path):
    config = {"model": {"backbone": "resnet18", "input_hw": [64, 48]}, "optim": {"lr": 0.001}}
    write_run_config(tmp_path, config)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def _tiny_state():
    model = build_model(PoseModelConfig(backbone="resnet10t", input_hw=(64, 48)))
    optimizer = torch.optim.Adam(model.parameters())
    return model, optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, [], 0.1)


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:778] . "
                                                  "PytorchStreamWriter failed writing file data/3: file write failed")])
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    model, optimizer, scheduler = _tiny_state()
    save_training_checkpoint(tmp_path, model, optimizer, scheduler, 1, 1, None, {}, True)
    before = (tmp_path / "last.pth").read_bytes()

    def full_disk(payload, path):
        with open(path, "wb") as handle:
            handle.write(b"\0" * 100)
        raise failure
    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(run_state.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 10**5))
    with pytest.raises(CheckpointError) as err:
        save_training_checkpoint(tmp_path, model, optimizer, scheduler, 2, 2, None, {}, True)
    need = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
    message = str(err.value)
    assert "no space left on device (need ~" in message and "\n" not in message
    assert abs(float(message.split("need ~")[1].split(" MB")[0]) - need) <= 1   # no optimizer state yet
    assert (tmp_path / "last.pth").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "last.pth"]   # no temporary left


def test_other_write_errors_are_not_reported_as_a_full_disk(tmp_path, monkeypatch):
    model, optimizer, scheduler = _tiny_state()

    def broken(payload, path):
        raise RuntimeError("file write failed")
    monkeypatch.setattr(torch, "save", broken)   # plenty of space: torch's own error stands
    with pytest.raises(RuntimeError, match="^file write failed$"):
        save_training_checkpoint(tmp_path, model, optimizer, scheduler, 1, 1, None, {}, True)


def test_checkpoints_are_written_readable_by_others(tmp_path):
    model, optimizer, scheduler = _tiny_state()
    old = os.umask(0o022)
    try:
        save_training_checkpoint(tmp_path, model, optimizer, scheduler, 1, 1, None, {"save_every_epochs": 1}, True)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"last.pth": 0o644, "best.pth": 0o644, "epoch_001.pth": 0o644}


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _one_line_no_space(err: pytest.ExceptionInfo, path) -> str:
    message = str(err.value)
    assert message.startswith(f"{path}: no space left on device (need ~") and "\n" not in message
    assert "--resume auto" in message
    return message


def test_a_full_disk_writing_config_yaml_is_one_line_and_keeps_the_old_one(tmp_path, monkeypatch):
    write_run_config(tmp_path, {"optim": {"lr": 0.001}})
    real_write_bytes = run_state.Path.write_bytes

    def half_then_full(self, data):
        real_write_bytes(self, data[: len(data) // 2])
        _no_space()
    monkeypatch.setattr(run_state.Path, "write_bytes", half_then_full)
    with pytest.raises(CheckpointError) as err:
        write_run_config(tmp_path, {"optim": {"lr": 0.002}})
    _one_line_no_space(err, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"optim": {"lr": 0.001}}
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_full_disk_appending_to_metrics_jsonl_is_one_line_and_leaves_no_part_line(tmp_path, monkeypatch):
    log = run_state.MetricsLog(tmp_path / "metrics.jsonl", tensorboard=False)
    log.write({"kind": "epoch", "epoch": 1, "step": 10})
    before = (tmp_path / "metrics.jsonl").read_bytes()
    real_write = os.write

    def seven_bytes_then_full(fd, data):
        if len(data) > 7:
            return real_write(fd, bytes(data[:7]))
        _no_space()
    monkeypatch.setattr(run_state.os, "write", seven_bytes_then_full)
    with pytest.raises(CheckpointError) as err:
        log.write({"kind": "epoch", "epoch": 2, "step": 20})
    message = _one_line_no_space(err, tmp_path / "metrics.jsonl")
    assert "need ~1 kB" in message                                 # one short line, not 0 MB
    assert (tmp_path / "metrics.jsonl").read_bytes() == before       # the 7 bytes written were taken back


@pytest.mark.parametrize("name", ["best.pth", "epoch_002.pth"])
def test_a_full_disk_in_the_copy_fallback_is_one_line(tmp_path, monkeypatch, name):
    (tmp_path / "last.pth").write_bytes(b"epoch 2 weights" * 1000)
    (tmp_path / name).write_bytes(b"epoch 1")

    def half_copy_then_full(src, dst):
        with open(dst, "wb") as handle:
            handle.write(b"\0" * 100)
        _no_space()
    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    monkeypatch.setattr(run_state.shutil, "copyfile", half_copy_then_full)
    with pytest.raises(CheckpointError) as err:
        _link_or_copy(tmp_path / "last.pth", tmp_path / name)
    assert "need ~15 kB" in _one_line_no_space(err, tmp_path / name)   # last.pth's size
    assert (tmp_path / name).read_bytes() == b"epoch 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pth", name])


def test_other_errors_of_the_copy_fallback_are_not_reported_as_a_full_disk(tmp_path, monkeypatch):
    (tmp_path / "last.pth").write_bytes(b"weights")
    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    monkeypatch.setattr(run_state.shutil, "copyfile",
                        lambda *a: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(PermissionError):
        _link_or_copy(tmp_path / "last.pth", tmp_path / "best.pth")
