"""A 3D articulated body and a pinhole camera for the synthetic data sets.

Frames and units:
    body frame   mm, origin at the pelvis, x to the person's right, y forward (where the person
                 faces), z up.
    world frame  mm, z up (the floor is z = 0 where a writer grounds the body).
    camera frame mm, ``X_cam = R @ (X_world - t)``; x right, y down, z along the optical axis.
    pixels       ``x = X/Z * f_x + c_x``, ``y = Y/Z * f_y + c_y`` (the Human3.6M convention;
                 ``Camera`` projects with ``models.geometry``'s pinhole functions).

A body is P = 25 points: the 17 Human3.6M joints (``models.skeleton.H36M18`` order), then the face
and helper points of ``POINT_NAMES``. ``COCO_POINTS`` and ``MPII_POINTS`` pick the COCO-17 and
MPII-16 keypoints from them.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, fields

import numpy as np

from models.geometry import camera_to_pixel, pixel_depth_to_camera, world_to_camera

POINT_NAMES = (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
    "torso", "neck", "nose", "head", "l_shoulder", "l_elbow", "l_wrist",
    "r_shoulder", "r_elbow", "r_wrist",
    "l_eye", "r_eye", "l_ear", "r_ear", "thorax", "l_toe", "r_toe", "head_centre",
)
NUM_POINTS = len(POINT_NAMES)
H36M_POINTS = np.arange(17)
COCO_POINTS = np.array([9, 17, 18, 19, 20, 11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3])
MPII_NAMES = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
              "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
              "l_elbow", "l_wrist")
MPII_POINTS = np.array([3, 2, 1, 4, 5, 6, 0, 21, 8, 10, 16, 15, 14, 11, 12, 13])
FACE_POINTS = np.array([9, 17, 18, 19, 20])  # seen only from the front (their surface normal)

# Unit directions of the face points on the head sphere, head frame (x right, y forward, z up).
_FACE_DIRS = np.array([[0.0, 0.97, -0.25], [-0.38, 0.88, 0.12], [0.38, 0.88, 0.12],
                       [-0.98, 0.12, -0.05], [0.98, 0.12, -0.05]])
_FACE_DIRS /= np.linalg.norm(_FACE_DIRS, axis=1, keepdims=True)


@dataclass(frozen=True)
class BodyShape:
    """Segment lengths and thicknesses of one person, mm (about 1.7 m tall at the defaults)."""

    spine: float = 233.0        # pelvis -> torso
    chest: float = 257.0        # torso -> neck
    head_lift: float = 140.0    # neck -> head sphere centre
    head_radius: float = 100.0
    shoulder_half: float = 160.0
    hip_half: float = 120.0
    upper_arm: float = 280.0
    forearm: float = 250.0
    thigh: float = 450.0
    shin: float = 440.0
    foot: float = 150.0
    arm_radius: float = 45.0
    leg_radius: float = 62.0
    torso_radius: float = 120.0


@dataclass(frozen=True)
class BodyPose:
    """Joint angles, radians. Flexion raises a limb forward; abduction moves it outward."""

    torso_bend: float = 0.0
    torso_lean: float = 0.0
    torso_twist: float = 0.0
    head_yaw: float = 0.0
    head_pitch: float = 0.0     # > 0 looks down
    l_arm_flex: float = 0.0
    l_arm_abd: float = 0.2
    l_elbow: float = 0.2
    r_arm_flex: float = 0.0
    r_arm_abd: float = 0.2
    r_elbow: float = 0.2
    l_hip_flex: float = 0.0
    l_hip_abd: float = 0.05
    l_knee: float = 0.05
    r_hip_flex: float = 0.0
    r_hip_abd: float = 0.05
    r_knee: float = 0.05


# Ranges in degrees; "arm_flex" etc. apply to both sides, drawn independently per side.
_BASE_RANGES = {
    "torso_bend": (-5, 10), "torso_lean": (-6, 6), "torso_twist": (-20, 20),
    "head_yaw": (-50, 50), "head_pitch": (-15, 25), "arm_flex": (-25, 35), "arm_abd": (5, 35),
    "elbow": (0, 50), "hip_flex": (-5, 10), "hip_abd": (0, 12), "knee": (0, 10),
}
POSE_KINDS: dict[str, dict[str, tuple[float, float]]] = {
    "standing": {},
    "walking": {"arm_flex": (-40, 40), "hip_flex": (-25, 35), "knee": (0, 60), "torso_bend": (0, 10)},
    "arms_up": {"arm_flex": (60, 175), "arm_abd": (10, 80), "elbow": (0, 70)},
    "sitting": {"hip_flex": (75, 100), "knee": (70, 110), "torso_bend": (-10, 15),
                "arm_flex": (0, 50), "elbow": (30, 100)},
    "crouching": {"hip_flex": (90, 130), "knee": (100, 140), "torso_bend": (20, 45),
                  "arm_flex": (20, 80), "elbow": (10, 90)},
    "bending": {"torso_bend": (40, 80), "hip_flex": (0, 15), "arm_flex": (30, 100), "elbow": (0, 40)},
}


def sample_shape(rng: np.random.Generator, height_scale: float | None = None) -> BodyShape:
    """A person: every segment of ``BodyShape()`` times U(0.9, 1.1), all times a height scale."""
    scale = rng.uniform(0.92, 1.08) if height_scale is None else height_scale
    base = astuple(BodyShape())
    return BodyShape(*(v * scale * rng.uniform(0.9, 1.1) for v in base))


def sample_pose(rng: np.random.Generator, kind: str) -> BodyPose:
    """Random angles of one pose kind of ``POSE_KINDS`` (both sides drawn independently)."""
    ranges = {**_BASE_RANGES, **POSE_KINDS[kind]}
    values = {}
    for field in fields(BodyPose):
        key = field.name[2:] if field.name[:2] in ("l_", "r_") else field.name
        lo, hi = ranges[key]
        values[field.name] = np.deg2rad(rng.uniform(lo, hi))
    return BodyPose(**values)


def lerp_pose(pose0: BodyPose, pose1: BodyPose, alpha: float) -> BodyPose:
    """Angles interpolated linearly: ``pose0`` at alpha 0, ``pose1`` at alpha 1."""
    return BodyPose(*(a + (b - a) * alpha for a, b in zip(astuple(pose0), astuple(pose1))))


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _limb(root: np.ndarray, frame: np.ndarray, flex: float, abd: float, bend: float,
          len1: float, len2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Middle and end joints (3,) of a two-segment limb hanging from ``root``; also the lower frame.

    ``abd`` is signed (positive moves toward -x); ``bend`` rotates the lower segment about x.
    """
    upper = frame @ rot_y(abd) @ rot_x(flex)
    mid = root + upper @ np.array([0.0, 0.0, -len1])
    lower = upper @ rot_x(bend)
    return mid, mid + lower @ np.array([0.0, 0.0, -len2]), lower


