"""Synthetic data sets: valid COCO / Human3.6M / MPII files whose numbers agree with each other."""
import json
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from models.skeleton import COCO17, H36M18, MPII_TO_H36M
from trainer.data.synthetic.figures import (COCO_POINTS, MPII_NAMES, MPII_POINTS, POINT_NAMES, BodyPose,
                                            BodyShape, body_points, look_at, place_body)
from trainer.data.synthetic import (H36M_ACTIONS, SyntheticSpec, keypoints_triplets,
                                    render_person_image, write_coco, write_h36m, write_mpii)
from trainer.data.synthetic.render import render_scene

COCO_SPEC = SyntheticSpec(num_train=8, num_val=16, p_grayscale=0.5, p_empty=0.25, p_crowd=0.5, seed=3)
H36M_SPEC = SyntheticSpec(num_train=40, num_val=16, h36m_image_hw=(300, 300), h36m_frames_per_seq=2)


def _load(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco"), COCO_SPEC)


@pytest.fixture(scope="module")
def h36m_root(tmp_path_factory) -> Path:
    return write_h36m(tmp_path_factory.mktemp("h36m"), H36M_SPEC)


def test_coco_gt_against_itself_gives_ap_one(coco_root):
    gt = COCO(str(coco_root / "annotations/person_keypoints_val2017.json"))
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in gt.dataset["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    assert len(results) >= 10
    evaluator = COCOeval(gt, gt.loadRes(results), "keypoints")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)
    assert evaluator.stats[5] == pytest.approx(1.0)  # AR


def test_coco_category_and_fields(coco_root):
    data = _load(coco_root / "annotations/person_keypoints_train2017.json")
    (category,) = data["categories"]
    assert category["id"] == 1 and category["name"] == "person"
    assert tuple(category["keypoints"]) == COCO17.joints
    assert len(category["skeleton"]) == len(COCO17.edges)
    assert min(min(e) for e in category["skeleton"]) == 1
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids)
    for ann in data["annotations"]:
        assert len(ann["keypoints"]) == 51
        assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])


def test_visible_keypoints_lie_in_image_and_bbox(coco_root):
    counts = np.zeros(3, int)
    for split in ("train2017", "val2017"):
        data = _load(coco_root / f"annotations/person_keypoints_{split}.json")
        sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
        for ann in (a for a in data["annotations"] if not a["iscrowd"]):
            width, height = sizes[ann["image_id"]]
            x0, y0, w, h = ann["bbox"]
            assert 0 <= x0 and 0 <= y0 and x0 + w <= width and y0 + h <= height and ann["area"] > 0
            kpts = np.array(ann["keypoints"]).reshape(17, 3)
            vis2 = kpts[kpts[:, 2] == 2]
            assert np.all((vis2[:, 0] >= 0) & (vis2[:, 0] < width) & (vis2[:, 1] >= 0) & (vis2[:, 1] < height))
            assert np.all((vis2[:, 0] >= x0) & (vis2[:, 0] <= x0 + w) & (vis2[:, 1] >= y0) & (vis2[:, 1] <= y0 + h))
            assert np.all(kpts[kpts[:, 2] == 0] == 0)
            counts += np.bincount(kpts[:, 2].astype(int), minlength=3)
    assert counts[2] > 100 and counts[1] > 10 and counts[0] > 5  # all three states occur


def test_crowd_regions_are_rle_with_matching_area(coco_root):
    gt = COCO(str(coco_root / "annotations/person_keypoints_val2017.json"))
    crowds = [a for a in gt.dataset["annotations"] if a["iscrowd"]]
    assert len(crowds) >= 3
    for ann in crowds:
        assert ann["num_keypoints"] == 0 and isinstance(ann["segmentation"], dict)
        assert gt.annToMask(ann).sum() == ann["area"]


