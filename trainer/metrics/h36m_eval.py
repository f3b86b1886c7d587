"""Human3.6M evaluation: camera geometry, MPJPE, PA-MPJPE, per-action summary (protocol 2).

Frames: ``*_world`` (mm, world), ``*_cam`` (mm, camera: ``X_cam = R @ (X_world - t)``), ``*_px``
(image pixels). Both prediction and ground truth are made root-relative (Pelvis, index 0) and the
first 17 joints are scored (Thorax, the 18th, excluded), as the official RLE ``H36m.evaluate``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from collections.abc import Sequence

import numpy as np

H36M_EVAL_JOINTS = 17
H36M_ROOT = 0

H36M_ACTION_NAMES: dict[int, str] = {
    2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning", 7: "Posing",
    8: "Purchases", 9: "Sitting", 10: "SittingDown", 11: "Smoking", 12: "Photo", 13: "Waiting",
    14: "Walking", 15: "WalkDog", 16: "WalkTogether",
}

_FILE_NAME = re.compile(r"s_(\d+)_act_(\d+)_subact_(\d+)_ca_(\d+)")


def parse_h36m_file_name(name: str) -> tuple[int, int, int, int]:
    """(subject, action, subaction, camera) from e.g. ``s_09_act_02_subact_01_ca_01/...jpg``."""
    match = _FILE_NAME.search(name)
    if match is None:
        raise ValueError(f"{name}: not a Human3.6M file name (expected s_SS_act_AA_subact_BB_ca_CC)")
    subject, action, subaction, camera = (int(g) for g in match.groups())
    return subject, action, subaction, camera


def mpjpe(pred: np.ndarray, gt: np.ndarray, root: int = H36M_ROOT) -> np.ndarray:
    """Per-sample MPJPE (N,) in the inputs' unit (mm): mean joint distance after subtracting the root.

    Args:
        pred, gt: (N, K, 3) joints, camera frame; pass the joints to score (17 for protocol 2).
    """
    pred, gt = _check_pair(pred, gt, "mpjpe")
    pred_rel = pred - pred[:, root:root + 1]
    gt_rel = gt - gt[:, root:root + 1]
    return np.linalg.norm(pred_rel - gt_rel, axis=-1).mean(axis=1)


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-align ``pred`` to ``gt`` (rotation, uniform scale, translation); (K,3) or (N,K,3).

    Umeyama/Kabsch as the official ``compute_similarity_transform``: ``H = X1ᵀ X2`` of the centred
    points, ``R = V Z Uᵀ`` with ``Z = diag(1, 1, sign det(V Uᵀ))`` so that a mirror image is never
    "aligned" by a reflection, scale ``trace(R H) / |X1|²``. A prediction collapsed to one point
    (zero spread) is mapped to the ground-truth centroid.
    """
    single = np.ndim(pred) == 2
    if single:
        pred, gt = np.asarray(pred)[None], np.asarray(gt)[None]
    pred, gt = _check_pair(pred, gt, "procrustes_align")
    mu_pred, mu_gt = pred.mean(axis=1, keepdims=True), gt.mean(axis=1, keepdims=True)
    x1, x2 = pred - mu_pred, gt - mu_gt
    var1 = np.sum(x1 ** 2, axis=(1, 2))
    h = np.einsum("nki,nkj->nij", x1, x2)  # (N, 3, 3)
    u, _, vh = np.linalg.svd(h)
    v, ut = np.swapaxes(vh, -1, -2), np.swapaxes(u, -1, -2)
    z = np.tile(np.eye(3), (len(pred), 1, 1))
    z[:, 2, 2] = np.where(np.linalg.det(v @ ut) < 0, -1.0, 1.0)
    R = v @ z @ ut
    trace = np.einsum("nii->n", R @ h)
    scale = np.divide(trace, var1, out=np.zeros_like(var1), where=var1 > 0)
    aligned = scale[:, None, None] * (x1 @ np.swapaxes(R, -1, -2)) + mu_gt
    return aligned[0] if single else aligned


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-sample PA-MPJPE (N,): mean joint distance after ``procrustes_align`` of (N, K, 3) inputs."""
    pred, gt = _check_pair(pred, gt, "pa_mpjpe")
    return np.linalg.norm(procrustes_align(pred, gt) - gt, axis=-1).mean(axis=1)


def _check_pair(pred, gt, where: str) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim != 3 or pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"{where}: expected pred and gt of the same shape (N, K, 3), "
                         f"got {pred.shape} and {gt.shape}")
    return pred, gt


@dataclass(frozen=True)
class H36MMetrics:
    """Protocol-2 summary in mm. ``per_action``: action name -> (mpjpe, pa_mpjpe, count)."""

    mpjpe: float
    pa_mpjpe: float
    num_samples: int
    per_action: dict[str, tuple[float, float, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: ``mpjpe_mm``, ``pa_mpjpe_mm``, ``num_samples``, ``per_action`` {name: {...}}."""
        return {"mpjpe_mm": self.mpjpe, "pa_mpjpe_mm": self.pa_mpjpe, "num_samples": self.num_samples,
                "per_action": {name: {"mpjpe_mm": m, "pa_mpjpe_mm": p, "count": n}
                               for name, (m, p, n) in self.per_action.items()}}

    def format_table(self) -> str:
        """Per-action rows then an ``All`` row: action, MPJPE, PA-MPJPE (mm), sample count."""
        lines = [f"{'action':<14}{'MPJPE':>9}{'PA-MPJPE':>10}{'count':>8}"]
        rows = list(self.per_action.items()) + [("All", (self.mpjpe, self.pa_mpjpe, self.num_samples))]
        lines += [f"{name:<14}{m:9.2f}{p:10.2f}{n:8d}" for name, (m, p, n) in rows]
        return "\n".join(lines)


