"""models/files.py: the one atomic writer (whole file or none) and the one downloader."""
import hashlib
import io
import json
import os
import stat
import urllib.error

import pytest
import torch

from models import files


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_writes_replace_whole_files_and_leave_no_temp(tmp_path):
    path = tmp_path / "m.json"
    assert files.write_json_atomic(path, {"ap": 0.5}, indent=2) == path
    assert json.loads(path.read_text()) == {"ap": 0.5} and _names(tmp_path) == ["m.json"]
    files.write_bytes_atomic(path, b"new", fsync=False, mtime_ns=1_234_000_000_000)
    assert path.read_bytes() == b"new" and path.stat().st_mtime_ns == 1_234_000_000_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o644          # mkstemp's 0600 is not kept
    assert _names(tmp_path) == ["m.json"]


def test_a_failure_inside_atomic_path_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "c.pth"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with files.atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk on fire")
    assert path.read_bytes() == b"old" and _names(tmp_path) == ["c.pth"]


def test_torch_save_writes_through_atomic_path(tmp_path):
    with files.atomic_path(tmp_path / "w.pth") as tmp:
        assert tmp.parent == tmp_path and tmp.name != "w.pth"
        torch.save({"w": torch.arange(3)}, tmp)
    assert torch.equal(torch.load(tmp_path / "w.pth", weights_only=True)["w"], torch.arange(3))
    assert _names(tmp_path) == ["w.pth"]


def test_missing_parent_is_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="parent directory does not exist") as err:
        files.write_bytes_atomic(tmp_path / "no" / "x.bin", b"x")
    assert "\n" not in str(err.value)


class _Response(io.BytesIO):
    """What urlopen returns, with a Content-Length header."""

    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def test_download_checks_sha256_and_renames_atomically(tmp_path, monkeypatch, online):
    payload = os.urandom(3 << 20)
    monkeypatch.setattr(files.urllib.request, "urlopen", lambda url, timeout: _Response(payload))
    dest = tmp_path / "cache" / "m.task"
    assert files.download_file("http://x/m.task", dest, hashlib.sha256(payload).hexdigest()) == dest
    assert dest.read_bytes() == payload and _names(dest.parent) == ["m.task"]
    with pytest.raises(files.DownloadError, match="sha256 .* != expected 00") as err:
        files.download_file("http://x/m.task", tmp_path / "bad.task", "00" * 32, progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad.task").exists() and _names(tmp_path) == ["cache"]
    unchecked = files.download_file("http://x/m.task", tmp_path / "any.bin", progress=False)
    assert unchecked.read_bytes() == payload                   # sha256=None: kept without a check


def test_network_errors_are_one_line_and_leave_nothing(tmp_path, monkeypatch, online):
    def no_network(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(files.urllib.request, "urlopen", no_network)
    with pytest.raises(files.DownloadError) as err:
        files.download_file("http://x/m.task", tmp_path / "m.task")
    message = str(err.value)
    assert "\n" not in message and "URLError" in message and "http://x/m.task" in message
    assert "save it as " + str(tmp_path / "m.task") in message       # where to put it by hand
    assert _names(tmp_path) == []


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RLE_POSE_CACHE", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert files.default_cache_dir() == tmp_path
    monkeypatch.delenv("RLE_POSE_CACHE")
    assert files.default_cache_dir() == tmp_path / "xdg" / "rle-pose"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert files.default_cache_dir() == files.Path.home() / ".cache" / "rle-pose"


def test_offline_env_refuses_downloads_without_any_connection(tmp_path, monkeypatch):
    monkeypatch.setenv("RLE_POSE_OFFLINE", "1")
    monkeypatch.setattr(files.urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    with pytest.raises(files.DownloadError, match=r"not downloaded, \$RLE_POSE_OFFLINE is set; put the file at"):
        files.download_file("http://example.invalid/m.pth", tmp_path / "m.pth")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "m.pth").write_bytes(b"cached")             # a cached file is still served
    assert files.download_file("http://example.invalid/m.pth", tmp_path / "m.pth").read_bytes() == b"cached"