def test_grayscale_and_empty_images_as_requested(coco_root):
    data = _load(coco_root / "annotations/person_keypoints_val2017.json")
    kinds = defaultdict(int)
    for image in data["images"]:
        pixels = cv2.imread(str(coco_root / "images/val2017" / image["file_name"]), cv2.IMREAD_UNCHANGED)
        assert pixels.shape[:2] == (image["height"], image["width"])
        if pixels.ndim == 2:
            kinds["gray1"] += 1
        else:
            spread = np.abs(pixels.astype(int) - pixels[..., :1]).max()
            kinds["gray3" if spread <= 3 else "colour"] += 1
    assert (kinds["gray1"], kinds["gray3"], kinds["colour"]) == (4, 4, 8)  # p_grayscale 0.5 of 16
    with_people = {a["image_id"] for a in data["annotations"] if not a["iscrowd"]}
    assert len(data["images"]) - len(with_people) >= 4  # p_empty 0.25 of 16


def test_detections_file(coco_root):
    dets = _load(coco_root / "detections/person_detection_results_val2017.json")
    gt = _load(coco_root / "annotations/person_keypoints_val2017.json")
    image_ids = {im["id"] for im in gt["images"]}
    scores = np.array([d["score"] for d in dets])
    assert np.all((scores > 0.3) & (scores < 1.0))
    assert all(d["category_id"] == 1 and d["image_id"] in image_ids and len(d["bbox"]) == 4 for d in dets)
    people = [a for a in gt["annotations"] if not a["iscrowd"]]
    assert 0.8 * len(people) <= np.sum(scores >= 0.5) <= len(people)  # a few missed
    assert np.sum(scores < 0.5) >= 5  # false positives, low scores


def test_same_seed_same_bytes(tmp_path):
    spec = SyntheticSpec(num_train=3, num_val=3, seed=11)
    a, b = write_coco(tmp_path / "a", spec), write_coco(tmp_path / "b", spec)
    c = write_coco(tmp_path / "c", SyntheticSpec(num_train=3, num_val=3, seed=12))
    name = "annotations/person_keypoints_val2017.json"
    assert (a / name).read_bytes() == (b / name).read_bytes() != (c / name).read_bytes()
    jpegs = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(jpegs) == 6 and all((a / p).read_bytes() == (b / p).read_bytes() for p in jpegs)


def test_default_coco_generation_writes_its_images(tmp_path):   # its speed: bench/bench_synthetic.py
    write_coco(tmp_path, SyntheticSpec())
    assert len(list((tmp_path / "images/train2017").glob("*.jpg"))) == 64


def test_facing_and_self_occlusion():
    """Facing the camera: eyes visible and the person's left on the image's right; facing away:
    eyes hidden; in profile the far elbow is hidden behind the torso."""
    camera = look_at([0, 0, 1000], [0, 1000, 1000], [300, 300], [160, 120])
    points = body_points(BodyShape(), BodyPose())
    vis = {}
    for name, yaw in (("toward", np.pi), ("away", 0.0), ("profile", np.pi / 2)):
        world = place_body(points, yaw, 0, 0, np.array([0, 4000, 1000.0]), 0.5 * (points[0] + points[8]))
        _, (figure,) = render_scene(np.random.default_rng(0), (240, 320), camera, [(world, BodyShape())])
        vis[name] = figure
    toward, away, profile = vis["toward"], vis["away"], vis["profile"]
    eyes, nose = [17, 18], 9
    assert list(toward.visibility[eyes + [nose]]) == [2, 2, 2]
    assert list(away.visibility[eyes + [nose]]) == [1, 1, 1]
    assert toward.points_px[11, 0] > toward.points_px[14, 0] + 20  # l_shoulder right of r_shoulder
    assert away.points_px[11, 0] < away.points_px[14, 0] - 20
    # yaw pi/2 turns the person's right side away from the camera
    assert profile.points_cam_mm[15, 2] > profile.points_cam_mm[12, 2] + 300
    assert (profile.visibility[12], profile.visibility[15]) == (2, 1)


