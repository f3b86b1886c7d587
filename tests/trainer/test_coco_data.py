"""COCO data: annotation rules, reduced JPEG decoding vs full, skipping bad images, clear errors."""
from __future__ import annotations

import dataclasses
import json
import os
import warnings

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from models.config import coco_config
from models.skeleton import COCO17
from trainer.config import AugmentConfig, resolve_config
from trainer.data.check import validate_annotations
from trainer.data.coco import (AnnotationWarning, build_train_dataset, build_train_loader, build_val_dataset,
                               build_val_loader, joint_set_from_category, load_coco_instances, with_detections)
from trainer.data.dataset import (worker_context, TopDownDataset, DatasetError, SkippedSampleWarning, collate,
                                  seed_worker)
from trainer.data.images import JpegReader, _jpeg_roi, choose_reduction
from trainer.data.synthetic import SyntheticSpec, write_coco
from models.predictor import crops_for_boxes
from trainer.data.transforms import EvalTransform, PoseSample, TrainTransform

CFG = coco_config("resnet10t", input_hw=(128, 96))


def _smooth_image(h: int = 480, w: int = 640) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([128 + 100 * np.sin(xx / 37 + yy / 53), 128 + 100 * np.cos(xx / 29 - yy / 41),
                     128 + 80 * np.sin((xx + yy) / 47)], -1).astype(np.uint8)


def _ann(ann_id: int, bbox, kps=None, **extra) -> dict:
    kps = kps if kps is not None else [v for j in range(17) for v in (100 + 5 * j, 80 + 10 * j, 2)]
    ann = {"id": ann_id, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": bbox,
           "keypoints": kps, "num_keypoints": sum(1 for v in kps[2::3] if v > 0),
           "area": float(bbox[2] * bbox[3])}
    ann.update(extra)
    return ann


def _tiny_coco(root, annotations=None, gray: bool = False):
    """root/annotations/person_keypoints_{train,val}2017.json + images/{train,val}2017/1.jpg."""
    image = _smooth_image()
    for split in ("train2017", "val2017"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        pixels = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if gray else image[..., ::-1]
        cv2.imwrite(str(root / "images" / split / "1.jpg"), pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
        data = {"images": [{"id": 1, "file_name": "1.jpg", "width": 640, "height": 480}],
                "annotations": annotations or [_ann(1, [60, 40, 300, 400])],
                "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.joints),
                                "skeleton": [[a + 1, b + 1] for a, b in COCO17.edges]}]}
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))
    return root


def test_skips_crowd_and_unlabelled_annotations(tmp_path):
    anns = [_ann(1, [60, 40, 300, 400]), _ann(2, [60, 40, 300, 400], iscrowd=1),
            _ann(3, [60, 40, 300, 400], kps=[0] * 51), _ann(4, [60, 40, 300, 400], area=0.0),
            _ann(5, [60, 40, 1, 400]), _ann(6, [60, 40, 300, 400], num_keypoints=0)]
    _tiny_coco(tmp_path, anns)
    inst = load_coco_instances(tmp_path / "annotations" / "person_keypoints_train2017.json")
    assert inst.ann_ids.tolist() == [1]
    assert inst.skipped == {"crowd": 1, "no_keypoints": 2, "empty_box": 2}
    # reference GT box convention: (x, y, x + w - 1, y + h - 1) clipped to the image
    np.testing.assert_allclose(inst.boxes_xyxy[0], [60, 40, 359, 439])


def test_joint_names_give_flip_pairs_and_edges():
    cat = {"name": "hand", "keypoints": ["nose", "l_foo", "r_foo", "left_bar", "right_bar"],
           "skeleton": [[1, 2], [2, 4]]}
    js = joint_set_from_category(cat)
    assert js.flip_pairs == ((1, 2), (3, 4)) and js.edges == ((0, 1), (1, 3))
    assert joint_set_from_category({"keypoints": list(COCO17.joints)}).flip_pairs == COCO17.flip_pairs


