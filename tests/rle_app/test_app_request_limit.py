"""One upload request is bounded as a whole (issue #13, item 2): a request of several files over
``--max-request-mb`` is answered 413 and leaves nothing in gradio's upload folder, whether it
declares its size (Content-Length) or streams it (chunked); one under the cap is stored. The app
runs on 127.0.0.1 (demo model, full-frame detector) with a 1 MB request cap and gradio's 100 MB
file cap, launched with the same ``request_limit.app_kwargs`` as ``rle-app`` and the Space.
"""
import os
import socket
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from rle_app import cli, space
from rle_app.cli import MAX_FILE_SIZE, build_app
from rle_app.request_limit import MB, RequestSizeLimit, app_kwargs

BOUNDARY = "rlepose-test-boundary"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    old = os.environ.get("GRADIO_TEMP_DIR")
    cache = tmp_path_factory.mktemp("gradio-cache")
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    demo, allowed = build_app("demo", detector="full-frame", device="cpu")
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, allowed_paths=allowed,
                max_file_size=MAX_FILE_SIZE, show_error=False, app_kwargs=app_kwargs(1))
    yield f"http://127.0.0.1:{port}/gradio_api/upload", cache
    demo.close()
    os.environ.pop("GRADIO_TEMP_DIR") if old is None else os.environ.__setitem__("GRADIO_TEMP_DIR", old)


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _multipart(sizes: list[int]) -> bytes:
    """A multipart/form-data body of files named f0.bin, f1.bin ... of these sizes (bytes)."""
    parts = [(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="f{i}.bin"\r\n'
              "Content-Type: application/octet-stream\r\n\r\n").encode() + bytes([i + 1]) * size + b"\r\n"
             for i, size in enumerate(sizes)]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _post(url: str, body: bytes, chunked: bool) -> httpx.Response:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    content = (body[i:i + 65536] for i in range(0, len(body), 65536)) if chunked else body
    return httpx.post(url, content=content, headers=headers, timeout=60)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_three_files_over_the_request_cap_are_refused_and_not_stored(app, chunked):
    url, cache = app
    before = _files(cache)
    body = _multipart([400 * 1024] * 3)                    # 1.2 MB in all, each file far under 100 MB
    assert len(body) > MB
    response = _post(url, body, chunked)
    assert response.status_code == 413 and "maximum allowed size of 1048576 bytes" in response.text
    assert _files(cache) == before                         # no file, no partial temp file


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_request_under_the_cap_is_stored(app, chunked):
    url, cache = app
    response = _post(url, _multipart([400 * 1024, 300 * 1024]), chunked)
    assert response.status_code == 200
    paths = [Path(p) for p in response.json()]
    assert [p.name for p in paths] == ["f0.bin", "f1.bin"]
    assert [p.read_bytes() for p in paths] == [b"\x01" * 400 * 1024, b"\x02" * 300 * 1024]
    assert all(cache in p.parents for p in paths)


class _Launched(Exception):
    """Stops a launch after its arguments were recorded."""


def _record_launch(monkeypatch) -> dict:
    seen = {}

    class FakeDemo:
        rle_pipeline = type("Pipe", (), {"checkpoint": "demo", "notices": ()})()

        def queue(self, **_):
            return self

        def launch(self, **kwargs):
            seen.update(kwargs)
            raise _Launched

    monkeypatch.setattr(cli, "build_app", lambda *a, **k: (FakeDemo(), []))
    return seen


def _cap_bytes(kwargs: dict) -> int:
    (middleware,) = kwargs["app_kwargs"]["middleware"]
    assert middleware.cls is RequestSizeLimit
    return middleware.kwargs["max_bytes"]


def test_rle_app_and_the_space_launch_with_their_request_caps(monkeypatch):
    seen = _record_launch(monkeypatch)
    result = CliRunner().invoke(cli.main, ["--port", "0", "--max-request-mb", "3"])
    assert isinstance(result.exception, _Launched) and _cap_bytes(seen) == 3 * MB
    CliRunner().invoke(cli.main, ["--port", "0"])
    assert _cap_bytes(seen) == cli.MAX_REQUEST_MB * MB == 2 * 100 * MB    # twice the file cap
    with pytest.raises(_Launched):
        space.main()
    assert _cap_bytes(seen) == space.MAX_REQUEST_MB * MB and seen["max_file_size"] == space.MAX_FILE_SIZE
