import numpy as np
import torch
from torch import nn

from models import geometry
from models.config import coco_config, h36m_config
from models.build import build_model
from models.pose_model import PoseOutput
from models.predictor import Predictor, crops_for_boxes, decode, forward_with_flip


def _crop_maps_by_hand(boxes, cfg) -> np.ndarray:
    """Image px -> crop px (N, 2, 3), written out from the rule, not from models.geometry: the box's
    shorter side grown to the crop's aspect w/h, both sides x box_factor; the box centre goes to the
    crop centre, the top-middle to the crop's top-middle, the left-middle to its left-middle. The
    affine through those three point pairs is solved directly."""
    out_h, out_w = cfg.input_hw
    mats = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64):
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        w, h = (w, w * out_h / out_w) if w * out_h > h * out_w else (h * out_w / out_h, h)
        w, h = w * cfg.box_factor, h * cfg.box_factor
        src = np.array([[cx, cy, 1], [cx, cy - h / 2, 1], [cx - w / 2, cy, 1]])
        dst = np.array([[out_w / 2, out_h / 2], [out_w / 2, 0], [0, out_h / 2]])
        mats.append(np.linalg.solve(src, dst).T)
    return np.array(mats)


def _targets_through_crop(keypoints_px, boxes, cfg):
    """Keypoints (N, K, 2) px -> normalised crop coordinates [-0.5, 0.5], and the hand-made maps."""
    out_h, out_w = cfg.input_hw
    mats = _crop_maps_by_hand(boxes, cfg)
    crop = np.einsum("nij,nkj->nki", mats[:, :, :2], keypoints_px) + mats[:, None, :, 2]
    return crop / [out_w, out_h] - 0.5, mats


def test_keypoint_at_known_pixel_round_trips_within_0_01_px():
    cfg = coco_config("resnet18")
    rng = np.random.default_rng(1)
    boxes = np.array([[37.3, 52.9, 211.4, 398.0], [600.0, 400.0, 639.0, 479.0], [5, 5, 9, 8]])
    kps = np.stack([rng.uniform(b[:2], b[2:], size=(17, 2)) for b in boxes])
    image = np.zeros((480, 640, 3), np.uint8)
    image[int(kps[0, 0, 1]), int(kps[0, 0, 0])] = 255
    crops, mats = crops_for_boxes(image, boxes, cfg)
    target, mats_ref = _targets_through_crop(kps, boxes, cfg)
    np.testing.assert_allclose(mats, mats_ref, rtol=1e-9, atol=1e-9)
    # the marked pixel shows up in the crop where the target says
    ys, xs = np.nonzero(crops[0, ..., 0])
    found = geometry.crop_to_norm(np.array([xs.mean(), ys.mean()]), cfg.input_hw)
    np.testing.assert_allclose(found, target[0, 0], atol=1.5 / 192)
    out = PoseOutput(torch.tensor(target, dtype=torch.float32), torch.full((3, 17, 2), 0.1))
    pred = decode(out, mats, cfg, boxes)
    assert np.abs(pred.keypoints - kps).max() < 0.01
    assert pred.keypoints.shape == (3, 17, 2) and pred.covariance_px.shape == (3, 17, 2, 2)
    np.testing.assert_allclose(pred.confidence, 0.9, rtol=1e-6)


def test_sigma_in_pixels_scales_with_the_box():
    cfg = coco_config("resnet18")
    boxes = np.array([[0, 0, 192, 256], [0, 0, 96, 128]], np.float64)  # crop scale 1/1.25 and 1/0.625
    _, mats = _targets_through_crop(np.zeros((2, 17, 2)), boxes, cfg)
    out = PoseOutput(torch.zeros(2, 17, 2), torch.full((2, 17, 2), 0.01))
    pred = decode(out, mats, cfg, boxes)
    np.testing.assert_allclose(pred.sigma[0, 0], [0.01 * 192 * 1.25, 0.01 * 256 * 1.25], rtol=1e-5)
    np.testing.assert_allclose(pred.sigma[1], pred.sigma[0] / 2, rtol=1e-5)