def test_reduced_decode_matches_full_decode(tmp_path):
    _tiny_coco(tmp_path)
    path = tmp_path / "images" / "train2017" / "1.jpg"
    inst = load_coco_instances(tmp_path / "annotations" / "person_keypoints_train2017.json")
    ds = TopDownDataset(inst, tmp_path / "images" / "train2017", EvalTransform(CFG))
    aug = AugmentConfig(rot_prob=1.0, flip_prob=0.5, half_body_prob=0.0)
    for input_hw, expected_r in (((128, 96), 2), ((64, 48), 4)):
        cfg = CFG.replace(input_hw=input_hw)
        for transform in (EvalTransform(cfg), TrainTransform(cfg, aug)):
            size_w = transform(ds.instance(0), JpegReader(path, "full"), np.random.default_rng(0)).size_px[0]
            assert choose_reduction(size_w / input_hw[1]) == expected_r
            full = transform(ds.instance(0), JpegReader(path, "full"), np.random.default_rng(3))
            reduced = transform(ds.instance(0), JpegReader(path, "reduced"), np.random.default_rng(3))
            np.testing.assert_array_equal(full.target, reduced.target)
            diff = np.abs(full.image.astype(float) - reduced.image.astype(float))[4:-4, 4:-4]
            assert diff.mean() < 3.0, (input_hw, diff.mean())


def test_eval_crops_of_large_boxes_are_the_full_resolution_warp(tmp_path):
    """The evaluation data set (defaults: data.val_image_decode "full") gives, for boxes 8-13x the
    crop, exactly the crops of the reference (the predictor's / app's ``crops_for_boxes``) and of an
    independent full-resolution ``cv2.warpAffine`` of the decoded image. Reduced decoding, opted in,
    does not (it decodes these at 1/8 size); training keeps "reduced" as its default."""
    boxes = [[60, 40, 300, 400], [250, 100, 230, 330], [-40, 200, 260, 300]]   # xywh, one past the edge
    root = _tiny_coco(tmp_path, [_ann(i + 1, b) for i, b in enumerate(boxes)])
    path = root / "images" / "val2017" / "1.jpg"
    noise = np.random.default_rng(0).integers(0, 60, (480, 640, 3))
    cv2.imwrite(str(path), np.clip(_smooth_image()[..., ::-1] + noise, 0, 255).astype(np.uint8))
    sets = ["model.backbone=resnet10t", "model.input_hw=[32, 24]"]
    cfg = resolve_config(overrides={"data.data_root": str(root)}, sets=sets)
    assert (cfg.data.image_decode, cfg.data.val_image_decode) == ("reduced", "full")
    full, reduced = build_val_dataset(cfg), build_val_dataset(
        resolve_config(overrides={"data.data_root": str(root)}, sets=[*sets, "data.val_image_decode=reduced"]))
    image_rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    ref_crops, mats = crops_for_boxes(image_rgb, full.instances.boxes_xyxy, cfg.model)
    for i in range(len(boxes)):
        sample = full[i]
        assert sample.size_px[0] / 24 > 8 and choose_reduction(sample.size_px[0] / 24) == 8
        np.testing.assert_allclose(sample.crop_from_image, mats[i], rtol=1e-6, atol=1e-4)
        independent = cv2.warpAffine(image_rgb, mats[i], (24, 32), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        np.testing.assert_array_equal(sample.image, independent)
        np.testing.assert_array_equal(ref_crops[i], independent)
        assert np.abs(reduced[i].image.astype(int) - independent).max() > 3


def test_grayscale_jpeg_gives_three_channels(tmp_path):
    _tiny_coco(tmp_path, gray=True)
    assert cv2.imread(str(tmp_path / "images" / "val2017" / "1.jpg"), cv2.IMREAD_UNCHANGED).ndim == 2
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(tmp_path),
                                                      "data.val_image_dir": "images/val2017"})
    batch = next(iter(build_val_loader(cfg)))
    assert batch.images.shape == (1, 3, 128, 96)
    assert torch.equal(batch.images[:, 0], batch.images[:, 1])


