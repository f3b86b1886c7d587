"""rle_app/detect_torchvision.py: people only, score cut, NMS, boxes in image pixels, torchvision's
pretrained layout, the hash-checked download into the torch hub cache, and the ``auto`` choice."""
import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import detection

from rle_app import detect
from rle_app import detect_torchvision as tv


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache (TORCH_HOME) -> its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def http_dir(tmp_path):
    """A folder served over HTTP on 127.0.0.1 -> (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeModel:
    """Returns fixed COCO detections in input pixels and records what it was given."""

    def __init__(self, boxes, labels, scores):
        self.out = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                    "scores": torch.tensor(scores, dtype=torch.float32)}
        self.inputs = None

    def __call__(self, images):
        self.inputs = images
        return [self.out]


def test_people_only_above_the_score_cut_merged_and_clipped():
    fake = FakeModel(boxes=[[10, 20, 110, 220], [14, 22, 112, 224], [300, 50, 700, 470],   # persons
                            [200, 100, 260, 300], [400, 10, 450, 60]],
                     labels=[1, 1, 1, 3, 1], scores=[0.9, 0.8, 0.7, 0.99, 0.3])
    det = tv.TorchvisionDetector(min_score=0.5, nms_iou=0.5, pretrained=False)
    det.model = fake
    image = np.zeros((480, 640, 3), np.uint8)
    image[..., 0] = 255                                          # red: the model gets RGB in [0, 1]
    dets = det(image)
    assert dets.boxes_xyxy.tolist() == [[10, 20, 110, 220], [300, 50, 640, 470]]   # car, low, overlap gone
    assert dets.scores.tolist() == pytest.approx([0.9, 0.7])
    (x,) = fake.inputs
    assert x.shape == (3, 480, 640) and x.dtype == torch.float32
    assert x[0].min() == 1.0 and x[1:].max() == 0.0


def test_nothing_found_is_empty():
    det = tv.TorchvisionDetector(pretrained=False)
    det.model = FakeModel(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
    dets = det(np.zeros((48, 64, 3), np.uint8))
    assert len(dets) == 0 and dets.boxes_xyxy.shape == (0, 4)


@pytest.mark.parametrize("arch, resized_wh, keep_all", [
    ("ssdlite320_mobilenet_v3_large", (320, 320), {"detections_per_img": 30000}),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", (427, 320), {"box_detections_per_img": 30000})])
def test_random_weights_give_person_boxes_in_image_pixels(arch, resized_wh, keep_all):
    """The model sees the frame resized (``resized_wh``); its boxes come back in the 640x480
    frame's pixels: they reach past the resized size and stay inside the frame."""
    torch.manual_seed(0)
    det = tv.TorchvisionDetector(arch, min_score=0.0, nms_iou=1.0, pretrained=False, **keep_all)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    dets = det(image)
    assert len(dets) > 10
    boxes = dets.boxes_xyxy
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 640).all() and (boxes[:, [1, 3]] <= 480).all()
    assert boxes[:, 2].max() > resized_wh[0] + 50 and boxes[:, 3].max() > resized_wh[1] + 50
    assert (boxes[:, 2:] >= boxes[:, :2]).all()


@pytest.mark.parametrize("arch", ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn"])
def test_our_build_is_torchvision_pretrained_layout(arch, hub_dir):
    """A state dict of ``build_architecture`` loads (strictly) into torchvision's own pretrained
    build, read from the cache under the official file name, and both give the same boxes. (The
    default arch and a frozen-batch-norm one; fasterrcnn_mobilenet_v3_large_fpn shares the 320
    one's builder; fasterrcnn_resnet50_fpn_v2, plain batch norms either way, takes a minute here.)"""
    torch.manual_seed(0)
    ours = tv.build_architecture(arch)
    hub_dir.mkdir(parents=True)
    torch.save(ours.state_dict(), hub_dir / Path(tv.weights_url(arch)).name)
    spec = tv.TORCHVISION_ARCHS[arch]
    theirs = getattr(detection, spec.builder)(weights=getattr(detection, spec.weights_enum).COCO_V1).eval()
    assert set(theirs.state_dict()) == set(ours.state_dict())
    x = [torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(1))]
    with torch.inference_mode():
        a, b = ours(x)[0], theirs(x)[0]
    assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["boxes"], b["boxes"])