def test_left_and_right_limbs_differ_in_colour():
    """Left limbs are red-orange (R > B), right limbs blue (B > R) at visible knees and elbows."""
    votes = []
    for seed in range(12):
        sample = render_person_image(np.random.default_rng(seed), (240, 320), num_people=2)
        for person in sample.people:
            for joint, is_left in ((5, True), (2, False), (12, True), (15, False)):
                if person.visibility[joint] == 2:
                    x, y = person.points_px[joint].astype(int)
                    r, _, b = sample.image_rgb[y, x].astype(int)
                    votes.append((r > b) == is_left)
    assert len(votes) >= 40 and np.mean(votes) >= 0.95


def test_h36m_layout(h36m_root):
    for name, subjects, count in (("Sample_trainmin_train_Human36M_protocol_2", {1, 5, 6, 7, 8}, 40),
                                  ("Sample_64_test_Human36M_protocol_2", {9, 11}, 16)):
        data = _load(h36m_root / "annotations" / f"{name}.json")
        assert len(data["images"]) == len(data["annotations"]) == count
        seen = set()
        for image, ann in zip(data["images"], data["annotations"]):
            assert ann["image_id"] == image["id"]
            match = re.fullmatch(r"(s_(\d\d)_act_(\d\d)_subact_(\d\d)_ca_(\d\d))/\1_(\d{6})\.jpg",
                                 image["file_name"])
            subject, action, subact, cam, _ = (int(g) for g in match.groups()[1:])
            assert subject in subjects and action in H36M_ACTIONS and subact in (1, 2) and 1 <= cam <= 4
            assert (subject, action, subact) not in {(9, 5, 2), (9, 10, 2), (9, 13, 1)}
            assert np.array(ann["keypoints_world"]).shape == (17, 3)
            assert (h36m_root / "images" / image["file_name"]).is_file()
            seen.add(subject)
        assert seen == subjects
    assert len(H36M_ACTIONS) == 15 and H36M_ACTIONS[14] == "Walking"


def test_h36m_projection_lands_in_bbox(h36m_root):
    for name in ("Sample_trainmin_train_Human36M_protocol_2", "Sample_64_test_Human36M_protocol_2"):
        data = _load(h36m_root / "annotations" / f"{name}.json")
        for image, ann in zip(data["images"], data["annotations"]):
            cam = {k: np.array(v) for k, v in image["cam_param"].items()}
            joints_cam = (np.array(ann["keypoints_world"]) - cam["t"]) @ cam["R"].T
            assert np.all(joints_cam[:, 2] > 3000)
            px = joints_cam[:, :2] / joints_cam[:, 2:] * cam["f"] + cam["c"]
            x, y, w, h = ann["bbox"]
            assert np.all((px[:, 0] >= x) & (px[:, 0] <= x + w) & (px[:, 1] >= y) & (px[:, 1] <= y + h))
            assert np.allclose(cam["f"], 1.145 * 300, rtol=0.02) and np.allclose(cam["c"], 150, atol=4)
            assert 4400 < np.linalg.norm(cam["t"][:2]) < 5600 and np.allclose(cam["R"] @ cam["R"].T, np.eye(3), atol=1e-5)


def test_h36m_test_frames_are_64_apart_and_bodies_rigid(h36m_root):
    data = _load(h36m_root / "annotations/Sample_64_test_Human36M_protocol_2.json")
    frames, bones = defaultdict(list), defaultdict(list)
    for image, ann in zip(data["images"], data["annotations"]):
        folder, file = image["file_name"].split("/")
        frames[folder].append(int(file[-10:-4]))
        joints = np.array(ann["keypoints_world"])
        bones[folder[:4]].append([np.linalg.norm(joints[a] - joints[b]) for a, b in H36M18.edges])
    assert all(f[0] == 1 and np.all(np.diff(f) == 64) for f in frames.values())
    assert max(len(f) for f in frames.values()) == 2
    for lengths in bones.values():  # one subject, one body: bones keep their length in every frame
        assert np.ptp(np.array(lengths), axis=0).max() < 0.1


