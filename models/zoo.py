"""Named public checkpoints: one table (name -> where, hash, task, input, accuracy) and the one
resolver every checkpoint option goes through (a zoo name, an http(s) URL, or a local path).

Files are fetched once into ``default_cache_dir()/checkpoints`` (``$RLE_POSE_CACHE``, else
``$XDG_CACHE_HOME/rle-pose``, else ``~/.cache/rle-pose``) by ``models.files.download_file``:
progress bar, temporary file + rename, sha256 checked where known (OpenMMLab file names carry the
first 8 hex digits of theirs), a cross-process lock. The official files live on Google Drive and
come through ``gdown``; their sha256 is not published, so they are checked by loading instead (a
file that does not load as a checkpoint is not kept). Nothing is downloaded at import.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .files import DownloadError, default_cache_dir, download_file, downloads_off

OFFICIAL_REPO = "https://github.com/Jeff-sjtu/res-loglikelihood-regression"
MMPOSE_V1 = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_regression/coco/"
MMPOSE_DEEPPOSE = "https://download.openmmlab.com/mmpose/top_down/deeppose/"
MMPOSE_RLE_COCO_MD = ("https://github.com/open-mmlab/mmpose/blob/main/configs/body_2d_keypoint/"
                      "topdown_regression/coco/resnet_rle_coco.md")
MMPOSE_LICENCE = "Apache-2.0 (mmpose)"
OPENMMLAB_HASH = re.compile(r"-([0-9a-f]{8})_\d{8}\.pth$")   # name-<sha256[:8]>_<date>.pth


class ZooError(RuntimeError):
    """A checkpoint spec that cannot be resolved (unknown name, wrong task, failed download); one line."""


@dataclass(frozen=True)
class ZooEntry:
    """One public checkpoint. ``task``: "coco-2d" (17 joints), "mpii-2d" (16) or "h36m-3d" (18, the
    official 3D joint set); ``input_hw`` (H, W) px; ``sha256`` full or a prefix, None where unknown;
    ``size_mb`` None where unknown; ``layout`` "official" | "mmpose" (models.checkpoint converts)."""

    name: str
    task: str
    layout: str
    backbone: str
    input_hw: tuple[int, int]
    file_name: str
    url: str
    accuracy: str
    accuracy_source: str
    licence: str
    drive_id: str | None = None
    sha256: str | None = None
    size_mb: float | None = None

    @property
    def dims(self) -> int:
        return 3 if self.task.endswith("3d") else 2


def _drive(name, task, backbone, input_hw, file_name, drive_id, accuracy, source) -> ZooEntry:
    return ZooEntry(name, task, "official", backbone, input_hw, file_name,
                    f"https://drive.google.com/file/d/{drive_id}", accuracy, source,
                    f"official release ({OFFICIAL_REPO})", drive_id=drive_id)


def _mmpose(name, task, backbone, input_hw, url, accuracy) -> ZooEntry:
    source = "mmpose model zoo, " + ("MPII val" if task == "mpii-2d" else "COCO val2017, det. boxes")
    return ZooEntry(name, task, "mmpose", backbone, input_hw, url.rsplit("/", 1)[1], url, accuracy, source,
                    MMPOSE_LICENCE, sha256=OPENMMLAB_HASH.search(url).group(1))


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    _drive("rle-r50-coco", "coco-2d", "resnet50", (256, 192), "coco-laplace-rle.pth",
           "1YBHqNKkxIVv8CqgDxkezC-4vyKpx-zXK", "71.3 AP (det. boxes; 72.2 GT boxes)", "official issues #3, #38"),
    _drive("rle-r50-h36m", "h36m-3d", "resnet50", (256, 256), "h36m-laplace-rle.pth",
           "1v2ZhembnFyJ_FXGHEOCzGaM-tAVFMy7A", "MPJPE 48.6 / PA-MPJPE 38.5 mm (protocol 2)",
           "paper, as commonly cited"),
    _mmpose("mmpose-rle-r50-coco", "coco-2d", "resnet50", (256, 192),
            MMPOSE_V1 + "td-reg_res50_rle-8xb64-210e_coco-256x192-d37efd64_20220913.pth", "0.706 AP"),
    _mmpose("mmpose-rle-r50-pretrained-coco", "coco-2d", "resnet50", (256, 192),
            MMPOSE_V1 + "td-reg_res50_rle-pretrained-8xb64-210e_coco-256x192-2cb494ee_20220913.pth", "0.719 AP"),
    _mmpose("mmpose-rle-r101-coco", "coco-2d", "resnet101", (256, 192),
            MMPOSE_DEEPPOSE + "deeppose_res101_coco_256x192_rle-16c3d461_20220615.pth", "0.722 AP"),
    _mmpose("mmpose-rle-r152-coco", "coco-2d", "resnet152", (256, 192),
            MMPOSE_DEEPPOSE + "deeppose_res152_coco_256x192_rle-c05bdccf_20220615.pth", "0.731 AP"),
    _mmpose("mmpose-rle-r152-coco-384", "coco-2d", "resnet152", (384, 288),
            MMPOSE_DEEPPOSE + "deeppose_res152_coco_384x288_rle-b77c4c37_20220624.pth", "0.749 AP"),
    _mmpose("mmpose-rle-mobilenetv2-coco", "coco-2d", "mobilenetv2", (256, 192),
            MMPOSE_V1 + "td-reg_mobilenetv2_rle-pretrained-8xb64-210e_coco-256x192-39b73bd5_20220922.pth",
            "0.593 AP"),
    _mmpose("mmpose-rle-r50-mpii", "mpii-2d", "resnet50", (256, 256),
            MMPOSE_DEEPPOSE + "deeppose_res50_mpii_256x256_rle-5f92a619_20220504.pth", "PCKh@0.5 0.861"),
)}


def offline() -> bool:
    """True when ``$RLE_POSE_OFFLINE`` is set to anything but "", "0" or "false" (``files.downloads_off``)."""
    return downloads_off()


def names(dims: int | None = None) -> list[str]:
    """Zoo names in table order, only ``dims``-D ones when given."""
    return [n for n, e in ZOO.items() if dims is None or e.dims == dims]


def cache_path(entry: ZooEntry, cache_dir: Path | None = None) -> Path:
    """Where ``entry``'s file lives once fetched (its own file name, under ``checkpoints/``)."""
    return (cache_dir or default_cache_dir()) / "checkpoints" / entry.file_name


