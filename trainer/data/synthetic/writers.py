"""Small synthetic pose data sets written in the real on-disk layouts: COCO, Human3.6M, MPII.

People are 3D bodies (``synthetic.figures``) seen through a pinhole camera and painted with OpenCV
(``synthetic.render``), so 2D keypoints, visibility, boxes and 3D joints agree exactly. Everything
is drawn from ``SyntheticSpec.seed``: the same spec writes the same bytes. The Human3.6M sequences
live in ``synthetic.h36m``; ``write_h36m`` writes them. The package re-exports this module's
public names (``from trainer.data.synthetic import write_coco``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from models.skeleton import COCO17
from trainer.data.synthetic.figures import (COCO_POINTS, MPII_NAMES, MPII_POINTS, POSE_KINDS, Camera,
                                            body_points, look_at, place_body, sample_pose, sample_shape)
from trainer.data.synthetic.h36m import H36M_ACTIONS, write_h36m_split
from trainer.data.synthetic.render import RenderedFigure, encode_jpeg, mask_box, render_scene

_BODY_HEIGHT_MM = 1700.0


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and mix of a synthetic data set.

    num_train / num_val: images of the train and val (H36M: test) splits (MPII: num_train).
    image_hw: COCO and MPII image size, px. h36m_image_hw: Human3.6M image size; its focal length
    is 1145 px per 1000 px of the shorter side (the real cameras' f on their 1000-px frames).
    p_empty / p_grayscale: fractions of COCO images with nobody / stored grey (half of them as a
    1-channel JPEG, half as a 3-channel JPEG of grey). p_crowd: chance of an ``iscrowd`` group.
    p_occluder: chance, per image, of a rectangle painted over one person.
    h36m_frames_per_seq: frames of a sequence per camera (5 frames apart in train, 64 in test).
    """

    num_train: int = 64
    num_val: int = 16
    image_hw: tuple[int, int] = (240, 320)
    seed: int = 0
    max_people: int = 3
    p_empty: float = 0.1
    p_grayscale: float = 0.1
    p_crowd: float = 0.15
    p_occluder: float = 0.3
    h36m_image_hw: tuple[int, int] = (500, 500)
    h36m_frames_per_seq: int = 2
    jpeg_quality: int = 90

    def __post_init__(self):
        for name in ("p_empty", "p_grayscale", "p_crowd", "p_occluder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SyntheticSpec.{name} must lie in [0, 1], got {getattr(self, name)}")
        if min(self.num_train, self.num_val) < 0 or self.max_people < 1 or self.h36m_frames_per_seq < 1:
            raise ValueError("SyntheticSpec: counts must be >= 0, max_people and h36m_frames_per_seq >= 1")


@dataclass
class SceneSample:
    """An in-memory rendered image: ``image_rgb`` (H, W, 3) uint8, the annotated ``people`` and
    the small ``crowd`` figures (``RenderedFigure``, points of ``figures.POINT_NAMES``), and the
    ``camera`` (world mm -> px)."""

    image_rgb: np.ndarray
    people: list[RenderedFigure]
    crowd: list[RenderedFigure]
    camera: Camera


def _scene_camera(rng: np.random.Generator, image_hw: tuple[int, int]) -> Camera:
    """A camera 1-2 m above the floor looking along world +y, pitched -20..10 deg, rolled ±10."""
    height, width = image_hw
    focal = width * rng.uniform(0.9, 1.4)
    eye = np.array([0.0, 0.0, rng.uniform(1000, 2000)])
    target = eye + [0.0, 1000.0, 1000.0 * np.tan(np.deg2rad(rng.uniform(-20, 10)))]
    centre = np.array([width, height]) / 2 + rng.uniform(-0.02, 0.02, 2) * [width, height]
    return look_at(eye, target, [focal, focal], centre, roll=np.deg2rad(rng.uniform(-10, 10)))


def _person(rng: np.random.Generator, camera: Camera, centre_px: np.ndarray,
            height_px: float) -> tuple[np.ndarray, object]:
    """A random body whose trunk centre lands on ``centre_px`` (2,), about ``height_px`` tall."""
    shape = sample_shape(rng)
    points = body_points(shape, sample_pose(rng, list(POSE_KINDS)[rng.integers(len(POSE_KINDS))]))
    depth = camera.f[0] * _BODY_HEIGHT_MM / height_px
    anchor = camera.unproject(np.asarray(centre_px, np.float64)[None], np.array([depth]))[0]
    tilt = np.deg2rad(rng.uniform(-15, 15, 2))
    world = place_body(points, rng.uniform(0, 2 * np.pi), tilt[0], tilt[1], anchor,
                       0.5 * (points[0] + points[8]))
    return world, shape