def action_names(actions: Sequence[int | str] | np.ndarray) -> list[str]:
    """Action ids (2..16) or names -> names (``H36M_ACTION_NAMES``); an unknown id is an error."""
    names = []
    for action in np.asarray(actions).reshape(-1).tolist():
        if isinstance(action, str):
            names.append(action)
        elif int(action) in H36M_ACTION_NAMES:
            names.append(H36M_ACTION_NAMES[int(action)])
        else:
            raise ValueError(f"summarize_h36m: unknown Human3.6M action id {action} (expected 2..16)")
    return names


def summarize_h36m(pred_cam: np.ndarray, gt_cam: np.ndarray, actions: Sequence[int | str] | np.ndarray,
                   num_joints: int = H36M_EVAL_JOINTS, root: int = H36M_ROOT) -> H36MMetrics:
    """MPJPE and PA-MPJPE over all samples and per action.

    Args:
        pred_cam, gt_cam: (N, K, 3) camera-frame joints in mm, K >= ``num_joints``; the first
            ``num_joints`` (17: Thorax excluded) are scored, root-relative to joint ``root``.
        actions: (N,) action ids 2..16 or action names.
    Returns:
        H36MMetrics; means are over samples (each sample weighs the same, as the official code).
    """
    pred_cam, gt_cam = _check_pair(pred_cam, gt_cam, "summarize_h36m")
    if pred_cam.shape[1] < num_joints or len(pred_cam) == 0:
        raise ValueError(f"summarize_h36m: need N > 0 samples of >= {num_joints} joints, "
                         f"got {pred_cam.shape}")
    names = np.asarray(action_names(actions), dtype=object)
    if len(names) != len(pred_cam):
        raise ValueError(f"summarize_h36m: {len(names)} actions for {len(pred_cam)} samples")
    pred_rel = (pred_cam - pred_cam[:, root:root + 1])[:, :num_joints]
    gt_rel = (gt_cam - gt_cam[:, root:root + 1])[:, :num_joints]
    errors = mpjpe(pred_rel, gt_rel, root=root)
    errors_pa = pa_mpjpe(pred_rel, gt_rel)
    order = [n for n in H36M_ACTION_NAMES.values() if n in set(names)]
    order += sorted(set(names) - set(order))
    per_action = {name: (float(errors[names == name].mean()), float(errors_pa[names == name].mean()),
                         int(np.sum(names == name))) for name in order}
    return H36MMetrics(mpjpe=float(errors.mean()), pa_mpjpe=float(errors_pa.mean()),
                       num_samples=len(errors), per_action=per_action)
