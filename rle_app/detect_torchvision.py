"""COCO person detectors from torchvision's detection zoo (``torchvision.models.detection``).

Weights come from torchvision's own weights enums (``weights.url``, e.g.
``https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth``): fetched
once with ``torch.hub.load_state_dict_from_url(check_hash=True)`` into the torch hub cache
(``torch.hub.get_dir()/checkpoints/FILE``; the hex after the last ``-`` of FILE is the prefix of
its sha256, which torch checks before the file is moved into place). Later runs read that file and
need no network. Nothing is built or loaded at import or construction: the first call does it.

The model's own transform resizes the image (SSDlite: to 320x320; Faster R-CNN: shorter side to
``min_size``) and maps its boxes back to input pixels; this file keeps COCO label 1 (person)
above ``min_score`` and merges overlapping person boxes (``nms_iou``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from models.files import downloads_off, host_reachable
from rle_app.detections import Detections, DetectorUnavailable
from rle_app.tracking import nms_xyxy

COCO_PERSON_LABEL = 1          # torchvision's 91-entry COCO category list: 0 background, 1 person
REACH_TIMEOUT_S = 3.0          # one TCP connect before a download, so offline is known at once


@dataclass(frozen=True)
class TorchvisionArch:
    """One torchvision detection model: builder and weights enum names (``torchvision.models.
    detection``), whether its pretrained build freezes the backbone's batch norms (which changes the
    state-dict keys), its COCO val2017 box mAP as torchvision documents it, and the name of the
    builder option holding the model's own score threshold."""

    builder: str
    weights_enum: str
    frozen_bn: bool
    coco_box_map: float
    score_option: str = "box_score_thresh"   # the builder's option for the model's own score cut


TORCHVISION_ARCHS = {
    "ssdlite320_mobilenet_v3_large": TorchvisionArch(
        "ssdlite320_mobilenet_v3_large", "SSDLite320_MobileNet_V3_Large_Weights", False, 21.3, "score_thresh"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": TorchvisionArch(
        "fasterrcnn_mobilenet_v3_large_320_fpn", "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights", True, 22.8),
    "fasterrcnn_mobilenet_v3_large_fpn": TorchvisionArch(
        "fasterrcnn_mobilenet_v3_large_fpn", "FasterRCNN_MobileNet_V3_Large_FPN_Weights", True, 32.8),
    "fasterrcnn_resnet50_fpn_v2": TorchvisionArch(
        "fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights", False, 46.7),
}
# Picked by bench/bench_detect.py (ms per 640x480 frame on 2 CPU cores; table in the README).
DEFAULT_ARCH = "ssdlite320_mobilenet_v3_large"


def _arch(arch: str) -> TorchvisionArch:
    if arch not in TORCHVISION_ARCHS:
        raise ValueError(f"torchvision detector arch {arch!r} unknown; choose one of {', '.join(TORCHVISION_ARCHS)}")
    return TORCHVISION_ARCHS[arch]


def weights_url(arch: str) -> str:
    """URL of ``arch``'s COCO weights, from torchvision's weights enum (``COCO_V1``)."""
    from torchvision.models import detection

    return getattr(detection, _arch(arch).weights_enum).COCO_V1.url


def weights_cache_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps ``url``: hub dir / checkpoints / file name."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path)


def _how(url: str, path: Path) -> str:
    return f"put {url} at {path} (later runs need no network), or use --detector mediapipe, hog or full-frame"


