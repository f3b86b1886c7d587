"""models/zoo.py + the downloader: names -> local server -> cache -> load_model, and every bad case.

Every download goes to a ThreadingHTTPServer on 127.0.0.1 (tests/conftest.py); the Google Drive
entry goes through gdown, sent to the same server. The served files are official-layout state
dicts built from the official key list; the reference output is the same file loaded by path.
"""
import hashlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from models import files, zoo
from models.checkpoint import CheckpointError, load_model

ROOT = Path(__file__).resolve().parents[2]


def _official_bytes(official_state, name="coco-laplace-rle.pth", seed=0) -> bytes:
    buffer = io.BytesIO()
    torch.save(official_state(name, seed=seed), buffer)
    return buffer.getvalue()


def _same_outputs(a, b):
    x = torch.rand(1, 3, *a.config.input_hw)
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    return torch.equal(out_a.mu, out_b.mu) and torch.equal(out_a.sigma, out_b.sigma)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_drive_name_downloads_once_then_loads_from_the_cache_offline(serve_zoo, file_server, official_state,
                                                                    zoo_cache, tmp_path):
    payload = _official_bytes(official_state)
    entry = serve_zoo("rle-r50-coco", payload, drive=True)
    model = load_model("rle-r50-coco")
    cached = zoo_cache / "checkpoints" / "coco-laplace-rle.pth"
    assert cached.read_bytes() == payload and _listing(zoo_cache) == ["coco-laplace-rle.pth"]
    assert file_server.hits == {f"/drive/{entry.drive_id}": 1}
    (tmp_path / "by-hand.pth").write_bytes(payload)
    assert model.config.dims == 2 and _same_outputs(model, load_model(tmp_path / "by-hand.pth"))
    file_server.close()                                   # the network is gone: the cache serves
    assert _same_outputs(load_model("rle-r50-coco"), model) and zoo.is_cached("rle-r50-coco")


def test_hash_prefix_mismatch_is_one_line_and_keeps_nothing(serve_zoo, official_state, zoo_cache):
    serve_zoo("rle-r50-coco", _official_bytes(official_state), sha256="deadbeef")
    with pytest.raises(CheckpointError, match="sha256 .* != expected deadbeef") as err:
        load_model("rle-r50-coco")
    assert "\n" not in str(err.value) and _listing(zoo_cache) == []


def test_interrupted_download_keeps_nothing_and_the_next_call_downloads(serve_zoo, file_server, official_state,
                                                                       zoo_cache):
    payload = _official_bytes(official_state)
    serve_zoo("rle-r50-coco", payload)
    file_server.mode["/zoo/coco-laplace-rle.pth"] = "truncate"
    with pytest.raises(CheckpointError, match="interrupted after") as err:
        load_model("rle-r50-coco")
    assert "\n" not in str(err.value) and _listing(zoo_cache) == []
    del file_server.mode["/zoo/coco-laplace-rle.pth"]
    assert load_model("rle-r50-coco").config.dims == 2
    assert (zoo_cache / "checkpoints" / "coco-laplace-rle.pth").read_bytes() == payload


def test_truncated_drive_file_without_a_hash_is_not_kept(serve_zoo, file_server, official_state, zoo_cache):
    entry = serve_zoo("rle-r50-coco", _official_bytes(official_state)[:5000], drive=True)   # cut, 200 OK
    with pytest.raises(CheckpointError, match="not a loadable checkpoint.*run again") as err:
        load_model("rle-r50-coco")
    assert "\n" not in str(err.value) and _listing(zoo_cache) == [] and entry.sha256 is None


def test_unreachable_host_names_the_url_and_where_to_put_the_file(monkeypatch, zoo_cache, closed_port_url):
    import dataclasses
    monkeypatch.setitem(zoo.ZOO, "rle-r50-coco", dataclasses.replace(
        zoo.ZOO["rle-r50-coco"], url=closed_port_url, drive_id=None))
    with pytest.raises(CheckpointError) as err:
        load_model("rle-r50-coco")
    text = str(err.value)
    assert "\n" not in text and closed_port_url in text
    assert f"save it as {zoo_cache / 'checkpoints' / 'coco-laplace-rle.pth'}" in text


