"""trainer/run_state.py file writing: epoch/best copies and the run's config.yaml, atomically."""
import os

import yaml

from trainer.run_state import _link_or_copy, write_run_config


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
