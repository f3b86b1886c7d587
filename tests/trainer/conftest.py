"""Shared test data for the trainer's tests: a generated Human3.6M (PoseNet layout) + MPII data set
with a known camera, so 3D targets can be checked against an independent projection."""
from __future__ import annotations

import json
import types

import cv2
import numpy as np
import pytest

R_CAM = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])   # looks along world +y
T_CAM = np.array([0.0, -4500.0, 1000.0])                               # camera centre, mm
F_PX, C_PX, IMAGE_WH = np.array([200.0, 210.0]), np.array([80.0, 62.0]), (160, 120)
TRAIN_FILE = "h36m/annotations/Sample_trainmin_train_Human36M_protocol_2.json"
TEST_FILE = "h36m/annotations/Sample_64_test_Human36M_protocol_2.json"
MPII_NAMES = ["r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
              "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist"]


def project(world: np.ndarray) -> np.ndarray:
    """World (K, 3) mm -> (K, 3): x, y px and camera Z mm, joint by joint."""
    out = []
    for p in world:
        x, y, z = R_CAM @ (p - T_CAM)
        out.append([x / z * F_PX[0] + C_PX[0], y / z * F_PX[1] + C_PX[1], z])
    return np.array(out)


def body(rng: np.random.Generator) -> np.ndarray:
    """17 H36M joints (mm, world): pelvis near (0, 0, 900), others within ~0.9 m of it."""
    offsets = rng.uniform(-300, 300, (17, 3)) * [1, 0.5, 1.5]
    offsets[0] = 0
    return np.array([0.0, 0.0, 900.0]) + rng.uniform(-100, 100, 3) + offsets


def entry(i: int, name: str, world: np.ndarray) -> tuple[dict, dict]:
    px = project(world)[:, :2]
    lo, hi = px.min(0) - 3, px.max(0) + 3
    image = {"id": i, "file_name": f"{name}/{name}_{i:06d}.jpg", "width": IMAGE_WH[0], "height": IMAGE_WH[1],
             "cam_param": {"R": R_CAM.tolist(), "t": T_CAM.tolist(), "f": F_PX.tolist(), "c": C_PX.tolist()}}
    ann = {"id": 100 + i, "image_id": i, "bbox": [*lo.tolist(), *(hi - lo).tolist()],
           "keypoints_world": world.tolist()}
    return image, ann


def write_images(folder, files, rng) -> None:
    for name in files:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 255, (IMAGE_WH[1], IMAGE_WH[0], 3), dtype=np.uint8))


def write_h36m_file(root, rel_path: str, sequences: list[str], seed: int = 0, bodies=None) -> dict:
    """Write one annotation file (one image per sequence name) and its images; returns the dict."""
    rng = np.random.default_rng(seed)
    pairs = [entry(i + 1, s, body(rng) if bodies is None else bodies[i]) for i, s in enumerate(sequences)]
    data = {"images": [p[0] for p in pairs], "annotations": [p[1] for p in pairs]}
    (root / rel_path).parent.mkdir(parents=True, exist_ok=True)
    (root / rel_path).write_text(json.dumps(data))
    write_images(root / "h36m" / "images", [im["file_name"] for im in data["images"]], rng)
    return data


def write_tiny_h36m(root, num: int = 4) -> None:
    """root/h36m (train: S1/S5, test: S9/S11, ``num`` images each) and root/mpii (``num`` people)."""
    train = [f"s_{s:02d}_act_{2 + i % 15:02d}_subact_01_ca_01" for i, s in enumerate([1, 5] * (num // 2))]
    test = [f"s_{s:02d}_act_{2 + i % 15:02d}_subact_01_ca_0{1 + i % 4}" for i, s in enumerate([9, 11] * (num // 2))]
    write_h36m_file(root, TRAIN_FILE, train, seed=1)
    write_h36m_file(root, TEST_FILE, test, seed=2)
    rng = np.random.default_rng(3)
    anns = []
    for i in range(num):
        px = project(body(rng))[:, :2]
        kps = [[*px[j % 17].tolist(), 2 if j != 9 else 0] for j in range(16)]   # head_top unlabelled
        lo, hi = px.min(0) - 3, px.max(0) + 3
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 15,
                     "keypoints": np.ravel(kps).tolist(), "bbox": [*lo, *(hi - lo)], "area": 100.0})
    images = [{"id": i + 1, "file_name": f"{i + 1:05d}.jpg", "width": IMAGE_WH[0], "height": IMAGE_WH[1]}
              for i in range(num)]
    (root / "mpii" / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "mpii" / "annotations" / "annot_mpii.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person", "keypoints": MPII_NAMES}]}))
    write_images(root / "mpii" / "images", [im["file_name"] for im in images], rng)


@pytest.fixture(scope="session")
def h36m_files() -> types.SimpleNamespace:
    """The generated Human3.6M writer above: ``write_h36m_file``, ``write_tiny_h36m``, ``project``,
    ``body``, ``write_images`` and the camera / file-name constants."""
    return types.SimpleNamespace(**{k: v for k, v in globals().items() if not k.startswith("_")})
