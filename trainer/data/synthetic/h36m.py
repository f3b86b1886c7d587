"""Synthetic Human3.6M sequences in the PoseNet annotation layout (``trainer/data/h36m.py``).

Each subject has its own body and four fixed cameras around the capture area (4.5-5.5 m away,
1.2-1.8 m high, f = 1145 px per 1000 px of the image's shorter side, principal point near the image
centre). A sequence (subject, action, subaction) is a smooth motion: joint angles, heading and
position interpolate linearly in time between two poses of the action's kind, over 64 frames
per written test step. World frame: mm, z up, the floor at z = 0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data.synthetic.figures import (H36M_POINTS, BodyShape, Camera, body_points, lerp_pose,
                                            look_at, place_body, sample_pose, sample_shape)
from trainer.data.synthetic.render import encode_jpeg, render_scene

H36M_ACTIONS: dict[int, str] = {
    2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning", 7: "Posing",
    8: "Purchases", 9: "Sitting", 10: "SittingDown", 11: "Smoking", 12: "Photo", 13: "Waiting",
    14: "Walking", 15: "WalkDog", 16: "WalkTogether",
}
ACTION_KINDS: dict[int, str] = {
    2: "arms_up", 3: "standing", 4: "sitting", 5: "arms_up", 6: "standing", 7: "arms_up",
    8: "bending", 9: "sitting", 10: "crouching", 11: "standing", 12: "arms_up", 13: "standing",
    14: "walking", 15: "walking", 16: "walking",
}
# Sequences the official loader drops (all cameras); never generated.
EXCLUDED = {(9, 5, 2), (9, 10, 2), (9, 13, 1)}
_SEQUENCE_FRAMES = 64  # frames over which a sequence moves from its first to its last pose


def subject_cameras(seed: int, subject: int, image_hw: tuple[int, int]) -> list[Camera]:
    """The four cameras (1..4 in order) of one subject, looking at (0, 0, 900) mm."""
    rng = np.random.default_rng([seed, 7, subject])
    height, width = image_hw
    cameras = []
    for k in range(4):
        angle = k * np.pi / 2 + np.pi / 4 + rng.uniform(-0.15, 0.15)
        dist = rng.uniform(4500, 5500)
        eye = [dist * np.cos(angle), dist * np.sin(angle), rng.uniform(1200, 1800)]
        focal = 1.145 * min(image_hw) * (1 + rng.uniform(-0.01, 0.01, 2))
        centre = np.array([width, height]) / 2 + rng.uniform(-0.01, 0.01, 2) * [width, height]
        target = [rng.uniform(-100, 100), rng.uniform(-100, 100), 900.0]
        cameras.append(look_at(eye, target, focal, centre, roll=rng.uniform(-0.02, 0.02)))
    return cameras


def subject_shape(seed: int, subject: int) -> BodyShape:
    """The body of one subject (the same in every sequence)."""
    return sample_shape(np.random.default_rng([seed, 6, subject]))


def sequence_joints(seed: int, subject: int, action: int, subaction: int,
                    frames: np.ndarray) -> np.ndarray:
    """World points (F, P, 3) mm of a sequence at 1-based frame numbers ``frames`` (F,), feet on
    the floor; all points of ``figures.POINT_NAMES`` (the first 17 are the H36M joints)."""
    rng = np.random.default_rng([seed, 8, subject, action, subaction])
    shape, kind = subject_shape(seed, subject), ACTION_KINDS[action]
    pose0, pose1 = sample_pose(rng, kind), sample_pose(rng, kind)
    yaw0 = rng.uniform(0, 2 * np.pi)
    yaw1 = yaw0 + rng.uniform(-0.5, 0.5)
    step = 600.0 if kind == "walking" else 150.0
    pos0 = rng.uniform(-300, 300, 2)
    pos1 = pos0 + rng.uniform(-step, step, 2)
    out = []
    for frame in frames:
        alpha = min((frame - 1) / _SEQUENCE_FRAMES, 1.0)
        points = body_points(shape, lerp_pose(pose0, pose1, alpha))
        anchor = np.append(pos0 + (pos1 - pos0) * alpha, 0.0)
        world = place_body(points, yaw0 + (yaw1 - yaw0) * alpha, 0.0, 0.0, anchor, points[0])
        world[:, 2] -= world[[3, 6, 22, 23], 2].min() - 40.0
        out.append(world)
    return np.stack(out)


def _sequences(seed: int, subjects: tuple[int, ...]):
    """(subject, action, subaction) triples, round-robin over subjects, shuffled per subject."""
    lists = []
    for subject in subjects:
        triples = [(subject, a, s) for a in H36M_ACTIONS for s in (1, 2)
                   if (subject, a, s) not in EXCLUDED]
        order = np.random.default_rng([seed, 9, subject]).permutation(len(triples))
        lists.append([triples[i] for i in order])
    for round_ in range(max(len(t) for t in lists)):
        for triples in lists:
            if round_ < len(triples):
                yield triples[round_]


def _bbox(points_px: np.ndarray, image_hw: tuple[int, int]) -> list[float]:
    """[x, y, w, h] px: the joints' box grown by 20 % (10 % per side), clipped to the image."""
    lo, hi = points_px.min(0), points_px.max(0)
    pad = 0.1 * (hi - lo)
    lo = np.maximum(lo - pad, 0.0)
    hi = np.minimum(hi + pad, [image_hw[1], image_hw[0]])
    return [round(float(v), 2) for v in (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])]


def write_h36m_split(root: Path, subjects: tuple[int, ...], count: int, stride: int,
                     frames_per_seq: int, image_hw: tuple[int, int], seed: int,
                     quality: int) -> dict:
    """Renders ``count`` images to root/images/... (per sequence: camera 1..4, each with
    ``frames_per_seq`` frames numbered 1, 1 + stride, ...) and returns the annotation dict
    {"images": [...], "annotations": [...]} (same order, ids from 1)."""
    images, annotations = [], []
    frames = 1 + stride * np.arange(frames_per_seq)
    for subject, action, subaction in _sequences(seed, subjects):
        world = sequence_joints(seed, subject, action, subaction, frames)
        for cam_id, camera in enumerate(subject_cameras(seed, subject, image_hw), start=1):
            folder = f"s_{subject:02d}_act_{action:02d}_subact_{subaction:02d}_ca_{cam_id:02d}"
            for frame, points in zip(frames, world):
                if len(images) == count:
                    return {"images": images, "annotations": annotations}
                rng = np.random.default_rng([seed, 10, subject, action, subaction, cam_id, frame])
                image, (figure,) = render_scene(rng, image_hw, camera, [(points, subject_shape(seed, subject))])
                name = f"{folder}/{folder}_{frame:06d}.jpg"
                path = root / "images" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_jpeg(image, 0, quality))
                joints = np.round(points[H36M_POINTS], 2)
                images.append({"id": len(images) + 1, "file_name": name, "width": image_hw[1],
                               "height": image_hw[0], "cam_param": camera.to_json()})
                annotations.append({"id": len(annotations) + 1, "image_id": len(images),
                                    "bbox": _bbox(figure.points_px[H36M_POINTS], image_hw),
                                    "keypoints_world": joints.tolist()})
    return {"images": images, "annotations": annotations}