def test_predictor_batches_zero_border_and_tiny_boxes():
    model = build_model(coco_config("resnet18", input_hw=(64, 48)))
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    pred = Predictor(model)(np.zeros((100, 80, 3), np.uint8),
                            np.array([[-20, -20, 30, 40], [70, 90, 80, 100], [10, 10, 10.5, 10.5]]))
    assert calls == [3] and pred.keypoints.shape == (3, 17, 2)
    assert np.isfinite(pred.keypoints).all() and np.isfinite(pred.covariance_px).all()
    empty = Predictor(model)(np.zeros((100, 80, 3), np.uint8), np.zeros((0, 4)))
    assert len(empty) == 0 and empty.keypoints.shape == (0, 17, 2)


def test_3d_prediction_has_depth_in_mm():
    cfg = h36m_config("resnet18")
    boxes = np.array([[0, 0, 256, 256]], np.float64)
    _, mats = _targets_through_crop(np.zeros((1, 18, 2)), boxes, cfg)
    mu = torch.zeros(1, 18, 3)
    mu[0, 3, 2] = 0.1
    pred = decode(PoseOutput(mu, torch.full((1, 18, 3), 0.05)), mats, cfg, boxes)
    assert pred.keypoints.shape == (1, 18, 3)
    assert abs(pred.keypoints[0, 3, 2] - 200.0) < 1e-4 and abs(pred.sigma[0, 0, 2] - 100.0) < 1e-4


class _CentroidModel(nn.Module):
    """A stand-in whose u is the intensity centroid of the input: exactly flip-consistent under the
    official shift (-u - 1/W), so the flip-averaged output must equal the plain one."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        img = x.float().mean(1)
        n, h, w = img.shape
        xs = torch.arange(w, dtype=torch.float32)
        u = (img.sum(1) * xs).sum(1) / img.sum((1, 2)) / w - 0.5
        v = torch.zeros_like(u)
        mu = torch.stack([u, v], -1)[:, None].repeat(1, self.config.num_joints, 1)
        sigma = torch.linspace(0.1, 0.2, self.config.num_joints)[None, :, None].repeat(n, 1, 2)
        return PoseOutput(mu, sigma)


def test_flip_average_is_consistent_with_the_one_pixel_shift():
    cfg = coco_config("resnet18", input_hw=(32, 24))
    model = _CentroidModel(cfg)
    x = torch.rand(3, 3, 32, 24)
    plain, flipped = forward_with_flip(model, x, False), forward_with_flip(model, x, True)
    torch.testing.assert_close(flipped.mu, plain.mu)
    # sigma of the mirrored pass is swapped left/right before averaging
    expected = (plain.sigma + plain.sigma[:, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]]) / 2
    torch.testing.assert_close(flipped.sigma, expected)


def test_prediction_carries_the_crop_size_at_the_models_aspect():
    cfg = coco_config("resnet18", input_hw=(64, 48))            # W/H = 0.75, box factor 1.25
    model = build_model(cfg)
    boxes = np.array([[10.0, 20.0, 40.0, 100.0], [0.0, 0.0, 90.0, 60.0]])   # tall 30x80, wide 90x60
    pred = Predictor(model)(np.zeros((120, 160, 3), np.uint8), boxes)
    # tall box: height kept, width = 80 * 0.75; wide box: width kept, height = 90 / 0.75
    np.testing.assert_allclose(pred.crop_wh_px, [[60 * 1.25, 80 * 1.25], [90 * 1.25, 120 * 1.25]], rtol=1e-6)


def test_flip_is_chosen_per_call_without_changing_the_default():
    model = build_model(coco_config("resnet18", input_hw=(64, 48))).eval()
    image = np.random.default_rng(0).integers(0, 255, (100, 80, 3), np.uint8)
    boxes = np.array([[10.0, 5.0, 60.0, 95.0]])
    plain, flipping = Predictor(model, flip=False), Predictor(model, flip=True)
    with_flip = plain(image, boxes, flip=True)
    np.testing.assert_allclose(with_flip.keypoints, flipping(image, boxes).keypoints, atol=1e-5)
    np.testing.assert_allclose(flipping(image, boxes, flip=False).keypoints, plain(image, boxes).keypoints, atol=1e-5)
    assert plain.flip is False and flipping.flip is True
    assert np.abs(with_flip.keypoints - plain(image, boxes).keypoints).max() > 1e-3   # the flip did something
