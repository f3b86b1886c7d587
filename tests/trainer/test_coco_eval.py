"""COCO keypoint evaluation against hand-computed OKS and pycocotools' own computeOks."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from models.skeleton import COCO17, COCO_OKS_SIGMAS
from trainer.metrics.coco_eval import (CocoKeypointMetrics, evaluate_coco, instance_score, load_coco_gt,
                                       oks, oks_matrix, oks_nms, oks_nms_by_image, to_coco_results)

K = 17


def _person(rng, x, y, w, h, invisible=()):
    """(K, 3) keypoints inside the box, v=2 except the listed joints (v=0, coordinates 0)."""
    kpts = np.zeros((K, 3))
    kpts[:, 0] = np.round(x + rng.uniform(0.1, 0.9, K) * w, 2)
    kpts[:, 1] = np.round(y + rng.uniform(0.1, 0.9, K) * h, 2)
    kpts[:, 2] = 2
    kpts[list(invisible)] = 0
    return kpts


@pytest.fixture
def coco_gt(tmp_path):
    """3 images: image 1 two people, image 2 one person + a crowd region, image 3 one person."""
    rng = np.random.default_rng(1)
    people = [  # image_id, box, area, invisible joints
        (1, (50, 40, 120, 260), 20000.0, (3, 4)),
        (1, (300, 60, 60, 110), 5000.0, ()),  # medium (area < 96²)
        (2, (100, 100, 150, 300), 30000.0, (15, 16)),
        (3, (80, 50, 140, 280), 25000.0, ()),
    ]
    anns, gts = [], {}
    for ann_id, (image_id, box, area, invisible) in enumerate(people, start=1):
        kpts = _person(rng, *box, invisible=invisible)
        gts[ann_id] = kpts
        anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": area,
                     "bbox": list(box), "num_keypoints": int((kpts[:, 2] > 0).sum()),
                     "keypoints": kpts.reshape(-1).tolist()})
    anns.append({"id": 99, "image_id": 2, "category_id": 1, "iscrowd": 1, "area": 4000.0,
                 "bbox": [400, 300, 80, 60], "num_keypoints": 0, "keypoints": [0] * (3 * K),
                 "segmentation": {"counts": [0], "size": [480, 640]}})
    dataset = {"images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i:012d}.jpg"} for i in (1, 2, 3)],
               "annotations": anns,
               "categories": [{"id": 1, "name": "person", "supercategory": "person",
                               "keypoints": list(COCO17.joints), "skeleton": []}]}
    path = tmp_path / "person_keypoints_tiny.json"
    path.write_text(json.dumps(dataset))
    return path, people, gts


def _results_for(people, gts, offset=(0.0, 0.0)):
    ids = [p[0] for p in people]
    kpts = np.stack([gts[i + 1][:, :2] for i in range(len(people))]) + np.asarray(offset)
    conf = np.full((len(people), K), 0.9)
    return to_coco_results(ids, kpts, conf, instance_score(conf))


def _hand_oks(pred_xy, gt, area):
    """OKS as the COCO keypoint docs write it: mean over v>0 of exp(-d² / (2 s² k²)), s² = area, k = 2σ."""
    terms = []
    for j in range(K):
        if gt[j, 2] > 0:
            d2 = (pred_xy[j][0] - gt[j, 0]) ** 2 + (pred_xy[j][1] - gt[j, 1]) ** 2
            k = 2 * COCO_OKS_SIGMAS[j]
            terms.append(math.exp(-d2 / (2 * area * k * k)))
    return sum(terms) / len(terms)


def test_perfect_predictions_give_ap_one(coco_gt):
    path, people, gts = coco_gt
    metrics = evaluate_coco(path, _results_for(people, gts))
    assert isinstance(metrics, CocoKeypointMetrics)
    for name in ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"):
        assert metrics.to_dict()[name] == pytest.approx(1.0), name
    assert "AP50" in metrics.format_table() and "100.0" in metrics.format_table()


def test_offset_oks_matches_hand_formula_and_pycocotools(coco_gt):
    path, people, gts = coco_gt
    results = _results_for(people, gts, offset=(3.0, -4.0))  # every joint 5 px off
    gt_kpts = np.stack([gts[i] for i in (3,)] + [np.zeros((K, 3))])  # image 2: person 3 + crowd
    areas = np.array([30000.0, 4000.0])
    boxes = np.array([[100, 100, 150, 300], [400, 300, 80, 60]], dtype=float)
    pred = np.array(results[2]["keypoints"]).reshape(K, 3)
    matrix = oks_matrix(pred[None], gt_kpts, areas, gt_boxes_xywh=boxes)
    assert matrix[0, 0] == pytest.approx(_hand_oks(pred, gts[3], 30000.0), abs=1e-12)
    assert oks(pred, gts[3], 30000.0) == pytest.approx(matrix[0, 0], abs=1e-15)

    near_crowd = np.stack([np.linspace(300, 580, K), np.linspace(230, 430, K)], axis=1)  # partly outside 2x box
    results.append(to_coco_results([2], near_crowd[None], np.full((1, K), 0.5), np.array([0.1]))[0])
    people = people + [(2, None, None, None)]
    coco = load_coco_gt(path)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes([dict(r) for r in results]), "keypoints")
        ev.evaluate()
    for image_id in (1, 2):
        idx = [n for n, p in enumerate(people) if p[0] == image_id]  # equal scores: stable order
        gt_anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        ours = oks_matrix(np.stack([np.array(results[n]["keypoints"]).reshape(K, 3) for n in idx]),
                          np.stack([np.array(a["keypoints"], float).reshape(K, 3) for a in gt_anns]),
                          np.array([a["area"] for a in gt_anns]), gt_boxes_xywh=np.array([a["bbox"] for a in gt_anns]))
        np.testing.assert_allclose(ours, ev.ious[(image_id, 1)], rtol=0, atol=1e-12)
    assert 0.05 < ev.ious[(2, 1)][1, 1] < 0.95  # the crowd's box-distance branch is exercised


def test_ap_on_one_image_counts_thresholds_below_oks(coco_gt, tmp_path):
    path, people, gts = coco_gt
    results = _results_for(people, gts, offset=(6.0, 8.0))  # 10 px off
    expected_oks = _hand_oks(np.array(results[3]["keypoints"]).reshape(K, 3), gts[4], 25000.0)
    thresholds = np.linspace(0.5, 0.95, 10)
    assert np.min(np.abs(thresholds - expected_oks)) > 0.005  # test data not on a threshold
    out = tmp_path / "results.json"
    metrics = evaluate_coco(path, results, image_ids=[3], results_path=out)
    assert metrics.ap == pytest.approx(np.mean(thresholds <= expected_oks))
    assert metrics.ap50 == pytest.approx(1.0)
    assert json.loads(out.read_text()) == [results[3]]  # written after filtering to image 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["person_keypoints_tiny.json", "results.json"]
    assert results[3]["keypoints"] and "bbox" not in results[3]  # caller's results not modified


def test_empty_or_foreign_results_raise_one_line_errors(coco_gt):
    path, people, gts = coco_gt
    with pytest.raises(ValueError, match="no results"):
        evaluate_coco(path, [])
    with pytest.raises(ValueError, match="no results"):
        evaluate_coco(path, _results_for(people, gts)[:1], image_ids=[3])
    foreign = _results_for(people, gts)
    foreign[0]["image_id"] = 777
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(path, foreign)


def test_oks_nms_removes_near_duplicate_keeps_distinct_person():
    rng = np.random.default_rng(0)
    a = rng.uniform(100, 200, (K, 2))
    near = a + 0.5
    far = a + 150.0
    kpts = np.stack([near, a, far])
    areas = np.array([9000.0, 10000.0, 10000.0])
    assert oks_nms(kpts, np.array([0.8, 0.9, 0.7]), areas).tolist() == [1, 2]
    assert oks_nms(kpts, np.array([0.95, 0.9, 0.7]), areas).tolist() == [0, 2]
    # the pair's OKS by hand, with the official mean of the two areas: a threshold above it keeps all
    d2 = 0.5 ** 2 * 2
    pair = np.mean(np.exp(-d2 / (2 * COCO_OKS_SIGMAS) ** 2 / ((9000.0 + 10000.0) / 2) / 2))
    assert oks_nms(kpts, np.array([0.8, 0.9, 0.7]), areas, threshold=pair + 1e-9).tolist() == [1, 0, 2]
    assert oks_nms(kpts, np.array([0.8, 0.9, 0.7]), areas, threshold=pair - 1e-9).tolist() == [1, 2]
    by_image = oks_nms_by_image(np.array([5, 5, 6]), kpts[[0, 1, 1]], np.array([0.8, 0.9, 0.7]), areas)
    assert by_image.tolist() == [1, 2]  # the duplicate on another image is not suppressed


def test_instance_score_and_results_format():
    conf = np.array([[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]])
    np.testing.assert_allclose(instance_score(conf, np.array([0.5, 0.1])), [0.5 + 0.4 + 0.6, 0.1 + 0.5 + 1.0])
    np.testing.assert_allclose(instance_score(conf), [1.0, 1.5])
    kpts = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], dtype=np.float32)
    res = to_coco_results(np.array([42]), kpts, conf[:1], np.array([1.25]), boxes_xywh=np.array([[1, 2, 3, 4]]))
    assert res == [{"image_id": 42, "category_id": 1, "keypoints": [1.0, 2.0, 0.2, 3.0, 4.0, 0.4, 5.0, 6.0, 0.6],
                    "score": 1.25, "bbox": [1.0, 2.0, 3.0, 4.0]}]
    assert all(type(v) is float for v in res[0]["keypoints"]) and type(res[0]["image_id"]) is int
    json.dumps(res)


def test_oks_without_visible_joints_needs_a_box():
    with pytest.raises(ValueError, match="gt_boxes_xywh"):
        oks_matrix(np.zeros((1, K, 2)), np.zeros((1, K, 3)), np.array([100.0]))
