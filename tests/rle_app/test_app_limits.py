"""The running app under hostile use (issue #13): huge-dimension uploads refused before decoding,
identical concurrent requests each getting their own complete files, odd image formats, no
server path in errors, the video length limit, uploads and outputs deleted on expiry and at stop.

Apps run on 127.0.0.1 with the demo model and the full-frame detector, launched as ``rle-app``
launches them (``show_error=False``), with gradio's cache in a folder of the test's own.
"""
import json
import os
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from rle_app.cli import MAX_FILE_SIZE, build_app
from rle_app.loading import ASSETS_DIR


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(cache_dir: Path, **limits):
    """(demo, url) of an app whose gradio cache (uploads and outputs) is ``cache_dir``."""
    os.environ["GRADIO_TEMP_DIR"] = str(cache_dir)
    demo, allowed = build_app("demo", detector="full-frame", device="cpu", **limits)
    demo.queue(default_concurrency_limit=1)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, allowed_paths=allowed,
                max_file_size=MAX_FILE_SIZE, show_error=False)
    return demo, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    old = os.environ.get("GRADIO_TEMP_DIR")
    cache = tmp_path_factory.mktemp("gradio-cache")
    demo, url = _launch(cache, max_video_s=0.5)
    yield url, cache
    demo.close()
    os.environ.pop("GRADIO_TEMP_DIR") if old is None else os.environ.__setitem__("GRADIO_TEMP_DIR", old)


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_a_huge_png_is_refused_without_decoding_it(app, huge_png, decoded_sizes):
    url, _ = app
    with pytest.raises(Exception, match="huge.png: 13000x13000 px is over this app's limit"):
        Client(url, verbose=False).predict(handle_file(str(huge_png)), api_name="/predict_image")
    assert (13000, 13000) not in decoded_sizes          # neither gradio nor the app decoded it


def test_identical_concurrent_requests_each_get_their_own_complete_files(app, tmp_path):
    url, _ = app
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "same.png"), image)
    results, errors = [], []

    def client_loop():
        client = Client(url, verbose=False, download_files=str(tmp_path / f"dl-{threading.get_ident()}"))
        for _ in range(5):
            try:
                results.append(client.predict(handle_file(str(tmp_path / "same.png")), api_name="/predict_image"))
            except Exception as err:   # noqa: BLE001 - collected and asserted below
                errors.append(repr(err))
    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    [t.start() for t in threads]
    [t.join(timeout=300) for t in threads]
    assert errors == [] and len(results) == 20
    drawn = [cv2.imread(path) for path, _ in results]
    assert all(d is not None and d.shape == (240, 320, 3) for d in drawn)
    assert all(np.array_equal(d, drawn[0]) for d in drawn)           # complete, identical downloads
    docs = [json.loads(Path(js).read_text()) for _, js in results]
    assert all(doc == docs[0] for doc in docs)
    server_paths = {Path(p).parent.name + "/" + Path(p).name for p, _ in results}
    assert len(server_paths) == 20                                    # every output its own file


def test_gif_and_16_bit_uploads_run(app, tmp_path):
    url, _ = app
    client = Client(url, verbose=False)
    frame = np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8)
    Image.fromarray(frame).convert("P").save(tmp_path / "a.gif")
    cv2.imwrite(str(tmp_path / "deep.png"), (frame[..., 0].astype(np.uint16) * 257))
    for name in ("a.gif", "deep.png"):
        drawn, js = client.predict(handle_file(str(tmp_path / name)), api_name="/predict_image")
        assert cv2.imread(drawn).shape == (120, 160, 3)
        assert len(json.loads(Path(js).read_text())["frames"][0]["people"]) == 1


def test_errors_name_no_server_path(app, tmp_path):
    url, cache = app
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not an image" * 64)
    with pytest.raises(Exception) as err:
        Client(url, verbose=False).predict(handle_file(str(tmp_path / "junk.png")), api_name="/predict_image")
    assert str(cache) not in str(err.value) and "/tmp" not in str(err.value)


def test_a_long_video_is_cut_at_the_limit(app, tmp_path):
    url, _ = app
    clip, source = tmp_path / "clip.webm", cv2.VideoCapture(str(ASSETS_DIR / "demo.webm"))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"VP80"), 10, (640, 480))
    for _ in range(8):                                   # 0.8 s; the app's limit here is 0.5 s
        writer.write(source.read()[1])
    writer.release()
    video, js = Client(url, verbose=False).predict(handle_file(str(clip)), api_name="/predict_video")
    doc = json.loads(Path(js).read_text())
    assert len(doc["frames"]) == 5 and doc["truncated"] is True and doc["duration_s"] == 0.8
    assert cv2.VideoCapture(video).get(cv2.CAP_PROP_FRAME_COUNT) == 5


def test_uploads_and_outputs_expire_and_go_at_stop(tmp_path):
    old = os.environ.get("GRADIO_TEMP_DIR")
    cache = tmp_path / "cache"
    demo, url = _launch(cache, cache_expiry_s=2)
    try:
        cv2.imwrite(str(tmp_path / "in.png"), np.full((64, 48, 3), 90, np.uint8))
        defaults = _files(cache)                                     # the tabs' pre-filled demo files
        client = Client(url, verbose=False, download_files=str(tmp_path / "dl"))
        client.predict(handle_file(str(tmp_path / "in.png")), api_name="/predict_image")
        written = _files(cache) - defaults
        assert {p.suffix for p in written} >= {".png", ".json"}     # the upload and both outputs
        for _ in range(60):                                          # bounded: delete_cache runs every 2 s
            if not _files(cache) & written:
                break
            time.sleep(0.5)
        assert not _files(cache) & written
        client.predict(handle_file(str(tmp_path / "in.png")), api_name="/predict_image")
        assert _files(cache) - defaults
    finally:
        demo.close()
        os.environ.pop("GRADIO_TEMP_DIR") if old is None else os.environ.__setitem__("GRADIO_TEMP_DIR", old)
    assert _files(cache) <= defaults                                 # nothing of a request left once stopped
