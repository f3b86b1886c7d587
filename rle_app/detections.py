"""What every person detector returns, and the one error they raise (shared by the detect_* files).

A detector is any callable ``(image_rgb (H, W, 3) uint8, timestamp_ms) -> Detections`` with a
``name``; ``rle_app.detect`` registers and builds them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class DetectorUnavailable(RuntimeError):
    """A detector cannot run here (missing model file, no network, bad bundle); one-line message."""


@dataclass
class Detections:
    """People found in one image.

    Attributes:
        boxes_xyxy: (N, 4) float32, image pixels (x right, y down), x0 <= x1, y0 <= y1.
        scores: (N,) float32, detector confidence (its own scale; 1 for full-frame).
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.boxes_xyxy)


class PersonDetector(Protocol):
    """RGB uint8 image (H, W, 3) -> ``Detections``. ``timestamp_ms`` matters only to video modes."""

    name: str

    def __call__(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> Detections: ...


