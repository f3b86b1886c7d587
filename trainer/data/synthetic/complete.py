"""A generated data set appears whole or not at all: written into a temporary folder beside its
place and renamed into place when complete (an interrupted first ``--synthetic`` run leaves only
a ``.NAME.partial-*`` folder, removed by the next run)."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from trainer.data.dataset import DatasetError

# writer -> the file it writes last (relative to its folder): present only in a complete set
LAST_FILES = {"write_coco": "detections/person_detection_results_val2017.json",
              "write_h36m": "annotations/Sample_64_test_Human36M_protocol_2.json",
              "write_mpii": "annotations/annot_mpii.json"}


def is_complete(folder: Path, writer: Callable) -> bool:
    """Whether ``folder`` holds the whole set ``writer`` writes (its last file is there)."""
    return (folder / LAST_FILES[writer.__name__]).is_file()


def write_generated(folder: Path, writer: Callable, spec) -> bool:
    """Write ``writer(folder, spec)``'s set atomically unless it is complete already; returns
    whether it was written. A folder that exists, is not empty and is not a complete set (left by
    an interrupted run of an older version) raises ``DatasetError`` (one line) rather than being
    deleted or mixed with."""
    folder = Path(folder)
    if is_complete(folder, writer):
        return False
    if folder.is_dir() and any(folder.iterdir()):
        raise DatasetError(f"{folder}: an incomplete generated data set (no {LAST_FILES[writer.__name__]}; "
                           "an interrupted first run?); delete the folder and run again to regenerate it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.partial-*"):   # interrupted earlier runs
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        writer(tmp, spec)
        if folder.is_dir():
            folder.rmdir()                  # empty (checked above); os.rename needs the name free
        os.rename(tmp, folder)
    except OSError:
        if not is_complete(folder, writer):   # (another process renamed its whole set first: fine)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