def test_corrupted_jpeg_is_skipped_with_counted_warning(tmp_path):
    _tiny_coco(tmp_path)
    folder = tmp_path / "images" / "train2017"
    (folder / "2.jpg").write_bytes(b"\xff\xd8 not really a jpeg" * 10)
    one = load_coco_instances(tmp_path / "annotations" / "person_keypoints_train2017.json")
    def two(a):
        return np.concatenate([a, a])   # instance 0 on the broken 2.jpg, instance 1 on 1.jpg
    inst = dataclasses.replace(one, image_files=["2.jpg", "1.jpg"], image_wh=two(one.image_wh),
                               image_ids=np.array([2, 1]), image_index=np.array([0, 1]),
                               ann_ids=two(one.ann_ids), boxes_xyxy=two(one.boxes_xyxy),
                               joints=two(one.joints), joints_vis=two(one.joints_vis), scores=two(one.scores))
    ds = TopDownDataset(inst, folder, EvalTransform(CFG), skip_unreadable=True, seed=0)
    with pytest.warns(SkippedSampleWarning) as caught:
        sample = ds[0]
    assert sample.image_id == 1 and ds.num_skipped == len(caught) >= 1
    assert "2.jpg" in str(caught[0].message) and "(1 skipped so far" in str(caught[0].message)
    with pytest.warns(SkippedSampleWarning), pytest.raises(DatasetError, match="10 unreadable images"):
        TopDownDataset(dataclasses.replace(inst, image_index=np.array([0, 0])), folder,
                        EvalTransform(CFG), skip_unreadable=True)[0]
    strict = TopDownDataset(inst, folder, EvalTransform(CFG))   # evaluation: an error, not a skip
    with pytest.raises(DatasetError, match="2.jpg: missing or not a decodable image"):
        strict[0]


def test_missing_files_give_one_line_errors(tmp_path):
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(tmp_path / "nowhere")})
    with pytest.raises(DatasetError, match="nowhere: data root not found"):
        build_train_loader(cfg)
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(tmp_path)})
    with pytest.raises(DatasetError, match="person_keypoints_train2017.json: annotation file not found"):
        build_train_loader(cfg)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "person_keypoints_train2017.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"not valid JSON \(line 1") as err:
        build_train_loader(cfg)
    assert "\n" not in str(err.value)
    _tiny_coco(tmp_path)
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(tmp_path),
                                                      "data.train_image_dir": "imgs"})
    with pytest.raises(DatasetError, match="imgs: image folder not found"):
        build_train_loader(cfg)


def test_validate_annotations_reports_data_at_fault(tmp_path):
    far = [v for j in range(17) for v in ((2000, 80, 2) if j == 3 else (100 + 5 * j, 80 + 10 * j, 2))]
    anns = [_ann(1, [60, 40, 300, 400]), _ann(2, [60, 40, -5, 400]), _ann(3, [60, 40, 300, 400], kps=far),
            _ann(4, [60, float("nan"), 300, 400]), _ann(5, [60, 40, 300, 400], iscrowd=1)]
    _tiny_coco(tmp_path, anns)
    report = validate_annotations(tmp_path / "annotations" / "person_keypoints_train2017.json")
    assert not report.ok and report.num_kept == 1 and len(report.problems) == 3
    text = " | ".join(report.problems)
    assert "annotation 2" in text and "negative box size" in text
    assert "annotation 3" in text and "keypoint 3 at (2000, 80)" in text
    assert "annotation 4" in text and "NaN" in text
    assert report.skipped == {"at_fault": 3, "crowd": 1}


def test_annotations_at_fault_are_counted_and_named_at_load(tmp_path):
    far = [v for j in range(17) for v in ((2000, 80, 2) if j == 3 else (100 + 5 * j, 80 + 10 * j, 2))]
    nan = [v for j in range(17) for v in ((float("nan"), 80, 2) if j == 5 else (100 + 5 * j, 80 + 10 * j, 2))]
    anns = [_ann(1, [60, 40, 300, 400]), _ann(2, [60, 40, 300, 400], kps=far),
            _ann(3, [60, 40, 300, 400], kps=nan), _ann(4, [60, 40, 300, 400], image_id=99),
            _ann(5, [60, 40, 300, 400], iscrowd=1)]
    _tiny_coco(tmp_path, anns)
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(tmp_path)},
                         sets=["model.input_hw=[128, 96]"])
    with pytest.warns(AnnotationWarning) as caught:
        train = build_train_dataset(cfg)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "\n" not in text and "person_keypoints_train2017.json: 3 annotation(s) at fault were skipped" in text
    assert "annotation 2 (image 1): keypoint 3 at (2000, 80)" in text
    assert "annotation 3 (image 1): NaN or inf" in text and "annotation 4 (image 99): image id not in" in text
    assert train.instances.ann_ids.tolist() == [1]
    assert train.instances.skipped == {"at_fault": 3, "crowd": 1}
    with pytest.warns(AnnotationWarning, match="3 annotation.s. at fault .unusable ones skipped"):
        val = build_val_dataset(cfg, boxes="gt")
    assert val.instances.ann_ids.tolist() == [1, 2]   # far keypoints: still predicted and scored
    assert val.instances.skipped == {"at_fault": 2, "crowd": 1}