def body_points(shape: BodyShape, pose: BodyPose) -> np.ndarray:
    """The P points of ``POINT_NAMES`` in the body frame, (P, 3) float64 mm, pelvis at the origin."""
    pts = np.zeros((NUM_POINTS, 3))
    spine = rot_y(pose.torso_lean) @ rot_x(-pose.torso_bend)
    chest = spine @ rot_x(-0.3 * pose.torso_bend) @ rot_z(pose.torso_twist)
    pts[7] = spine @ np.array([0.0, 0.0, shape.spine])
    pts[8] = pts[7] + chest @ np.array([0.0, 0.0, shape.chest])
    head = chest @ rot_z(pose.head_yaw) @ rot_x(-pose.head_pitch)
    pts[24] = pts[8] + head @ np.array([0.0, 15.0, shape.head_lift])
    face = pts[24] + shape.head_radius * _FACE_DIRS @ head.T
    pts[[9, 17, 18, 19, 20]] = face
    pts[10] = pts[24] + head @ np.array([0.0, 0.0, 1.15 * shape.head_radius])
    for side, sign, sh, el, wr in (("l", -1.0, 11, 12, 13), ("r", 1.0, 14, 15, 16)):
        pts[sh] = pts[8] + chest @ np.array([sign * shape.shoulder_half, 0.0, -25.0])
        flex, abd, bend = (getattr(pose, f"{side}_{n}") for n in ("arm_flex", "arm_abd", "elbow"))
        pts[el], pts[wr], _ = _limb(pts[sh], chest, flex, -sign * abd, bend,
                                    shape.upper_arm, shape.forearm)
    for side, sign, hip, kn, an, toe in (("l", -1.0, 4, 5, 6, 22), ("r", 1.0, 1, 2, 3, 23)):
        pts[hip] = np.array([sign * shape.hip_half, 0.0, 0.0])
        flex, abd, knee = (getattr(pose, f"{side}_{n}") for n in ("hip_flex", "hip_abd", "knee"))
        pts[kn], pts[an], shin = _limb(pts[hip], np.eye(3), flex, -sign * abd, -knee,
                                       shape.thigh, shape.shin)
        pts[toe] = pts[an] + shin @ np.array([0.0, shape.foot, -40.0])
    pts[21] = 0.5 * (pts[11] + pts[14])
    return pts


