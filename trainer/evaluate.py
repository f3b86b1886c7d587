"""Top-down evaluation over a data loader: one prediction per instance, then the metrics.

The same crop geometry, forward (with optional flip test) and decoding as ``models.Predictor``,
batched over instances from many images. COCO: instance scores, OKS-NMS for detected boxes,
COCO results, pycocotools AP, and the sigma-vs-error calibration table (GT boxes). Human3.6M:
back-projection with the camera intrinsics and the GT root depth, MPJPE / PA-MPJPE per action.
Under torchrun, validation is sharded: each rank predicts its share of the instances (each once,
no padding), ``predict_sharded`` gathers them on rank 0, which alone computes the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from models.build import PoseModel
from models.geometry import pixel_depth_to_camera
from models.predictor import decode, forward_with_flip
from trainer.metrics.calibration import CalibrationReport, calibration_table
from trainer.metrics.coco_eval import (CocoKeypointMetrics, evaluate_coco, instance_score,
                                       oks_nms_by_image, to_coco_results)
from trainer.metrics.h36m_eval import H36MMetrics, summarize_h36m


@dataclass
class LoaderPredictions:
    """Predictions for M instances in image pixels: ``keypoints`` (M, K, D), ``sigma`` (M, K, D),
    ``confidence`` (M, K), ``crop_boxes_xyxy`` (M, 4) the enlarged crop boxes, ``image_ids``,
    ``ann_ids`` (M,) (-1 for detections), ``box_scores`` (M,), ``order`` (M,) the instances'
    indices in the data set."""

    keypoints: np.ndarray
    sigma: np.ndarray
    confidence: np.ndarray
    crop_boxes_xyxy: np.ndarray
    image_ids: np.ndarray
    ann_ids: np.ndarray
    box_scores: np.ndarray
    order: np.ndarray


@torch.no_grad()
def predict_loader(model: PoseModel, loader, device: torch.device, flip: bool,
                   amp_dtype: torch.dtype | None = None) -> LoaderPredictions:
    """Run ``model`` (eval mode) over every batch of ``loader`` (PoseBatch) and decode to pixels."""
    model.eval()
    cfg = model.config
    parts: list[tuple] = []
    for batch in loader:
        if batch is None:
            continue
        images = batch.images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = forward_with_flip(model, images, flip)
        center, size = batch.center_px.numpy(), batch.size_px.numpy()
        boxes = np.concatenate([center - size / 2, center + size / 2], axis=1)
        pred = decode(out, batch.crop_from_image.numpy().astype(np.float64), cfg, boxes)
        parts.append((pred.keypoints, pred.sigma, pred.confidence, boxes, batch.image_ids.numpy(),
                      batch.ann_ids.numpy(), batch.scores.numpy()))
    if not parts:
        raise ValueError("the evaluation data has no instances to predict")
    columns = [np.concatenate(column) for column in zip(*parts)]
    order = np.fromiter(iter(loader.sampler), np.int64)   # evaluation loaders run in sampler order
    if len(order) != len(columns[0]):
        raise ValueError(f"{len(columns[0])} predictions for {len(order)} instances: an evaluation "
                         "loader must neither shuffle nor skip")
    return LoaderPredictions(*columns, order)


def predict_sharded(model, loader, rt, flip: bool) -> LoaderPredictions | None:
    """``predict_loader`` on this rank's shard (``loader`` built for ``rt.rank`` of ``rt.world_size``),
    then gathered on rank 0 in data-set order; other ranks get None. Rank 0's buffers (BatchNorm
    statistics, which DDP ranks update apart after the last step) are copied to every rank first,
    so each rank evaluates the model rank 0 saves. Fails if the shards do not cover each instance
    of ``loader.dataset`` exactly once."""
    if rt.world_size == 1:
        return predict_loader(model, loader, rt.device, flip, rt.amp_dtype)
    for buffer in model.buffers():
        dist.broadcast(buffer, 0)
    preds = predict_loader(model, loader, rt.device, flip, rt.amp_dtype)
    shards = [None] * rt.world_size if rt.rank == 0 else None
    dist.gather_object(preds, shards, dst=0)
    if rt.rank != 0:
        return None
    merged = LoaderPredictions(*(np.concatenate(column) for column in zip(*(vars(s).values() for s in shards))))
    sort = np.argsort(merged.order, kind="stable")
    if not np.array_equal(merged.order[sort], np.arange(len(loader.dataset))):
        raise RuntimeError(f"distributed validation: the {rt.world_size} shards do not cover the "
                           f"{len(loader.dataset)} instances once each")
    return LoaderPredictions(*(column[sort] for column in vars(merged).values()))


def coco_results(preds: LoaderPredictions, detected: bool, nms_threshold: float = 0.9) -> list[dict]:
    """Instance scores (box score + mean + max of keypoint confidence; mean + max for GT boxes),
    OKS-NMS per image for detected boxes, and the COCO keypoint results list."""
    scores = instance_score(preds.confidence, preds.box_scores if detected else None)
    boxes = preds.crop_boxes_xyxy
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = np.arange(len(scores))
    if detected:
        keep = oks_nms_by_image(preds.image_ids, preds.keypoints[..., :2], scores, areas, nms_threshold)
    return to_coco_results(preds.image_ids[keep], preds.keypoints[keep, :, :2],
                           preds.confidence[keep], scores[keep])


def coco_calibration(preds: LoaderPredictions, instances) -> CalibrationReport | None:
    """Sigma vs actual error for visible joints of GT-box predictions (None for detections).

    Both are divided by sqrt(area of the crop box) so that people of all sizes share one scale.
    """
    index = {int(a): i for i, a in enumerate(instances.ann_ids)}
    rows = [index.get(int(a), -1) for a in preds.ann_ids]
    if not rows or min(rows) < 0:
        return None
    gt = instances.joints[rows]
    visible = instances.joints_vis[rows] > 0
    err = np.linalg.norm(preds.keypoints[..., :2] - gt, axis=-1)
    sig = np.linalg.norm(preds.sigma[..., :2], axis=-1) / np.sqrt(2)
    size = np.sqrt(np.prod(preds.crop_boxes_xyxy[:, 2:] - preds.crop_boxes_xyxy[:, :2], axis=1))[:, None]
    return calibration_table((sig / size)[visible], (err / size)[visible], unit="box-normalised")


def evaluate_coco_loader(model, loader, gt_json: str | Path, device: torch.device, flip: bool,
                         detected: bool, results_path: str | Path | None = None,
                         amp_dtype: torch.dtype | None = None) -> tuple[CocoKeypointMetrics, CalibrationReport | None]:
    """Predict every instance of ``loader`` and score the results with pycocotools."""
    preds = predict_loader(model, loader, device, flip, amp_dtype)
    return score_coco(preds, gt_json, detected, loader.dataset.instances, results_path)


def score_coco(preds: LoaderPredictions, gt_json: str | Path, detected: bool, instances,
               results_path: str | Path | None = None) -> tuple[CocoKeypointMetrics, CalibrationReport | None]:
    """COCO keypoint AP of ``preds`` (pycocotools) and, for GT boxes, the calibration table."""
    metrics = evaluate_coco(gt_json, coco_results(preds, detected), results_path=results_path)
    return metrics, None if detected else coco_calibration(preds, instances)


def h36m_camera_joints(keypoints: np.ndarray, root_z_mm: np.ndarray, f: np.ndarray,
                       c: np.ndarray) -> np.ndarray:
    """Back-project 3D-model predictions: ``keypoints`` (M, K, 3) = x, y image px and z mm relative
    to the root (``decode``'s d * depth_range_mm), ``root_z_mm`` (M,) the GT root depth, ``f``,
    ``c`` (M, 2) px -> (M, K, 3) camera mm with Z = z + root_z (the reference's protocol)."""
    depth = keypoints[..., 2] + np.asarray(root_z_mm, np.float64)[:, None]
    return pixel_depth_to_camera(keypoints[..., :2], depth, f, c)


def evaluate_h36m_loader(model, loader, device: torch.device, flip: bool,
                         amp_dtype: torch.dtype | None = None) -> H36MMetrics:
    """MPJPE / PA-MPJPE (mm, 17 joints, root-relative, per action) of every instance of ``loader``
    (a Human3.6M data set: ``loader.dataset.instances`` holds cameras and GT camera joints)."""
    return score_h36m(predict_loader(model, loader, device, flip, amp_dtype), loader.dataset.instances,
                      model.config.root_index)


def score_h36m(preds: LoaderPredictions, inst, root: int) -> H36MMetrics:
    """MPJPE / PA-MPJPE of ``preds`` against ``inst`` (H36MInstances), ``root`` the root joint."""
    index = {int(a): i for i, a in enumerate(inst.ann_ids)}
    rows = np.array([index[int(a)] for a in preds.ann_ids])
    pred_cam = h36m_camera_joints(preds.keypoints.astype(np.float64), inst.joints_cam[rows, root, 2],
                                  inst.f[rows], inst.c[rows])
    return summarize_h36m(pred_cam, inst.joints_cam[rows], inst.actions[rows], root=root)