def test_loaders_on_generated_data(tmp_path):
    root = write_coco(tmp_path / "coco", SyntheticSpec(num_train=6, num_val=3, seed=1))
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(root)},
                         sets=["data.batch_size_per_gpu=4"])
    batch = next(iter(build_train_loader(cfg)))
    assert batch.images.shape == (4, 3, 128, 96) and batch.images.dtype == torch.uint8
    assert batch.targets.shape == (4, 17, 2) and batch.weights.dtype == torch.float32
    assert batch.crop_from_image.shape == (4, 2, 3)
    gt = build_val_loader(cfg, boxes="gt").dataset
    dets = build_val_loader(cfg, boxes="det").dataset
    det_json = json.loads((root / "detections" / "person_detection_results_val2017.json").read_text())
    assert len(dets) == len(det_json) and len(gt) > 0
    assert np.all(dets.instances.ann_ids == -1) and dets[0].weight.sum() == 0
    ranks = [build_val_loader(cfg, r, 2, boxes="det").sampler for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == list(range(len(dets)))   # each instance once


class _Draws(Dataset):
    def __init__(self):
        self.rng = np.random.default_rng(0)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.rng.random()


def test_workers_draw_different_augmentations():
    # persistent workers, as make_loader builds them: two worker starts, not one per worker per epoch
    loader = DataLoader(_Draws(), batch_size=1, num_workers=2, worker_init_fn=seed_worker,
                        generator=torch.Generator().manual_seed(0), multiprocessing_context=worker_context(),
                        persistent_workers=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = [float(x) for x in loader]
        second = [float(x) for x in loader]
    assert first[0] != first[1]           # worker 0 and worker 1 differ
    assert first != second                # and epochs differ


def _sample(i: int) -> PoseSample:
    """A sample whose every field carries its index ``i`` (so a dropped or reordered one shows)."""
    rng = np.random.default_rng(i)
    return PoseSample(rng.integers(0, 256, (8, 6, 3), dtype=np.uint8), np.full((17, 2), i / 10, np.float64),
                      np.full((17, 2), i % 2, np.float64), np.arange(6.0).reshape(2, 3) + i,
                      np.array([i, 2.0 * i]), np.array([3.0 * i, 4.0]), 100 + i, 200 + i, i / 4)


def test_collate_drops_none_and_stacks_the_rest_in_order():
    assert collate([None]) is None and collate([None, None]) is None
    samples = [_sample(i) for i in range(4)]
    for batch_in in (samples, [None, samples[0], samples[1], None, samples[2], samples[3], None]):
        batch = collate(batch_in)
        assert batch.images.shape == (4, 3, 8, 6) and batch.images.dtype == torch.uint8
        for n, s in enumerate(samples):   # image HWC -> CHW, pixel for pixel
            np.testing.assert_array_equal(batch.images[n].numpy(), s.image.transpose(2, 0, 1))
        np.testing.assert_allclose(batch.targets.numpy(), np.stack([s.target for s in samples]))
        np.testing.assert_allclose(batch.weights.numpy(), np.stack([s.weight for s in samples]))
        np.testing.assert_allclose(batch.crop_from_image.numpy(), np.stack([s.crop_from_image for s in samples]))
        np.testing.assert_allclose(batch.center_px.numpy(), [[i, 2 * i] for i in range(4)])
        np.testing.assert_allclose(batch.size_px.numpy(), [[3 * i, 4] for i in range(4)])
        assert batch.image_ids.tolist() == [100, 101, 102, 103] and batch.ann_ids.tolist() == [200, 201, 202, 203]
        assert batch.scores.tolist() == [0.0, 0.25, 0.5, 0.75]
        assert (batch.targets.dtype, batch.image_ids.dtype) == (torch.float32, torch.int64)


def test_empty_detection_file_is_a_one_line_error(tmp_path):
    _tiny_coco(tmp_path)
    gt = load_coco_instances(tmp_path / "annotations" / "person_keypoints_val2017.json")
    (tmp_path / "dets.json").write_text("[]")
    with pytest.raises(DatasetError, match=r"dets.json: detection file is empty") as err:
        with_detections(gt, tmp_path / "dets.json")
    assert "\n" not in str(err.value)


def test_bad_detections_are_skipped_counted_and_summed_up_in_one_warning(tmp_path):
    _tiny_coco(tmp_path)
    gt = load_coco_instances(tmp_path / "annotations" / "person_keypoints_val2017.json")
    good = {"image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.9}
    dets = [good, {**good, "bbox": [10, 20, float("inf"), 40]}, {**good, "bbox": [1, 2]},
            {k: v for k, v in good.items() if k != "score"}, {**good, "score": "high"},
            {**good, "score": float("nan")}, {**good, "image_id": 999}, {**good, "score": 0.1}, "junk",
            {**good, "bbox": [5, 5, 0, 10]}, {**good, "category_id": 2}, {**good, "bbox": [0, 0, 8, 9], "score": 0.6}]
    (tmp_path / "dets.json").write_text(json.dumps(dets).replace("Infinity", "1e999"))
    with pytest.warns(AnnotationWarning, match=r"dets.json: skipped 7 of 12 detections at fault "
                      r"\(bad_bbox: 3, no_numeric_image_id_or_score: 2, non_finite_score: 1, not_an_object: 1\)"):
        inst = with_detections(gt, tmp_path / "dets.json", score_threshold=0.5)
    np.testing.assert_allclose(inst.boxes_xyxy, [[10, 20, 40, 60], [0, 0, 8, 9]])
    np.testing.assert_allclose(inst.scores, [0.9, 0.6])
    assert inst.skipped["below_threshold"] == 1 and inst.skipped["unknown_image"] == 1
    assert inst.skipped["not_person"] == 1


def test_detections_all_filtered_out_are_one_line_naming_the_counts(tmp_path):
    _tiny_coco(tmp_path)
    gt = load_coco_instances(tmp_path / "annotations" / "person_keypoints_val2017.json")
    dets = [{"image_id": 7, "bbox": [1, 1, 5, 5], "score": 0.9}, {"image_id": 1, "bbox": [1, 1, 5, 5], "score": "nan"}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    with pytest.warns(AnnotationWarning), pytest.raises(DatasetError, match=r"none of its 2 detections is usable "
                                                         r"\(unknown_image: 1, non_finite_score: 1\)") as err:
        with_detections(gt, tmp_path / "dets.json")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(_jpeg_roi is None and not os.environ.get("CI"),   # CI builds it: runs there
                    reason="trainer.data._jpeg_roi not built")
def test_image_cache_gives_the_same_samples_and_mirrors_the_layout(tmp_path):
    """With data.image_cache the training and validation samples are those without it (same
    draws); the copies sit under the cache at the images' relative paths (a relative cache is
    under the data root: the synthetic presets' default); the cache may not be the image folder
    itself (the data root as the cache would make it so)."""
    root = write_coco(tmp_path / "coco", SyntheticSpec(num_train=6, num_val=2, seed=3))
    preset = resolve_config("synthetic-coco", overrides={"data.data_root": str(root)},
                            sets=["model.backbone=resnet10t", "model.input_hw=[128, 96]",
                                  "data.val_image_decode=reduced"])   # (the cache serves reduced only)
    assert build_val_dataset(preset).cache.cache_dir == root / "restart-cache" / "images" / "val2017"
    base = dataclasses.replace(preset, data=dataclasses.replace(preset.data, image_cache=None))
    cached = dataclasses.replace(base, data=dataclasses.replace(base.data, image_cache=str(tmp_path / "cache")))
    for build in (build_train_dataset, build_val_dataset):
        plain, fast = build(base), build(cached)
        assert plain.cache is None and fast.cache is not None
        for i in range(len(plain)):
            a, b = plain[i], fast[i]
            np.testing.assert_array_equal(a.target, b.target)
            np.testing.assert_array_equal(a.image, b.image)
    for split in ("train2017", "val2017"):
        names = {p.name for p in (root / "images" / split).glob("*.jpg")}
        assert names and {p.name for p in (tmp_path / "cache" / "images" / split).glob("*.jpg")} <= names
    assert any((tmp_path / "cache" / "images" / "train2017").iterdir())
    own = dataclasses.replace(base, data=dataclasses.replace(base.data, image_cache=str(root)))
    with pytest.raises(DatasetError, match="data.image_cache is the image folder itself"):
        build_train_dataset(own)   # the data root as the cache: the copies would replace the images
    full = dataclasses.replace(cached, data=dataclasses.replace(cached.data, val_image_decode="full"))
    assert build_val_dataset(full).cache is None   # full decoding reads the originals
