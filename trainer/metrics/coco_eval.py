"""COCO keypoint evaluation: OKS, OKS-NMS, instance scores, results files and pycocotools AP.

All keypoints are in original-image pixels (``*_px``). OKS follows pycocotools'
``COCOeval.computeOks`` (pycocotools 2.0.x) term for term:
``e = (dx² + dy²) / (2σ)² / (area + spacing(1)) / 2``, averaged as ``exp(-e)`` over the ground-truth
joints with visibility ``v > 0``. The post-processing (instance score, OKS-NMS) follows the official
RLE code (``rlepose/trainer.py::validate``, ``rlepose/utils/nms.py``).
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from models.files import write_json_atomic
from models.skeleton import COCO_OKS_SIGMAS

_EPS = np.spacing(1)  # pycocotools adds this to the area


def oks_matrix(preds_px: np.ndarray, gts_px: np.ndarray, areas: np.ndarray,
               sigmas: np.ndarray = COCO_OKS_SIGMAS,
               gt_boxes_xywh: np.ndarray | None = None) -> np.ndarray:
    """OKS between every prediction and every ground truth, as pycocotools computes it.

    Args:
        preds_px: (N, K, 2) or (N, K, 3) predicted keypoints, image pixels (a third column is ignored).
        gts_px: (M, K, 3) ground-truth keypoints with visibility v; only joints with v > 0 count.
        areas: (M,) ground-truth areas in pixels² (COCO ``area``, the segment area).
        sigmas: (K,) per-keypoint OKS constants.
        gt_boxes_xywh: (M, 4) ground-truth boxes; needed only for a ground truth without any visible
            joint, where pycocotools measures the distance to its box doubled in size.
    Returns:
        (N, M) float64 OKS in [0, 1].
    """
    preds_px = np.asarray(preds_px, dtype=np.float64)[..., :2]
    gts_px = np.asarray(gts_px, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    if gts_px.ndim != 3 or gts_px.shape[-1] != 3 or preds_px.shape[1:] != (gts_px.shape[1], 2):
        raise ValueError(f"oks_matrix: expected preds (N,K,2) and gts (M,K,3), "
                         f"got {preds_px.shape} and {gts_px.shape}")
    visible = gts_px[..., 2] > 0  # (M, K)
    dx = preds_px[:, None, :, 0] - gts_px[None, :, :, 0]  # (N, M, K)
    dy = preds_px[:, None, :, 1] - gts_px[None, :, :, 1]
    empty = ~visible.any(axis=1)
    if empty.any():
        dx, dy = _box_distances(preds_px, gts_px, gt_boxes_xywh, empty, dx, dy)
    e = (dx ** 2 + dy ** 2) / variances / (areas[None, :, None] + _EPS) / 2
    weight = np.where(empty[:, None], True, visible)[None]  # all K joints for an empty ground truth
    return np.sum(np.exp(-e) * weight, axis=2) / weight.sum(axis=2)


def _box_distances(preds_px, gts_px, gt_boxes_xywh, empty, dx, dy):
    """pycocotools' fallback for ground truths without visible joints: distance outside 2x box."""
    if gt_boxes_xywh is None:
        raise ValueError("oks_matrix: a ground truth has no visible keypoint; pass gt_boxes_xywh")
    boxes = np.asarray(gt_boxes_xywh, dtype=np.float64).reshape(-1, 4)
    x0, x1 = boxes[:, 0] - boxes[:, 2], boxes[:, 0] + boxes[:, 2] * 2
    y0, y1 = boxes[:, 1] - boxes[:, 3], boxes[:, 1] + boxes[:, 3] * 2
    xd, yd = preds_px[:, None, :, 0], preds_px[:, None, :, 1]  # (N, 1, K)
    out_x = np.maximum(0, x0[None, :, None] - xd) + np.maximum(0, xd - x1[None, :, None])
    out_y = np.maximum(0, y0[None, :, None] - yd) + np.maximum(0, yd - y1[None, :, None])
    mask = empty[None, :, None]
    return np.where(mask, out_x, dx), np.where(mask, out_y, dy)