def is_cached(name: str) -> bool:
    return cache_path(ZOO[name]).is_file()


def lookup(spec: str, dims: int | None = None, option: str = "checkpoint") -> ZooEntry | None:
    """The zoo entry named ``spec`` (None for a path or URL); a name of the wrong task is a
    ``ZooError`` naming ``option``. Nothing is downloaded."""
    entry = ZOO.get(str(spec))
    if entry is not None and dims is not None and entry.dims != dims:
        fits = ", ".join(names(dims))
        raise ZooError(f"{option} {spec}: a {entry.dims}D model ({entry.task}); this needs a {dims}D one: {fits}")
    return entry


def resolve_checkpoint(spec: str | os.PathLike, dims: int | None = None, option: str = "checkpoint",
                       progress: bool = True, report=None) -> Path:
    """A local checkpoint file for ``spec``: a path as it is (existing or not: the loader reports a
    missing file), a zoo name or an http(s) URL fetched once into the cache
    (``report(done_bytes, total_bytes)`` follows the download).

    Raises ``ZooError`` (one line) for an unknown name (listing the names), a name of the wrong
    ``dims``, or a failed download (naming the URL and where to put the file by hand).
    """
    text = str(spec)
    entry = lookup(text, dims, option)
    if entry is None and Path(text).is_file():
        return Path(text)
    if entry is None and re.match(r"https?://", text):
        hashed = OPENMMLAB_HASH.search(text)
        name = text.rsplit("/", 1)[1].split("?")[0] or "checkpoint.pth"
        entry = ZooEntry(name, "unknown", "unknown", "", (0, 0), name, text, "", "", "",
                         sha256=hashed.group(1) if hashed else None)
    if entry is None:
        if any(sep in text for sep in ("/", os.sep)) or Path(text).suffix:
            return Path(text)                      # a path: the loader says "no such checkpoint file"
        raise ZooError(f"{option} {text}: neither a file nor a known model; known: {', '.join(ZOO)}")
    return fetch(entry, progress, report)


def fetch(entry: ZooEntry, progress: bool = True, report=None) -> Path:
    """``entry``'s cached file, downloading it first if needed (see the module docstring)."""
    dest = cache_path(entry)
    if dest.is_file():
        return dest
    try:
        return download_file(entry.url, dest, entry.sha256, progress, drive_id=entry.drive_id,
                             check=_loads, report=report)
    except DownloadError as err:
        raise ZooError(f"{entry.name}: {err}") from None


def _loads(path: Path) -> None:
    """A fresh download must load with ``torch.load(weights_only=True)``: a truncated or foreign
    file (a Drive error page, a cut connection) is a ``DownloadError`` and is not kept."""
    import torch
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign files
        raise DownloadError(f"the downloaded file is not a loadable checkpoint ({type(err).__name__}); "
                            "it was not kept: run again to download it again") from None


def format_table() -> str:
    """The zoo as a text table: name, task, input, accuracy (source), size, sha256 known, cached."""
    rows = [("name", "task", "input HxW", "accuracy (source)", "size", "sha256", "cached")]
    for entry in ZOO.values():
        size = f"{entry.size_mb:.0f} MB" if entry.size_mb else "unknown"
        rows.append((entry.name, entry.task, f"{entry.input_hw[0]}x{entry.input_hw[1]}",
                     f"{entry.accuracy} ({entry.accuracy_source})", size,
                     f"{entry.sha256[:8]}..." if entry.sha256 else "unknown (checked by loading)",
                     "yes" if is_cached(entry.name) else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + [f"cache: {default_cache_dir() / 'checkpoints'}"])
