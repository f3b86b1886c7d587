"""ONNX export of a PoseModel, checked against torch, and the cache that makes exporting automatic.

The graph: input ``crops`` (N, 3, H, W) RGB, uint8 (0..255) or float32 in [0, 1] (chosen at
export), N dynamic; the model's normalisation (mean/std) is inside the graph. Outputs ``mu`` and
``sigma`` (N, K, D) in the model's own frame (the normalised crop frame of ``PoseOutput``; for 3D
models depth root-relative as in eval mode). Every export is run once in ONNX Runtime on random
crops and refused unless max |diff| to torch is below ``MAX_ABS_DIFF`` on mu and sigma.

``cached_onnx`` keys a graph by a sha256 of the model itself (config, weights, input dtype,
``EXPORT_VERSION``), written beside the checkpoint as ``<stem>.<sha256[:12]>.onnx`` (or, when that
folder is read-only or unknown, in ``default_cache_dir()/onnx``): a user never exports by hand.

    rle-export rle-r50-coco --out model.onnx
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .build import PoseModel
from .files import CacheNotWritable, atomic_path, default_cache_dir, ensure_writable_dir, file_lock

ONNX_OPSET = 17
EXPORT_VERSION = 1              # bump when the graph's contract changes: old cache entries are not reused
MAX_ABS_DIFF = 1e-4             # the export check, on mu and sigma
INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}


class ExportError(RuntimeError):
    """A model that cannot be exported (an op ONNX cannot express) or whose graph disagrees with
    torch; the message is one line naming the model and what to do."""


@dataclass
class ExportReport:
    """One export: the file, ONNX Runtime vs torch max |diff| on mu and sigma (normalised crop
    units), and the seconds the export and check took."""

    path: Path
    max_diff_mu: float
    max_diff_sigma: float
    seconds: float


class _PoseGraph(nn.Module):
    """What is exported: crops (N, 3, H, W) -> (mu, sigma), each (N, K, D)."""

    def __init__(self, model: PoseModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(crops)
        return out.mu, out.sigma


def random_crops(config, batch: int, input_dtype: str = "uint8", seed: int = 0) -> torch.Tensor:
    """(batch, 3, H, W) random crops of the model's input size, uint8 or float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    crops = torch.from_numpy(rng.integers(0, 256, (batch, 3, *config.input_hw), dtype=np.uint8))
    return crops if input_dtype == "uint8" else crops.float() / 255.0


def _label(model: PoseModel) -> str:
    path = getattr(model, "checkpoint_path", None)
    return str(path) if path is not None else f"model '{model.config.source}' ({model.config.backbone})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def export_onnx(model: PoseModel, path: str | Path, input_dtype: str = "uint8", check: bool = True) -> ExportReport:
    """Export ``model`` (a copy on the CPU in eval mode; ``model`` itself is left as it was) to
    ``path`` atomically, and check the graph against torch on 3 random crops (a batch size other
    than the traced one, so the dynamic batch is exercised). Raises ``ExportError`` (one line)."""
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype {input_dtype!r}: choose one of {', '.join(INPUT_DTYPES)}")
    start = time.perf_counter()
    graph = _PoseGraph(copy.deepcopy(model).cpu().float()).eval()
    path = Path(path)
    with atomic_path(path, fsync=False) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # the TorchScript exporter's deprecation and tracer notes
                torch.onnx.export(graph, (random_crops(model.config, 2, input_dtype),), str(tmp), dynamo=False,
                                  opset_version=ONNX_OPSET, input_names=["crops"], output_names=["mu", "sigma"],
                                  dynamic_axes={"crops": {0: "n"}, "mu": {0: "n"}, "sigma": {0: "n"}})
        except Exception as err:  # the exporter raises many types (unsupported op, tracing errors)
            raise ExportError(f"{_label(model)}: cannot be exported to ONNX ({type(err).__name__}: "
                              f"{_first_line(err)}); run it with --backend torch") from None
        diff_mu, diff_sigma = compare_with_torch(tmp, graph, input_dtype) if check else (float("nan"),) * 2
        if check and not max(diff_mu, diff_sigma) < MAX_ABS_DIFF:
            raise ExportError(f"{_label(model)}: the ONNX graph disagrees with torch (max |diff| mu {diff_mu:.2e}, "
                              f"sigma {diff_sigma:.2e} >= {MAX_ABS_DIFF:g}); run it with --backend torch")
    return ExportReport(path, diff_mu, diff_sigma, time.perf_counter() - start)


def compare_with_torch(onnx_path: str | Path, graph: nn.Module, input_dtype: str, batch: int = 3) -> tuple[float, float]:
    """Max |diff| of (mu, sigma) between ONNX Runtime on ``onnx_path`` and ``graph`` (torch, CPU)
    on ``batch`` random crops (seed 1)."""
    import onnxruntime as ort
    crops = random_crops(graph.model.config, batch, input_dtype, seed=1)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    mu, sigma = session.run(["mu", "sigma"], {"crops": crops.numpy()})
    with torch.no_grad():
        ref_mu, ref_sigma = graph(crops)
    return float(np.abs(mu - ref_mu.numpy()).max()), float(np.abs(sigma - ref_sigma.numpy()).max())


def model_digest(model: PoseModel, input_dtype: str = "uint8") -> str:
    """Hex sha256 of what the graph depends on: config, every state-dict tensor (name, dtype,
    shape, bytes), the input dtype, the opset and ``EXPORT_VERSION``."""
    digest = hashlib.sha256(json.dumps([model.config.to_dict(), input_dtype, ONNX_OPSET, EXPORT_VERSION],
                                       sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def cache_folders(model: PoseModel) -> list[Path]:
    """Where ``cached_onnx`` looks and writes, in order: the checkpoint's folder (when the model
    came from ``load_model``), then ``default_cache_dir()/onnx``."""
    path = getattr(model, "checkpoint_path", None)
    folders = [Path(path).parent] if path is not None else []
    return folders + [default_cache_dir() / "onnx"]


def cached_onnx(model: PoseModel, input_dtype: str = "uint8") -> Path:
    """The exported graph of ``model``: found in a ``cache_folders`` entry as
    ``<stem>.<sha256[:12]>.onnx``, else exported (and checked) into the first writable one, under a
    file lock so two processes export once. Raises ``ExportError`` or ``CacheNotWritable``."""
    path = getattr(model, "checkpoint_path", None)
    name = f"{Path(path).stem if path is not None else 'model'}.{model_digest(model, input_dtype)[:12]}.onnx"
    folders = cache_folders(model)
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    for folder in folders:
        try:
            ensure_writable_dir(folder)
        except CacheNotWritable:
            if folder == folders[-1]:
                raise
            continue
        target = folder / name
        with file_lock(target):
            if not target.is_file():
                export_onnx(model, target, input_dtype)
        return target
    raise AssertionError("unreachable: the last cache folder either works or raises")
