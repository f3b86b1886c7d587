"""Joint sets: names, skeleton edges, left/right flip pairs.

Two sets ship with the project: COCO-17 (2D, the COCO keypoint order) and H36M-18 (3D, the
Human3.6M order of the official RLE code, with Thorax appended as the 18th joint). Indices are
0-based everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JointSet:
    """A named keypoint layout.

    Attributes:
        name: registry key, e.g. ``"coco17"``.
        joints: joint names, length K.
        edges: skeleton edges as (i, j) index pairs, for drawing.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        root: index of the root joint (the pelvis for 3D sets; unused for COCO).
    """

    name: str
    joints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    root: int = 0

    @property
    def num_joints(self) -> int:
        return len(self.joints)


COCO17 = JointSet(
    name="coco17",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    edges=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
        (3, 5), (4, 6),
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    root=0,
)

H36M18 = JointSet(
    name="h36m18",
    joints=(
        "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
        "torso", "neck", "nose", "head", "l_shoulder", "l_elbow", "l_wrist",
        "r_shoulder", "r_elbow", "r_wrist", "thorax",
    ),
    edges=(
        (0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 9),
        (9, 10), (8, 11), (11, 12), (12, 13), (8, 14), (14, 15), (15, 16),
    ),
    flip_pairs=((1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16)),
    root=0,
)

# Per-keypoint OKS constants of the COCO keypoint benchmark (pycocotools' kpt_oks_sigmas).
COCO_OKS_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
     1.07, 1.07, 0.87, 0.87, 0.89, 0.89], dtype=np.float64) / 10.0

# MPII's 16 joints -> H36M-18 (index into MPII's order, -1 = no such MPII joint), as the reference.
MPII_TO_H36M = (6, 2, 1, 0, 3, 4, 5, -1, 8, -1, 9, 13, 14, 15, 12, 11, 10, 7)


def flip_permutation(flip_pairs: tuple[tuple[int, int], ...] | list, num_joints: int) -> np.ndarray:
    """Index array ``perm`` (K,) such that ``x[:, perm]`` swaps every left/right pair."""
    perm = np.arange(num_joints)
    for left, right in flip_pairs:
        perm[left], perm[right] = right, left
    return perm