def render_person_image(rng: np.random.Generator, image_hw: tuple[int, int], num_people: int = 1,
                        crowd_size: int = 0, num_occluders: int = 0) -> SceneSample:
    """Renders one image without writing it.

    ``num_people`` annotated people, 0.35-1.1 image heights tall, their trunk centres anywhere
    from just left of the image to just right of it (some cut by the border); ``crowd_size`` small
    people (0.1-0.2 image heights) in one cluster; an occluder over each of the first
    ``num_occluders`` people.
    """
    height, width = image_hw
    camera = _scene_camera(rng, image_hw)
    figures = [_person(rng, camera, rng.uniform([-0.05, 0.3], [1.05, 0.7]) * [width, height],
                       height * rng.uniform(0.35, 1.1)) for _ in range(num_people)]
    centre = rng.uniform([0.15, 0.3], [0.85, 0.7]) * [width, height]
    crowd_px = height * rng.uniform(0.1, 0.2)
    figures += [_person(rng, camera, centre + rng.uniform(-1.0, 1.0, 2) * [1.2, 0.2] * crowd_px,
                        crowd_px * rng.uniform(0.85, 1.15)) for _ in range(crowd_size)]
    image, rendered = render_scene(rng, image_hw, camera, figures, range(min(num_occluders, num_people)))
    return SceneSample(image, rendered[:num_people], rendered[num_people:], camera)


def _image_rng(spec: SyntheticSpec, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, stream, index])


def _gray_modes(spec: SyntheticSpec, stream: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: grey mode (0 colour, 1 one-channel grey, 2 three-channel grey), empty flag;
    exactly round(p * count) of each kind, at random positions."""
    order = _image_rng(spec, 100 + stream, 0).permutation(count)
    n_gray, n_empty = round(spec.p_grayscale * count), round(spec.p_empty * count)
    gray = np.zeros(count, np.int64)
    gray[order[:n_gray]] = 1 + (np.arange(n_gray) % 2)
    empty = np.zeros(count, bool)
    empty[_image_rng(spec, 200 + stream, 0).permutation(count)[:n_empty]] = True
    return gray, empty


def _write_jpeg(path: Path, image_rgb: np.ndarray, gray_mode: int, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_jpeg(image_rgb, gray_mode, quality))


def keypoints_triplets(figure: RenderedFigure, point_ids: np.ndarray) -> list[float]:
    """Flat (x, y, v) list of the chosen points; x, y truncated to 0.01 px (the same pixel as the
    rendered point, so visibility still holds), (0, 0, 0) where v = 0."""
    xy = np.floor(figure.points_px[point_ids] * 100) / 100
    vis = figure.visibility[point_ids].astype(np.float64)
    out = np.concatenate([xy, vis[:, None]], axis=1) * (vis[:, None] > 0)
    return [float(v) for v in out.ravel()]


def _segmentation(mask: np.ndarray) -> list[list[float]]:
    """Outer polygons of a (H, W) bool mask, as COCO's flat [x0, y0, x1, y1, ...] lists."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    if not polygons:
        x0, y0, x1, y1 = mask_box(mask)[0].tolist()
        polygons = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    return polygons


def _coco_person(figure: RenderedFigure, ann_id: int, image_id: int) -> dict:
    keypoints = keypoints_triplets(figure, COCO_POINTS)
    x0, y0, x1, y1 = figure.bbox_xyxy.tolist()
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "keypoints": keypoints, "num_keypoints": int(np.count_nonzero(keypoints[2::3])),
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(figure.area),
            "segmentation": _segmentation(figure.mask)}


def _coco_crowd(crowd: list[RenderedFigure], ann_id: int, image_id: int) -> dict | None:
    """One ``iscrowd`` annotation (RLE) covering the crowd's visible pixels; None if none show."""
    mask = np.any([f.mask for f in crowd], axis=0)
    if not mask.any():
        return None
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    rle["counts"] = rle["counts"].decode("ascii")
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 1,
            "keypoints": [0.0] * 51, "num_keypoints": 0, "bbox": bbox,
            "area": float(mask_utils.area(rle)), "segmentation": rle}


def _scene_args(rng: np.random.Generator, spec: SyntheticSpec, empty: bool) -> dict:
    return {"num_people": 0 if empty else int(rng.integers(1, spec.max_people + 1)),
            "crowd_size": int(rng.integers(4, 9)) if rng.random() < spec.p_crowd else 0,
            "num_occluders": int(rng.random() < spec.p_occluder)}


def _coco_split(root: Path, split: str, count: int, spec: SyntheticSpec) -> dict:
    """Renders and writes the images of one split; returns its COCO annotation dict."""
    stream = {"train2017": 1, "val2017": 2}[split]
    gray, empty = _gray_modes(spec, stream, count)
    images, annotations = [], []
    for i in range(count):
        rng = _image_rng(spec, stream, i)
        sample = render_person_image(rng, spec.image_hw, **_scene_args(rng, spec, empty[i]))
        image_id = stream * 1_000_000 + i + 1
        name = f"{image_id:012d}.jpg"
        _write_jpeg(root / "images" / split / name, sample.image_rgb, gray[i], spec.jpeg_quality)
        images.append({"id": image_id, "file_name": name, "height": spec.image_hw[0],
                       "width": spec.image_hw[1]})
        for person in (p for p in sample.people if p.area > 0):
            annotations.append(_coco_person(person, len(annotations) + 1, image_id))
        crowd = _coco_crowd(sample.crowd, len(annotations) + 1, image_id) if sample.crowd else None
        annotations += [crowd] if crowd else []
    skeleton = [[a + 1, b + 1] for a, b in COCO17.edges]
    category = {"id": 1, "name": "person", "supercategory": "person",
                "keypoints": list(COCO17.joints), "skeleton": skeleton}
    return {"images": images, "annotations": annotations, "categories": [category]}


