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
