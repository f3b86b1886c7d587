"""Writing run artefacts (metrics, COCO results, cached images) so that a crash never leaves half a
file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | os.PathLike, data: bytes, fsync: bool = True,
                       mtime_ns: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically and return the path (with ``mtime_ns`` as its
    modification time, set before the file appears, when given).

    The bytes go to a temporary file in the same directory (so ``os.replace`` stays on one file
    system), are flushed (and fsynced unless ``fsync=False``: for re-creatable caches), then
    renamed over ``path``: readers see either the old file or the complete new one, and several
    processes writing the same file at once are safe. The parent directory must exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: parent directory does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; these files are meant to be read
        if mtime_ns is not None:
            os.utime(tmp_name, ns=(mtime_ns, mtime_ns))
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (``write_bytes_atomic``) and return the path."""
    return write_bytes_atomic(path, json.dumps(obj, indent=indent).encode("utf-8"))