def oks(pred_px: np.ndarray, gt_px: np.ndarray, area: float, sigmas: np.ndarray = COCO_OKS_SIGMAS,
        gt_box_xywh: Sequence[float] | None = None) -> float:
    """OKS of one prediction (K, 2|3) against one ground truth (K, 3, with visibility); see oks_matrix."""
    boxes = None if gt_box_xywh is None else np.asarray(gt_box_xywh, dtype=np.float64)[None]
    return float(oks_matrix(np.asarray(pred_px)[None], np.asarray(gt_px)[None], np.array([area]),
                            sigmas, boxes)[0, 0])


def oks_nms(keypoints_px: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float = 0.9,
            sigmas: np.ndarray = COCO_OKS_SIGMAS) -> np.ndarray:
    """Hard OKS-NMS over the detections of ONE image, as the official RLE ``oks_nms``.

    Detections are visited by descending score (stable for ties; the official ``argsort()[::-1]``
    breaks exact ties the other way). Each kept one suppresses every later one whose OKS with it
    exceeds ``threshold``; the OKS uses all K joints and, as in the official ``oks_iou``, the mean of
    the two areas ``(a_kept + a_other) / 2`` (the reference's "area of the enlarged crop box").

    Args:
        keypoints_px: (N, K, 2) keypoints, image pixels. scores: (N,) instance scores.
        areas: (N,) pixels², the area of each detection's enlarged crop box.
    Returns:
        (n_kept,) int64 indices into the inputs, in the order they were kept (best first).
    """
    keypoints_px = np.asarray(keypoints_px, dtype=np.float64)[..., :2]
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(i)
        d2 = np.sum((keypoints_px[rest] - keypoints_px[i]) ** 2, axis=-1)  # (R, K)
        mean_area = (areas[i] + areas[rest])[:, None] / 2
        overlap = np.mean(np.exp(-(d2 / variances / (mean_area + _EPS) / 2)), axis=1)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def oks_nms_by_image(image_ids: np.ndarray, keypoints_px: np.ndarray, scores: np.ndarray,
                     areas: np.ndarray, threshold: float = 0.9,
                     sigmas: np.ndarray = COCO_OKS_SIGMAS) -> np.ndarray:
    """``oks_nms`` applied separately to each image's detections; returns sorted kept indices (n,)."""
    image_ids = np.asarray(image_ids).reshape(-1)
    keypoints_px, scores, areas = (np.asarray(a) for a in (keypoints_px, scores, areas))
    kept = [np.flatnonzero(image_ids == img)[oks_nms(keypoints_px[image_ids == img],
                                                     scores[image_ids == img],
                                                     areas[image_ids == img], threshold, sigmas)]
            for img in np.unique(image_ids)]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def instance_score(keypoint_conf: np.ndarray, box_scores: np.ndarray | None = None) -> np.ndarray:
    """Instance score (N,): box score + mean + max of the (N, K) keypoint confidences.

    With ``box_scores=None`` (ground-truth boxes) the score is mean + max, as the official code.
    """
    keypoint_conf = np.asarray(keypoint_conf, dtype=np.float64)
    score = keypoint_conf.mean(axis=1) + keypoint_conf.max(axis=1)
    return score if box_scores is None else score + np.asarray(box_scores, dtype=np.float64)


def to_coco_results(image_ids: Sequence[int], keypoints_px: np.ndarray, keypoint_conf: np.ndarray,
                    scores: np.ndarray, category_id: int = 1,
                    boxes_xywh: np.ndarray | None = None) -> list[dict]:
    """COCO keypoint results: one dict per instance with ``keypoints`` flat [x, y, conf, ...].

    Args:
        image_ids: (N,) COCO image ids. keypoints_px: (N, K, 2) image pixels.
        keypoint_conf: (N, K) confidences. scores: (N,) instance scores.
        boxes_xywh: optional (N, 4) boxes. If given, every result gets a ``bbox`` and pycocotools
            then takes each result's area from it (only the APm/APl area ranges use that area);
            without it, the area is that of the keypoints' extent.
    """
    flat = np.concatenate([np.asarray(keypoints_px, dtype=np.float64)[..., :2],
                           np.asarray(keypoint_conf, dtype=np.float64)[..., None]], axis=-1)
    flat = flat.reshape(len(flat), -1)
    results = []
    for n, image_id in enumerate(image_ids):
        result = {"image_id": int(image_id), "category_id": int(category_id),
                  "keypoints": [float(v) for v in flat[n]], "score": float(scores[n])}
        if boxes_xywh is not None:
            result["bbox"] = [float(v) for v in boxes_xywh[n]]
        results.append(result)
    return results


