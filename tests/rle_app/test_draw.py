"""rle_app/draw.py: ellipse geometry (numbers and pixels), skeleton colours, thresholds, 3D figure."""
import cv2
import numpy as np
import pytest
from matplotlib.figure import Figure

from models.skeleton import COCO17, H36M18
from rle_app import draw


def _rotated_cov(sigma_major: float, sigma_minor: float, angle_deg: float) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return rot @ np.diag([sigma_major ** 2, sigma_minor ** 2]) @ rot.T


def test_ellipse_radius_is_the_chi2_quantile():
    # chi2(2) cdf is 1 - exp(-r^2 / 2); 39.35 % at r = 1, 86.47 % at r = 2
    assert draw.ellipse_radius(1 - np.exp(-0.5)) == pytest.approx(1.0)
    assert draw.ellipse_radius(1 - np.exp(-2.0)) == pytest.approx(2.0)
    assert draw.ellipse_radius(0.95) == pytest.approx(2.4477, abs=1e-4)
    with pytest.raises(ValueError, match="ellipse_level"):
        draw.ellipse_radius(1.0)


def test_ellipse_params_of_a_rotated_covariance():
    (a, b), angle = draw.ellipse_params(_rotated_cov(8.0, 3.0, 30.0), level=0.6827, scale=1.0)
    r = np.sqrt(-2 * np.log(1 - 0.6827))
    assert (a, b) == pytest.approx((8.0 * r, 3.0 * r), rel=1e-9)
    assert angle == pytest.approx(30.0, abs=1e-9)
    (a2, b2), angle2 = draw.ellipse_params(_rotated_cov(8.0, 3.0, -120.0), level=0.6827, scale=2.0)
    assert (a2, b2) == pytest.approx((16.0 * r, 6.0 * r)) and angle2 == pytest.approx(60.0)


def test_drawn_ellipse_has_the_predicted_moments():
    """Fill one ellipse and recover axes and angle from image moments (uniform ellipse: var = a^2/4)."""
    image = np.zeros((200, 200, 3), np.uint8)
    (a, b), angle = draw.ellipse_params(_rotated_cov(8.0, 3.0, 30.0), level=0.95, scale=2.0)
    cv2.ellipse(image, ((100 * 16), (100 * 16)), (round(a * 16), round(b * 16)), angle, 0, 360, (255, 255, 255),
                -1, cv2.LINE_8, 4)
    m = cv2.moments(image[..., 0], binaryImage=True)
    cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / m["m00"]
    evals, evecs = np.linalg.eigh(cov)
    assert 2 * np.sqrt(evals[1]) == pytest.approx(a, rel=0.03)   # a = 8 * 2.448 * 2 = 39.2 px
    assert 2 * np.sqrt(evals[0]) == pytest.approx(b, rel=0.05)   # b = 14.7 px
    assert np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1])) % 180 == pytest.approx(30.0, abs=1.0)
    assert (m["m10"] / m["m00"], m["m01"] / m["m00"]) == pytest.approx((100.0, 100.0), abs=0.2)


def _one_person(conf_value: float = 0.9):
    kpts = np.array([[[60.0, 40.0], [100.0, 40.0], [60.0, 120.0], [100.0, 120.0]]])
    return kpts, np.full((1, 4), conf_value), [(0, 2), (1, 3), (0, 1)], ["left_shoulder", "right_shoulder",
                                                                         "left_hip", "right_hip"]


def test_skeleton_edges_are_coloured_by_side():
    kpts, conf, edges, names = _one_person()
    out = draw.draw_poses(np.zeros((160, 160, 3), np.uint8), kpts, conf, None, edges, joint_names=names)
    assert tuple(out[80, 60]) == draw.LEFT_RGB      # middle of the left edge (0, 2)
    assert tuple(out[80, 100]) == draw.RIGHT_RGB    # middle of the right edge (1, 3)
    assert tuple(out[40, 80]) == draw.MID_RGB       # shoulder line joins both sides


