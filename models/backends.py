"""Inference backends: what runs a PoseModel's forward pass for the Predictor and evaluation.

A runner is called like the model (crops (N, 3, H, W) uint8 tensor -> ``PoseOutput``) and has its
``config`` and ``eval()``, so ``forward_with_flip`` and ``trainer.evaluate`` take either.

- ``torch``: the model itself (eager).
- ``onnxruntime``: ``OnnxRuntimeRunner`` on the graph ``models.export.cached_onnx`` exports once
  per model and caches (CPU; CUDA when onnxruntime-gpu provides it).
- ``auto``: on a CPU, both are timed on one crop at load time (after a warm-up, best of
  ``AUTO_REPEATS``) and the faster is kept; on a GPU torch (onnxruntime's CPU wheel has no CUDA).
  A model that does not export falls back to torch under ``auto``.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from .build import PoseModel
from .export import ExportError, cached_onnx, random_crops
from .files import CacheNotWritable
from .pose_model import PoseOutput

BACKENDS = ("auto", "torch", "onnxruntime")


class DeviceError(ValueError):
    """A ``--device`` this machine does not have, or not a device name; the message is one line."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch spells it, checked: a
    non-device name or a cuda device this machine does not have is a one-line ``DeviceError``
    naming ``--device`` (said before any model is loaded)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name}: not a torch device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}); "
                              "use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device
AUTO_REPEATS = 3
log = logging.getLogger(__name__)


class OnnxRuntimeRunner:
    """An exported graph run by ONNX Runtime, called like the model it came from.

    Args:
        path: the ``.onnx`` file (``models.export``'s contract: ``crops`` -> ``mu``, ``sigma``).
        config: the model's PoseModelConfig (decoding and the flip test read it).
        device: cpu, or cuda when onnxruntime has the CUDA provider.
        threads: intra-op threads; default torch's current count (both backends alike).
    """

    def __init__(self, path, config, device: torch.device | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort
        providers, device = ["CPUExecutionProvider"], device or torch.device("cpu")
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ExportError("--backend onnxruntime on cuda: this onnxruntime has no CUDA provider "
                                  "(pip install onnxruntime-gpu), or use --backend torch / --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.path, self.config, self.device = path, config, device
        self.uint8_input = self.session.get_inputs()[0].type == "tensor(uint8)"

    def eval(self) -> OnnxRuntimeRunner:
        return self

    def __call__(self, crops: torch.Tensor) -> PoseOutput:
        """crops (N, 3, H, W) uint8 (or float in [0, 1] for a float graph) -> PoseOutput on crops' device."""
        if crops.dtype != torch.uint8 and self.uint8_input:
            raise ValueError(f"{self.path}: the graph takes uint8 crops, got {crops.dtype}")
        array = crops.detach().cpu().numpy()
        if crops.dtype == torch.uint8 and not self.uint8_input:
            array = array.astype(np.float32) / np.float32(255.0)
        mu, sigma = self.session.run(["mu", "sigma"], {"crops": np.ascontiguousarray(array)})
        return PoseOutput(torch.from_numpy(mu).to(crops.device), torch.from_numpy(sigma).to(crops.device))


def _best_time_s(run, crops: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        run(crops)                                   # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run(crops)
            best = min(best, time.perf_counter() - start)
    return best


def forward_time_s(predictor, repeats: int = AUTO_REPEATS) -> float:
    """Best seconds of a ``Predictor``'s forward pass (its backend) on one random crop, after a warm-up."""
    return _best_time_s(predictor.runner, random_crops(predictor.config, 1).to(predictor.device), repeats)


def make_runner(model: PoseModel, backend: str, device: torch.device):
    """(runner, backend name actually used) for ``backend`` in ``BACKENDS``; ``model`` is already
    on ``device`` in eval mode. Raises ``ValueError`` for an unknown name and ``ExportError`` (one
    line) when ``onnxruntime`` was asked for and the model cannot be exported."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return model, "torch"
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(cached_onnx(model), model.config, device), "onnxruntime"
    try:
        runner = OnnxRuntimeRunner(cached_onnx(model), model.config, device)
    except (ImportError, ExportError, CacheNotWritable, OSError) as err:
        log.warning("--backend auto: using torch (%s)", str(err).splitlines()[0] if str(err) else type(err).__name__)
        return model, "torch"
    crops = random_crops(model.config, 1).to(device)
    t_ort = _best_time_s(runner, crops, AUTO_REPEATS)
    t_torch = _best_time_s(model, crops, AUTO_REPEATS)
    log.info("--backend auto: onnxruntime %.1f ms, torch %.1f ms per crop", t_ort * 1e3, t_torch * 1e3)
    return (runner, "onnxruntime") if t_ort < t_torch else (model, "torch")