_STAT_KEYS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


@dataclass(frozen=True)
class CocoKeypointMetrics:
    """pycocotools keypoint stats[0..9] as fractions (-1 where pycocotools has no ground truth)."""

    ap: float
    ap50: float
    ap75: float
    ap_m: float
    ap_l: float
    ar: float
    ar50: float
    ar75: float
    ar_m: float
    ar_l: float

    @classmethod
    def from_stats(cls, stats: Sequence[float]) -> CocoKeypointMetrics:
        """From ``COCOeval.stats`` (keypoints: AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl)."""
        return cls(*(float(s) for s in stats[:10]))

    def to_dict(self) -> dict[str, float]:
        """``{"AP": ..., "AP50": ..., ..., "ARl": ...}`` in pycocotools' order, fractions."""
        return dict(zip(_STAT_KEYS, asdict(self).values()))

    def format_table(self) -> str:
        """Two aligned lines: the metric names and their values in percent."""
        values = self.to_dict().values()
        header = " ".join(f"{k:>6}" for k in _STAT_KEYS)
        row = " ".join(f"{100 * v:6.1f}" if v >= 0 else f"{'-':>6}" for v in values)
        return f"COCO keypoints (%)\n{header}\n{row}"


def load_coco_gt(gt_json_path: str | os.PathLike):
    """Load a COCO ground-truth json with pycocotools, without its prints."""
    from pycocotools.coco import COCO

    if not Path(gt_json_path).is_file():
        raise FileNotFoundError(f"{gt_json_path}: COCO ground-truth file not found")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(gt_json_path))


def evaluate_coco(gt_json_path, results: list[dict], image_ids: Sequence[int] | None = None,
                  results_path: str | os.PathLike | None = None) -> CocoKeypointMetrics:
    """Keypoint AP/AR of ``results`` with ``COCOeval(..., 'keypoints')``, silenced.

    Args:
        gt_json_path: ground-truth json path, or an already loaded ``pycocotools.coco.COCO``
            (saves reloading val2017 every epoch).
        results: COCO keypoint results (``to_coco_results``); not modified.
        image_ids: evaluate only these images (``params.imgIds``); results on other images are dropped.
        results_path: if given, the (filtered) results are first written there atomically.
    """
    coco_gt = gt_json_path if hasattr(gt_json_path, "loadRes") else load_coco_gt(gt_json_path)
    known = set(coco_gt.getImgIds())
    if image_ids is not None:
        wanted = {int(i) for i in image_ids}
        if not wanted <= known:
            raise ValueError(f"evaluate_coco: {len(wanted - known)} image_ids are not in the ground truth")
        results = [r for r in results if int(r["image_id"]) in wanted]
    if not results:
        raise ValueError("evaluate_coco: no results to evaluate (empty results list)")
    num_values = 3 * len(COCO_OKS_SIGMAS)
    if any(len(r["keypoints"]) != num_values for r in results):
        raise ValueError(f"evaluate_coco: every result needs {num_values} keypoint values "
                         "(x, y, conf per joint)")
    unknown = {int(r["image_id"]) for r in results} - known
    if unknown:
        raise ValueError(f"evaluate_coco: results name {len(unknown)} image ids not in the ground truth, "
                         f"e.g. {min(unknown)}")
    if results_path is not None:
        write_json_atomic(results_path, results)
    return _run_cocoeval(coco_gt, [dict(r) for r in results], image_ids)


def _run_cocoeval(coco_gt, results: list[dict], image_ids) -> CocoKeypointMetrics:
    """COCOeval evaluate/accumulate/summarize with stdout captured; ``results`` is consumed."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        coco_eval = COCOeval(coco_gt, coco_dt, "keypoints")
        if image_ids is not None:
            coco_eval.params.imgIds = sorted({int(i) for i in image_ids})
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return CocoKeypointMetrics.from_stats(coco_eval.stats)