def coco_detections(coco: dict, seed: int) -> list[dict]:
    """A detector's output for a COCO annotation dict: jittered boxes of 92 % of the non-crowd
    people (scores 0.5-0.99) and 0-2 false positives per image (scores 0.3-0.5)."""
    rng = np.random.default_rng([seed, 3])
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    dets = []
    for ann in coco["annotations"]:
        if ann["iscrowd"] or rng.random() < 0.08:
            continue
        x, y, w, h = ann["bbox"]
        dx, dy = rng.normal(0, 0.05, 2) * [w, h]
        sw, sh = np.exp(rng.normal(0, 0.08, 2))
        box = [x + dx - w * (sw - 1) / 2, y + dy - h * (sh - 1) / 2, w * sw, h * sh]
        dets.append((ann["image_id"], box, rng.uniform(0.5, 0.99)))
    for image_id, (width, height) in sizes.items():
        for _ in range(int(rng.integers(0, 3))):
            w, h = rng.uniform(0.1, 0.4) * width, rng.uniform(0.2, 0.6) * height
            box = [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]
            dets.append((image_id, box, rng.uniform(0.301, 0.5)))
    return [{"image_id": i, "category_id": 1, "bbox": [round(float(v), 2) for v in b],
             "score": round(float(s), 4)} for i, b, s in dets]


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")))


def write_coco(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Writes root/annotations/person_keypoints_{train,val}2017.json,
    root/images/{train2017,val2017}/*.jpg, and root/detections/person_detection_results_val2017.json
    (COCO detection-results format: list of {image_id, category_id: 1, bbox: [x,y,w,h], score});
    returns root."""
    root = Path(root)
    for split, count in (("train2017", spec.num_train), ("val2017", spec.num_val)):
        coco = _coco_split(root, split, count, spec)
        _write_json(root / "annotations" / f"person_keypoints_{split}.json", coco)
    _write_json(root / "detections" / "person_detection_results_val2017.json",
                coco_detections(coco, spec.seed))
    return root


def write_mpii(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Writes root/annotations/annot_mpii.json (COCO-style; each annotation has 16 MPII joints
    x (x, y, v) px in ``figures.MPII_NAMES`` order, v: 2 visible, 1 occluded, 0 unlabelled) and
    root/images/*.jpg: ``spec.num_train`` colour images of 1-2 people; returns root."""
    root = Path(root)
    images, annotations = [], []
    for i in range(spec.num_train):
        rng = _image_rng(spec, 4, i)
        sample = render_person_image(rng, spec.image_hw, int(rng.integers(1, 3)), 0,
                                     int(rng.random() < spec.p_occluder))
        name = f"{i + 1:09d}.jpg"
        _write_jpeg(root / "images" / name, sample.image_rgb, 0, spec.jpeg_quality)
        images.append({"id": i + 1, "file_name": name, "height": spec.image_hw[0],
                       "width": spec.image_hw[1]})
        for person in sample.people:
            keypoints = keypoints_triplets(person, MPII_POINTS)
            x0, y0, x1, y1 = person.bbox_xyxy.tolist()
            if person.area > 0 and any(keypoints[2::3]):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                    "keypoints": keypoints, "num_keypoints": int(np.count_nonzero(keypoints[2::3])),
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(person.area), "iscrowd": 0})
    category = {"id": 1, "name": "person", "keypoints": list(MPII_NAMES)}
    _write_json(root / "annotations" / "annot_mpii.json",
                {"images": images, "annotations": annotations, "categories": [category]})
    return root


def write_h36m(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Writes the Human3.6M layout: root/annotations/Sample_trainmin_train_Human36M_protocol_2.json
    (subjects 1, 5, 6, 7, 8; ``spec.num_train`` images, frames 5 apart) and
    Sample_64_test_Human36M_protocol_2.json (subjects 9, 11; ``spec.num_val`` images, every 64th
    frame), and root/images/s_SS_act_AA_subact_BB_ca_CC/*.jpg; returns root.
    See ``trainer.data.synthetic.h36m`` for the entries and the cameras."""
    root = Path(root)
    for name, subjects, count, stride in (
            ("Sample_trainmin_train_Human36M_protocol_2", (1, 5, 6, 7, 8), spec.num_train, 5),
            ("Sample_64_test_Human36M_protocol_2", (9, 11), spec.num_val, 64)):
        data = write_h36m_split(root, subjects, count, stride, spec.h36m_frames_per_seq,
                                spec.h36m_image_hw, spec.seed, spec.jpeg_quality)
        _write_json(root / "annotations" / f"{name}.json", data)
    return root


__all__ = ["H36M_ACTIONS", "SceneSample", "SyntheticSpec", "render_person_image", "write_coco",
           "write_h36m", "write_mpii", "coco_detections", "keypoints_triplets"]
