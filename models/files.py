"""Files that are whole or absent: the one atomic writer and the one downloader.

Every file the project writes for keeps (checkpoints, metrics, COCO results, cached images, the
mediapipe ``.task``, downloaded weights) goes through ``atomic_path``: the bytes go to a temporary
file in the same folder (so ``os.replace`` stays on one file system), are fsynced, then renamed
over the target. Readers see the old file or the complete new one, never half a file; several
processes writing the same file at once are safe; a failure leaves nothing behind.

``download_file`` is the one downloader (the mediapipe detector's bundle now, the model zoo's
checkpoints later): streamed to such a temporary file, checked against a sha256, kept only if it
matches. ``default_cache_dir`` is where downloads are cached.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from collections.abc import Iterator

DOWNLOAD_TIMEOUT_S = 20.0
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A download failed (network, timeout, checksum); the message is one line naming the URL."""


def default_cache_dir() -> Path:
    """``$RLE_POSE_CACHE`` if set, else ``~/.cache/rle-pose``."""
    return Path(os.environ.get("RLE_POSE_CACHE") or Path.home() / ".cache" / "rle-pose")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True, mtime_ns: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it becomes ``path`` atomically.

    Write the temporary file by name (``torch.save(obj, tmp)``, a library writing to a path) or
    open it. When the block ends without an exception the file is made readable (0644: mkstemp
    creates 0600), fsynced unless ``fsync=False`` (for re-creatable caches), given ``mtime_ns`` as
    its modification time when set (before it appears), and ``os.replace``d over ``path``. On an
    exception it is removed and the exception propagates. The parent folder must exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: parent directory does not exist; create it first")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, fsync: bool = True,
                       mtime_ns: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (``atomic_path``) and return the path."""
    with atomic_path(path, fsync, mtime_ns) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as UTF-8 JSON to ``path`` atomically and return the path."""
    return write_bytes_atomic(path, json.dumps(obj, indent=indent).encode("utf-8"))


def _progress_bar(response, dest: Path, progress: bool):
    """A tqdm bar in bytes (total from Content-Length when the server sends it), or None."""
    if not progress:
        return None
    from tqdm import tqdm

    headers = getattr(response, "headers", None)
    total = int(headers["Content-Length"]) if headers is not None and headers.get("Content-Length") else None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, leave=False)


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True,
                  timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` once, verified; the general downloader (mediapipe, model zoo).

    The response is streamed to a temporary file beside ``dest`` (its folder is created), hashed
    on the way, and renamed over ``dest`` only if ``sha256`` (hex) is None or matches: a bad file
    is never kept. ``progress`` shows a tqdm bar on stderr. Returns ``dest``.

    Raises ``DownloadError`` (one line) on network errors, timeouts or a checksum mismatch.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp, open(tmp, "wb") as out, \
                urllib.request.urlopen(url, timeout=timeout_s) as response:
            digest, bar = hashlib.sha256(), _progress_bar(response, dest, progress)
            try:
                while chunk := response.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            out.flush()
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise DownloadError(f"{url}: sha256 {digest.hexdigest()} != expected {sha256}; "
                                    f"the file was not kept at {dest}")
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DownloadError(f"cannot download {url} ({type(err).__name__}: {err})") from None
    return dest