def test_low_confidence_joints_leave_pixels_untouched():
    kpts, conf, edges, names = _one_person()
    conf[0, 2] = 0.1                                  # left hip below the threshold
    image = np.random.default_rng(0).integers(0, 255, (320, 320, 3), dtype=np.uint8)  # notice: bottom rows
    cov = np.broadcast_to(np.eye(2) * 16.0, (1, 4, 2, 2))
    out = draw.draw_poses(image, kpts, conf, cov, edges, conf_threshold=0.3, joint_names=names)
    assert np.array_equal(out[100:140, 40:80], image[100:140, 40:80])   # around the hidden hip
    assert np.array_equal(out[70:90, 56:64], image[70:90, 56:64])       # its edge is gone too
    assert not np.array_equal(out[110:130, 90:110], image[110:130, 90:110])  # the other hip is drawn
    assert np.array_equal(image, np.random.default_rng(0).integers(0, 255, (320, 320, 3), dtype=np.uint8))


def test_ellipse_size_on_the_canvas_follows_scale():
    kpts = np.array([[[80.0, 80.0]]])
    cov = np.array([[[[100.0, 0.0], [0.0, 100.0]]]])           # sigma 10 px, round
    widths = []
    for scale in (1.0, 2.0):
        out = draw.draw_poses(np.zeros((160, 160, 3), np.uint8), kpts, np.ones((1, 1)), cov, [],
                              ellipse_scale=scale, ellipse_level=0.6827)
        row = out[80, :, :].max(axis=1) > 0
        widths.append(np.ptp(np.flatnonzero(row)))
    r = np.sqrt(-2 * np.log(1 - 0.6827))
    assert widths[0] == pytest.approx(2 * 10 * r, abs=2.0)     # 30.3 px across
    assert widths[1] == pytest.approx(4 * 10 * r, abs=2.0)


def test_boxes_fps_and_legend_are_drawn():
    kpts, conf, edges, names = _one_person()
    image = np.zeros((240, 320, 3), np.uint8)
    out = draw.draw_poses(image, kpts, conf, np.broadcast_to(np.eye(2), (1, 4, 2, 2)), edges,
                          boxes_xyxy=np.array([[50.0, 30.0, 110.0, 130.0]]), fps=29.7, labels=["id 0"])
    assert tuple(out[80, 50]) == draw.BOX_RGB and tuple(out[130, 80]) == draw.BOX_RGB
    assert out[5:25, 5:80].max() > 0       # FPS text
    assert out[220:240, 5:200].max() > 0   # legend line


def test_figure_3d_draws_one_line_per_bone_and_three_error_bars_per_joint():
    joints = np.random.default_rng(1).normal(scale=300.0, size=(H36M18.num_joints, 3))
    sigma = np.full((H36M18.num_joints, 3), 20.0)
    fig = draw.figure_3d(joints, H36M18.edges, sigma, H36M18.joints, title="t")
    assert isinstance(fig, Figure)
    fig.canvas.draw()                                    # projects the 3D segments
    ax = fig.axes[0]
    assert len(ax.lines) == len(H36M18.edges)
    bars = [c for c in ax.collections if hasattr(c, "get_segments")]
    assert len(bars) == 1 and len(bars[0].get_segments()) == 3 * H36M18.num_joints
    up = np.array(ax.lines[0].get_data_3d())[2]          # display z = -camera y (y-up)
    i, j = H36M18.edges[0]
    assert up == pytest.approx([-joints[i, 1], -joints[j, 1]])
    lims = np.array([ax.get_xlim(), ax.get_ylim(), ax.get_zlim()])
    assert np.ptp(lims, axis=1) == pytest.approx(np.full(3, np.ptp(lims[0])))   # equal axes


def test_joint_sides_from_name_prefixes():
    assert draw.joint_sides(COCO17.joints, 17)[[0, 5, 6]].tolist() == [0, 1, -1]
    assert draw.joint_sides(H36M18.joints, 18)[[0, 1, 4]].tolist() == [0, -1, 1]
