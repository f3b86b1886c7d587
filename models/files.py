"""Files that are whole or absent: the one atomic writer and the one downloader.

Every file the project writes for keeps (checkpoints, metrics, COCO results, cached images, the
mediapipe ``.task``, downloaded weights) goes through ``atomic_path``: the bytes go to a temporary
file in the same folder (so ``os.replace`` stays on one file system), are fsynced, then renamed
over the target. Readers see the old file or the complete new one, never half a file; several
processes writing the same file at once are safe; a failure leaves nothing behind.

``download_file`` is the one downloader (the mediapipe detector's bundle, the model zoo's
checkpoints; Google Drive files through ``gdown``): streamed to such a temporary file, checked
against a sha256 (or the prefix of one: OpenMMLab's file names carry 8 hex digits), kept only if
it matches, under a cross-process lock (``DEST.lock``) so two processes fetching the same file get
one complete file: the second waits, then finds it there. ``default_cache_dir`` is where downloads
are cached.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any
from collections.abc import Iterator

DOWNLOAD_TIMEOUT_S = 20.0
OFFLINE_ENV = "RLE_POSE_OFFLINE"   # set (not "", "0", "false"): no download, no network probe at all
CHUNK_BYTES = 1 << 20
CACHE_ENV = "RLE_POSE_CACHE"
DRIVE_URL = "https://drive.google.com/uc?id={id}"   # gdown follows Drive's confirmation pages


class DownloadError(RuntimeError):
    """A download failed (network, timeout, checksum); the message is one line naming the URL."""


class CacheNotWritable(DownloadError):
    """The cache folder cannot be created or written; the message names it and ``$RLE_POSE_CACHE``."""


def default_cache_dir() -> Path:
    """``$RLE_POSE_CACHE`` if set, else ``$XDG_CACHE_HOME/rle-pose``, else ``~/.cache/rle-pose``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rle-pose"


def ensure_writable_dir(folder: Path) -> Path:
    """Create ``folder`` if needed and check that files can be made in it; else ``CacheNotWritable``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise CacheNotWritable(f"cache folder {folder} is not writable ({err.strerror or err}); "
                               f"set ${CACHE_ENV} to a writable folder") from None
    return folder


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``PATH.lock`` while inside; the lock file is removed on
    the way out (a waiter that then holds a removed file's lock opens the new one and tries again)."""
    lock = path.with_name(path.name + ".lock")
    while True:
        handle = open(lock, "a")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()                              # closing releases the flock


def sha256_matches(hexdigest: str, expected: str | None) -> bool:
    """True when ``expected`` is None, the full digest, or a prefix of it (at least 8 hex digits)."""
    if expected is None:
        return True
    expected = expected.lower()
    if len(expected) < 8:
        raise ValueError(f"sha256 {expected!r}: give the full digest or a prefix of at least 8 hex digits")
    return hexdigest.startswith(expected)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True, mtime_ns: int | None = None,
                suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it becomes ``path`` atomically.

    Write the temporary file by name (``torch.save(obj, tmp)``, a library writing to a path) or
    open it. When the block ends without an exception the file is made readable (0644: mkstemp
    creates 0600), fsynced unless ``fsync=False`` (for re-creatable caches), given ``mtime_ns`` as
    its modification time when set (before it appears), and ``os.replace``d over ``path``. On an
    exception it is removed and the exception propagates. The parent folder must exist. ``suffix``
    ends the temporary name (a writer that picks its format by extension needs the real one).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: parent directory does not exist; create it first")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
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