def test_a_url_is_fetched_and_checked_against_the_openmmlab_hash_in_its_name(file_server, official_state,
                                                                             zoo_cache):
    payload = _official_bytes(official_state)
    good = f"/x/model-{hashlib.sha256(payload).hexdigest()[:8]}_20220101.pth"
    file_server.files[good] = file_server.files["/x/bad-0badc0de_20220101.pth"] = payload
    assert load_model(file_server.url(good)).config.dims == 2
    with pytest.raises(CheckpointError, match="sha256 .* != expected 0badc0de"):
        load_model(file_server.url("/x/bad-0badc0de_20220101.pth"))
    assert _listing(zoo_cache) == [good.rsplit("/", 1)[1]]


def test_unknown_names_list_the_zoo_and_missing_paths_say_no_such_file(zoo_cache, tmp_path):
    with pytest.raises(CheckpointError, match="known: rle-r50-coco, rle-r50-h36m, mmpose-rle-r50-coco") as err:
        load_model("rle-r51-coco")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="missing.pth: no such checkpoint file"):
        load_model(tmp_path / "missing.pth")


def test_a_name_of_the_wrong_task_is_refused_before_any_download(zoo_cache):
    with pytest.raises(zoo.ZooError, match="--checkpoint rle-r50-h36m: a 3D model .* needs a 2D one: rle-r50-coco"):
        zoo.resolve_checkpoint("rle-r50-h36m", dims=2, option="--checkpoint")
    assert _listing(zoo_cache) == []


def test_a_cache_that_cannot_be_written_is_one_line_naming_it_and_the_variable(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("RLE_POSE_CACHE", str(blocker / "cache"))
    monkeypatch.delenv("RLE_POSE_OFFLINE", raising=False)
    with pytest.raises(CheckpointError, match=r"cache folder .*a-file/cache/checkpoints is not writable.*"
                                              r"\$RLE_POSE_CACHE") as err:
        load_model("rle-r50-coco")
    assert "\n" not in str(err.value)


def test_two_processes_fetching_one_file_get_one_complete_file(file_server, tmp_path, online):
    payload = bytes(range(256)) * 8192                       # 2 MiB
    file_server.files["/big.bin"] = payload
    dest, digest = tmp_path / "cache" / "big.bin", hashlib.sha256(payload).hexdigest()
    code = textwrap.dedent(f"""
        import sys, time
        from models.files import download_file
        time.sleep(max(0.0, {__import__("time").time() + 2.0} - time.time()))   # start together
        download_file({file_server.url("/big.bin")!r}, {str(dest)!r}, {digest!r}, progress=False)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert files.file_sha256(dest) == digest and _listing(dest.parent) == ["big.bin"]
    assert file_server.hits["/big.bin"] == 1                  # the second waited and found it cached


def test_listing_shows_names_tasks_accuracy_and_what_is_cached(serve_zoo, official_state):
    serve_zoo("rle-r50-coco", _official_bytes(official_state))
    load_model("rle-r50-coco")
    rows = {line.split()[0]: line for line in zoo.format_table().splitlines()[1:-1]}
    assert list(rows) == list(zoo.ZOO)
    assert rows["rle-r50-coco"].rstrip().endswith("yes") and rows["rle-r50-h36m"].rstrip().endswith("no")
    assert "0.749 AP" in rows["mmpose-rle-r152-coco-384"] and "384x288" in rows["mmpose-rle-r152-coco-384"]
    assert "unknown (checked by loading)" in rows["rle-r50-h36m"]


def test_zoo_table_hashes_are_the_openmmlab_name_prefixes():
    for entry in zoo.ZOO.values():
        if entry.layout == "mmpose":
            assert entry.url.startswith("https://download.openmmlab.com/mmpose/")
            assert f"-{entry.sha256}_" in entry.file_name and len(entry.sha256) == 8
        else:
            assert entry.drive_id and entry.sha256 is None