def test_mpii_file_and_mapping_to_h36m(tmp_path):
    root = write_mpii(tmp_path, SyntheticSpec(num_train=6))
    data = _load(root / "annotations/annot_mpii.json")
    assert len(data["images"]) == 6 and len(data["annotations"]) >= 6
    for ann in data["annotations"]:
        kpts = np.array(ann["keypoints"]).reshape(16, 3)
        x, y, w, h = ann["bbox"]
        vis = kpts[kpts[:, 2] == 2]
        assert np.all((vis[:, 0] >= x) & (vis[:, 0] <= x + w) & (vis[:, 1] >= y) & (vis[:, 1] <= y + h))
    # names: every mapped H36M joint is the same body point in MPII
    aliases = {"neck": "upper_neck", "head": "head_top"}
    for h36m_index, mpii_index in enumerate(MPII_TO_H36M):
        if mpii_index >= 0:
            name = H36M18.joints[h36m_index]
            assert MPII_NAMES[mpii_index] == aliases.get(name, name)
    # pixels: the mapped MPII keypoints sit on the projected H36M joints of the same person
    sample = render_person_image(np.random.default_rng(5), (240, 320), num_people=2)
    for person in sample.people:
        mpii = np.array(keypoints_triplets(person, MPII_POINTS)).reshape(16, 3)
        h36m_px = sample.camera.project(person.points_world_mm[:17])
        thorax = sample.camera.project(0.5 * (person.points_world_mm[[11]] + person.points_world_mm[[14]]))
        h36m_px = np.concatenate([h36m_px, thorax])
        for h36m_index, mpii_index in enumerate(MPII_TO_H36M):
            if mpii_index >= 0 and mpii[mpii_index, 2] > 0:
                assert np.abs(mpii[mpii_index, :2] - h36m_px[h36m_index]).max() < 0.02
        assert np.abs(mpii[15, :2] - h36m_px[13]).max() < 0.02 or mpii[15, 2] == 0  # l_wrist


def test_coco_points_match_names():
    for coco_name, point in zip(COCO17.joints, COCO_POINTS):
        assert POINT_NAMES[point] == coco_name.replace("left_", "l_").replace("right_", "r_")


def test_spec_rejects_bad_probability():
    with pytest.raises(ValueError, match="p_empty"):
        SyntheticSpec(p_empty=1.5)


def test_an_interrupted_generation_leaves_no_half_set_and_the_next_run_completes_it(tmp_path):
    from trainer.data.synthetic.complete import write_generated
    from trainer.data.synthetic.writers import write_coco as real_write_coco

    class Killed(BaseException):
        pass

    def write_coco(root, spec):                 # the real writer, killed after the train JSON
        real_write_coco(root, spec)
        (root / "detections" / "person_detection_results_val2017.json").unlink()
        (root / "annotations" / "person_keypoints_val2017.json").unlink()
        raise Killed
    spec, folder = SyntheticSpec(num_train=2, num_val=1, seed=5), tmp_path / "synthetic-coco"
    with pytest.raises(Killed):
        write_generated(folder, write_coco, spec)
    assert not folder.exists()                   # a partial set never appears under its name
    (tmp_path / ".synthetic-coco.partial-x1").mkdir()   # what a SIGKILL leaves (no cleanup ran)
    assert write_generated(folder, real_write_coco, spec) and not write_generated(folder, real_write_coco, spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic-coco"]   # the partial one removed
    want = real_write_coco(tmp_path / "reference", spec)
    for rel in ("annotations/person_keypoints_train2017.json", "annotations/person_keypoints_val2017.json",
                "detections/person_detection_results_val2017.json"):
        assert (folder / rel).read_bytes() == (want / rel).read_bytes(), rel


def test_a_half_written_set_from_an_older_run_is_named_not_reused(tmp_path):
    from trainer.data.dataset import DatasetError
    from trainer.data.synthetic.complete import write_generated
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "person_keypoints_train2017.json").write_text("{}")
    with pytest.raises(DatasetError, match="incomplete generated data set .* delete the folder"):
        write_generated(tmp_path, write_coco, SyntheticSpec(num_train=1, num_val=1))