def host_reachable(url: str, timeout_s: float) -> str | None:
    """None when one TCP connect to ``url``'s host succeeds within ``timeout_s``, else why not (one
    line): the check before a download that would otherwise retry for a minute when offline."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
        return None
    except OSError as exc:
        return f"{parts.hostname}:{port} is unreachable ({type(exc).__name__})"


def write_bytes_atomic(path: str | os.PathLike, data: bytes, fsync: bool = True,
                       mtime_ns: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (``atomic_path``) and return the path."""
    with atomic_path(path, fsync, mtime_ns) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as UTF-8 JSON to ``path`` atomically and return the path."""
    return write_bytes_atomic(path, json.dumps(obj, indent=indent).encode("utf-8"))


def _progress_bar(total: int | None, dest: Path, progress: bool):
    """A tqdm bar in bytes (total from Content-Length when the server sends it), or None."""
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, leave=False)


def _content_length(response) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    return int(value) if value else None


def _stream_url(url: str, out, dest: Path, progress: bool, timeout_s: float, report) -> None:
    """Copy ``url`` into the open file ``out``; a body shorter than its Content-Length is an error."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        total = _content_length(response)
        bar, done = _progress_bar(total, dest, progress), 0
        try:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                if report is not None:
                    report(done, total)
        finally:
            if bar is not None:
                bar.close()
    if total is not None and done != total:
        raise DownloadError(f"{url}: interrupted after {done} of {total} bytes; nothing was kept, "
                            "run again to download it again")


def _stream_drive(drive_id: str, out, progress: bool, timeout_s: float, report) -> None:
    """Copy the Google Drive file ``drive_id`` into ``out`` with gdown (it handles Drive's
    confirmation pages); ``DRIVE_URL`` is the address it starts from."""
    import gdown
    callback = None if report is None else (lambda done, total: report(done, total))
    gdown.download(url=DRIVE_URL.format(id=drive_id), output=out, quiet=not progress,
                   timeout=timeout_s, progress=callback)


def downloads_off() -> bool:
    """True when ``$RLE_POSE_OFFLINE`` is set to anything but "", "0" or "false": the project then
    makes no network connection (downloads and reachability probes fail at once)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false")


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True,
                  timeout_s: float = DOWNLOAD_TIMEOUT_S, drive_id: str | None = None,
                  check=None, report=None) -> Path:
    """Download ``url`` (or the Google Drive file ``drive_id``) to ``dest`` once, verified.

    Under a lock on ``DEST.lock`` (a second process waits, then finds ``dest`` there and returns
    it), the bytes are streamed to a temporary file beside ``dest`` (its folder is created), then
    renamed over ``dest`` only if ``sha256`` (hex, full or a prefix of >= 8 digits) is None or
    matches and ``check(tmp_path)`` (optional, e.g. "loads as a checkpoint") raises nothing: a bad
    or truncated file is never kept. ``progress`` shows a tqdm bar on stderr; ``report(done_bytes,
    total_bytes or None)`` is called as bytes arrive (a UI's progress). Returns ``dest``.

    Raises ``DownloadError`` (one line naming the URL and, for network errors, where to put the
    file by hand) on network errors, timeouts, a short body or a checksum mismatch;
    ``CacheNotWritable`` when ``dest``'s folder cannot be written.
    """
    dest = Path(dest)
    ensure_writable_dir(dest.parent)
    shown = url if drive_id is None else f"{url} (Google Drive file {drive_id})"
    with file_lock(dest):
        if dest.is_file():
            return dest
        if downloads_off():
            raise DownloadError(f"{shown}: not downloaded, ${OFFLINE_ENV} is set; put the file at {dest} "
                                f"by hand, or unset {OFFLINE_ENV}")
        try:
            with atomic_path(dest) as tmp:
                with open(tmp, "wb") as out:
                    if drive_id is None:
                        _stream_url(url, out, dest, progress, timeout_s, report)
                    else:
                        _stream_drive(drive_id, out, progress, timeout_s, report)
                digest = file_sha256(tmp)
                if not sha256_matches(digest, sha256):
                    raise DownloadError(f"{shown}: sha256 {digest} != expected {sha256}; "
                                        f"the file was not kept at {dest}")
                if check is not None:
                    check(tmp)
        except DownloadError:
            raise
        except Exception as err:  # urllib, http.client, requests/gdown: many types, one line
            raise DownloadError(f"cannot download {shown} ({type(err).__name__}: {_first_line(err)}); "
                                f"if the host cannot be reached, download it by hand and save it as {dest}") from None
    return dest


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else "no details"