def place_body(points_body: np.ndarray, yaw: float, pitch: float, roll: float,
               anchor_world: np.ndarray, anchor_body: np.ndarray) -> np.ndarray:
    """Body-frame points (P, 3) mm -> world (P, 3) mm, rotated ``rot_z(yaw) @ rot_x(pitch) @
    rot_y(roll)`` about ``anchor_body`` (3,), which lands on ``anchor_world`` (3,)."""
    rot = rot_z(yaw) @ rot_x(pitch) @ rot_y(roll)
    return anchor_world + (points_body - anchor_body) @ rot.T


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: rotation ``R`` (3, 3) world -> camera, centre ``t`` (3,) mm (world),
    focal lengths ``f`` (2,) px and principal point ``c`` (2,) px."""

    R: np.ndarray
    t: np.ndarray
    f: np.ndarray
    c: np.ndarray

    def to_cam(self, points_world: np.ndarray) -> np.ndarray:
        """World (N, 3) mm -> camera frame (N, 3) mm (``geometry.world_to_camera``)."""
        return world_to_camera(np.asarray(points_world, np.float64)[None], self.R, self.t)[0]

    def project(self, points_world: np.ndarray) -> np.ndarray:
        """World (N, 3) mm -> pixels (N, 2); the points must lie in front of the camera."""
        return camera_to_pixel(self.to_cam(points_world)[None], self.f, self.c)[0]

    def unproject(self, points_px: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) with camera depth Z (N,) mm -> world (N, 3) mm."""
        cam = pixel_depth_to_camera(np.asarray(points_px, np.float64)[None],
                                    np.asarray(depth_mm, np.float64)[None], self.f, self.c)[0]
        return cam @ self.R + self.t

    def to_json(self) -> dict:
        """The ``cam_param`` entry of a Human3.6M annotation file: R, t, f, c as lists."""
        return {k: np.round(getattr(self, k), 6).tolist() for k in ("R", "t", "f", "c")}


def look_at(eye_world: np.ndarray, target_world: np.ndarray, f: np.ndarray, c: np.ndarray,
            roll: float = 0.0) -> Camera:
    """A camera at ``eye_world`` (3,) mm looking at ``target_world`` (3,) mm, image up ~ world z,
    turned by ``roll`` radians about its optical axis."""
    eye = np.asarray(eye_world, np.float64)
    z_axis = np.asarray(target_world, np.float64) - eye
    z_axis /= np.linalg.norm(z_axis)
    x_axis = np.cross(z_axis, [0.0, 0.0, 1.0])
    x_axis /= np.linalg.norm(x_axis)
    rot = rot_z(roll) @ np.stack([x_axis, np.cross(z_axis, x_axis), z_axis])
    return Camera(R=rot, t=eye, f=np.asarray(f, np.float64), c=np.asarray(c, np.float64))