def fetch_coco_weights(url: str, download: bool = True) -> Path:
    """Path of the weights file at ``url`` in the torch hub cache, downloaded once if missing
    (``torch.hub.load_state_dict_from_url``, ``check_hash=True``: the file's sha256 must start with
    the hex after the last ``-`` of its name, else it is refused and nothing is kept). A quick TCP
    connect first, so offline fails at once. Raises ``DetectorUnavailable`` (one line: the URL and
    the cache path to put the file at) when the file cannot be had."""
    import torch

    path = weights_cache_path(url)
    if path.is_file():
        return path
    if not download or downloads_off():
        unreachable = "downloads are off (--no-download or $RLE_POSE_OFFLINE)"
    else:
        unreachable = host_reachable(url, REACH_TIMEOUT_S)
    if unreachable:
        raise DetectorUnavailable(f"torchvision: {path} is missing and {unreachable}; {_how(url, path)}")
    try:
        torch.hub.load_state_dict_from_url(url, model_dir=str(path.parent), map_location="cpu",
                                           progress=False, check_hash=True, weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:   # URLError is an OSError; a bad hash a RuntimeError
        msg = str(err).splitlines()[0] if str(err) else ""
        raise DetectorUnavailable(f"torchvision: download of {url} failed ({type(err).__name__}: {msg}); "
                                  f"{_how(url, path)}") from None
    return path


def load_coco_weights(url: str, download: bool = True) -> dict:
    """The state dict at ``url`` (see ``fetch_coco_weights``); one-line ``DetectorUnavailable``."""
    import torch

    path = fetch_coco_weights(url, download)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise DetectorUnavailable(f"torchvision: cannot read {path} ({type(err).__name__}); delete it "
                                  f"and retry, or {_how(url, path)}") from None


def build_architecture(arch: str, **model_options):
    """``arch`` with random weights, laid out as torchvision's pretrained build (91 COCO classes, no
    backbone download; batch norms frozen where the pretrained build freezes them). Eval mode."""
    import torch
    from torchvision.models import detection
    from torchvision.ops.misc import FrozenBatchNorm2d

    spec = _arch(arch)
    model = getattr(detection, spec.builder)(weights=None, weights_backbone=None, num_classes=91, **model_options)
    if spec.frozen_bn:
        for parent in list(model.modules()):
            for child_name, child in parent.named_children():
                if isinstance(child, torch.nn.BatchNorm2d):
                    frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                    for key in ("weight", "bias", "running_mean", "running_var"):
                        getattr(frozen, key).copy_(getattr(child, key).detach())
                    setattr(parent, child_name, frozen)
    return model.eval()


class TorchvisionDetector:
    """A torchvision COCO detector keeping people only.

    Args:
        arch: a ``TORCHVISION_ARCHS`` key.
        min_score: person boxes scoring below it are dropped (the model's own softmax score, [0, 1]).
        nms_iou: IoU above which overlapping person boxes are merged (the best score kept).
        weights_url: where the COCO weights come from; None = torchvision's URL for ``arch``.
        download: whether a missing weights file may be downloaded.
        pretrained: False builds random weights (benchmarks and tests only: the boxes mean nothing).
        model_options: passed to torchvision's builder (e.g. ``min_size`` for Faster R-CNN). The
            model's own score threshold defaults to ``min_score``: boxes below it are never kept,
            so its per-class NMS need not see them (SSDlite's default, 0.001, passes thousands).
    """

    name = "torchvision"

    def __init__(self, arch: str = DEFAULT_ARCH, min_score: float = 0.5, nms_iou: float = 0.6,
                 weights_url: str | None = None, download: bool = True, pretrained: bool = True,
                 **model_options):
        _arch(arch)
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"torchvision min_score must be in [0, 1], got {min_score}")
        self.arch, self.min_score, self.nms_iou = arch, min_score, nms_iou
        self.weights_url, self.download, self.pretrained = weights_url, download, pretrained
        self.model_options = {_arch(arch).score_option: min_score, **model_options}
        self.model = None

    def load(self):
        """Build the model and load its weights (done by the first call); returns the model."""
        if self.model is None:
            model = build_architecture(self.arch, **self.model_options)
            if self.pretrained:
                state = load_coco_weights(self.weights_url or weights_url(self.arch), self.download)
                model.load_state_dict(state)
            self.model = model
        return self.model

    def __call__(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> Detections:
        import torch

        model = self.load()
        h, w = image_rgb.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(image_rgb, np.uint8)).permute(2, 0, 1).float().div_(255.0)
        with torch.inference_mode():
            out = model([x])[0]
        labels, scores = out["labels"].numpy(), out["scores"].numpy().astype(np.float64)
        keep = (labels == COCO_PERSON_LABEL) & (scores >= self.min_score)
        boxes = np.clip(out["boxes"].numpy().astype(np.float64)[keep], 0.0, [w, h, w, h])
        scores = scores[keep]
        keep = nms_xyxy(boxes, scores, self.nms_iou)
        return Detections(boxes[keep].astype(np.float32).reshape(-1, 4), scores[keep].astype(np.float32))