def test_download_is_hash_checked_into_the_hub_cache_then_used_offline(hub_dir, http_dir, online):
    folder, base = http_dir
    torch.manual_seed(0)
    weights = tv.build_architecture("ssdlite320_mobilenet_v3_large").state_dict()
    raw = folder / "weights.pth"
    torch.save(weights, raw)
    sha = hashlib.sha256(raw.read_bytes()).hexdigest()
    good, bad = f"ssdlite-{sha[:8]}.pth", f"ssdlite-{'0' if sha[0] != '0' else '1'}{sha[1:8]}.pth"
    for name in (good, bad):
        (folder / name).write_bytes(raw.read_bytes())

    with pytest.raises(detect.DetectorUnavailable) as err:    # file name's hash prefix is wrong
        tv.TorchvisionDetector("ssdlite320_mobilenet_v3_large", weights_url=f"{base}/{bad}").load()
    assert "invalid hash value" in str(err.value) and "\n" not in str(err.value)
    assert not hub_dir.exists() or list(hub_dir.iterdir()) == []          # nothing kept

    det = tv.TorchvisionDetector("ssdlite320_mobilenet_v3_large", weights_url=f"{base}/{good}")
    model = det.load()
    assert sorted(p.name for p in hub_dir.iterdir()) == [good]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    for name in (good, bad):
        (folder / name).unlink()                                           # the server now has nothing
    offline = tv.TorchvisionDetector("ssdlite320_mobilenet_v3_large", weights_url=f"{base}/{good}", download=False)
    assert all(torch.equal(offline.load().state_dict()[k], v) for k, v in weights.items())


def test_offline_without_the_file_is_one_line_naming_url_and_cache_path(hub_dir, online):
    url = f"http://127.0.0.1:{free_port()}/models/ssdlite-a79551df.pth"
    for download in (True, False):
        det = tv.TorchvisionDetector("ssdlite320_mobilenet_v3_large", weights_url=url, download=download)
        with pytest.raises(detect.DetectorUnavailable) as err:
            det(np.zeros((64, 64, 3), np.uint8))
        message = str(err.value)
        assert "\n" not in message and err.value.__cause__ is None
        assert url in message and str(hub_dir / "ssdlite-a79551df.pth") in message
        assert ("unreachable" if download else "--no-download") in message
    assert tv.weights_cache_path(tv.weights_url("ssdlite320_mobilenet_v3_large")) == \
        hub_dir / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"


def test_auto_prefers_torchvision_then_mediapipe_then_full_frame(hub_dir, tmp_path, monkeypatch):
    """$RLE_POSE_OFFLINE is set (tests/conftest.py): neither weight file may be fetched, so no network."""
    monkeypatch.setenv("RLE_POSE_CACHE", str(tmp_path / "rle"))
    monkeypatch.delenv("RLE_POSE_TASK", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network probed"))
    name, notice = detect.resolve_detector("auto", download=True)
    assert name == "full-frame" and "\n" not in notice
    assert "RLE_POSE_OFFLINE" in notice and str(tv.weights_cache_path(tv.weights_url(tv.DEFAULT_ARCH))) in notice

    (tmp_path / "rle").mkdir(exist_ok=True)
    (tmp_path / "rle" / "pose_landmarker_lite.task").write_bytes(b"x")
    name, notice = detect.resolve_detector("auto", download=False)
    assert name == "mediapipe" and "torchvision" in notice and "\n" not in notice

    cached = tv.weights_cache_path(tv.weights_url(tv.DEFAULT_ARCH))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    name, notice = detect.resolve_detector("auto", download=False)
    assert name == "torchvision" and tv.DEFAULT_ARCH in notice and "\n" not in notice
    task = str(tmp_path / "rle" / "pose_landmarker_lite.task")
    assert detect.resolve_detector("auto", detector_model=task)[0] == "mediapipe"
    name, notice = detect.resolve_detector("torchvision")     # explicit: checked and announced too
    assert name == "torchvision" and notice.startswith(f"Detector: torchvision {tv.DEFAULT_ARCH}")


def test_unknown_arch_and_bad_score_are_refused():
    with pytest.raises(ValueError, match="arch 'yolo' unknown; choose one of ssdlite320"):
        detect.build_detector("torchvision", arch="yolo")
    with pytest.raises(ValueError, match=r"min_score must be in \[0, 1\]"):
        detect.build_detector("torchvision", min_score=2.0)
