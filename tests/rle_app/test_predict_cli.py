"""rle-predict: image, folder (bad files one line each, the run goes on), video (streamed, constant
memory), COCO format, and one-line errors (bad camera, unreadable video, unwritable --out)."""
import json
import tracemalloc

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models import build_model, coco_config
from models.checkpoint import save_checkpoint
from models.predictor import PosePrediction
from rle_app import media
from rle_app import pipeline as pl
from rle_app.predict import Run, coco_results, main, stream_threads


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, build_model(coco_config("resnet18", input_hw=(64, 48))))
    return str(path)


def _args(ckpt, *extra):
    return ["--checkpoint", ckpt, "--detector", "full-frame", "--device", "cpu", "--offline", *extra]


def _clip(path, frames, hw=(120, 160)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, hw[::-1])
    for i in range(frames):
        frame = np.full((*hw, 3), 90, np.uint8)
        frame[50:54, (10 + 3 * i) % 150:(14 + 3 * i) % 150 or 150] = (0, 0, 255)
        writer.write(frame)
    writer.release()
    return path


def test_folder_with_bad_files_goes_on_and_counts_them(tmp_path, tiny_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.jpg"):
        cv2.imwrite(str(src / name), np.random.default_rng(0).integers(0, 255, (80, 60, 3), np.uint8))
    (src / "notes.txt").write_text("not an image")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = CliRunner().invoke(main, [str(src), "--out", str(tmp_path / "out"), *_args(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    bad = [line for line in result.output.splitlines() if "skipped" in line and ":" in line.split()[0]]
    assert sorted(line.split(":")[0] for line in bad) == ["broken.jpg", "notes.txt"]
    assert "2 images done, 2 skipped" in result.output
    doc = json.loads((tmp_path / "out" / "in.json").read_text())
    assert [f["file"] for f in doc["frames"]] == ["a.png", "b.jpg"] and doc["sigma_note"]
    assert len(doc["frames"][0]["people"][0]["keypoints"]) == 17
    assert cv2.imread(str(tmp_path / "out" / "a_pose.jpg")).shape == (80, 60, 3)


def test_coco_format_carries_the_app_keypoints(tmp_path, tiny_checkpoint):
    src = tmp_path / "000000000042.png"
    cv2.imwrite(str(src), np.random.default_rng(1).integers(0, 255, (80, 60, 3), np.uint8))
    runner = CliRunner()
    assert runner.invoke(main, [str(src), "--out", str(tmp_path), "--no-save-media", *_args(tiny_checkpoint)]).exit_code == 0
    assert runner.invoke(main, [str(src), "--out", str(tmp_path), "--format", "coco",
                                *_args(tiny_checkpoint)]).exit_code == 0
    person = json.loads((tmp_path / "000000000042.json").read_text())["frames"][0]["people"][0]
    (res,) = json.loads((tmp_path / "000000000042.coco.json").read_text())
    assert res["image_id"] == 42 and res["category_id"] == 1
    flat = np.asarray(res["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(flat[:, :2], person["keypoints"], atol=1e-3)
    np.testing.assert_allclose(flat[:, 2], person["confidence"], atol=1e-3)
    assert res["score"] == pytest.approx(np.mean(person["confidence"]), abs=1e-4)


def test_video_writes_webm_and_json_per_frame(tmp_path, tiny_checkpoint, monkeypatch):
    clip = _clip(tmp_path / "clip.avi", 7)
    threads = []     # a light model leaves a core to the look-ahead thread (rle_app.predict.stream_threads)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    result = CliRunner().invoke(main, [str(clip), "--out", str(tmp_path / "out"), *_args(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    assert threads == [stream_threads(forward_ms=0.1)]
    doc = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert [f["index"] for f in doc["frames"]] == list(range(7)) and doc["fps"] == pytest.approx(10)
    assert cv2.VideoCapture(str(tmp_path / "out" / "clip_pose.webm")).get(cv2.CAP_PROP_FRAME_COUNT) == 7
    assert not list((tmp_path / "out").glob(".*part*"))           # temporary files moved into place


@pytest.mark.parametrize("args, message", [
    (["7"], "camera 7: cannot open it"),
    (["{garbage}"], "garbage.mp4: cannot read this video"),
    (["{clip}", "--out", "{file}/sub"], "--out"),
])
def test_bad_input_is_one_line(tmp_path, tiny_checkpoint, args, message):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    (tmp_path / "file").write_text("a file where a folder should be")
    paths = dict(garbage=garbage, clip=_clip(tmp_path / "c.avi", 2), file=tmp_path / "file")
    args = [a.format(**paths) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [*args, *out, *_args(tiny_checkpoint)])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and message in errors[0], result.output


class PartReader:
    """Stand-in predictor (box centre for every joint) that, at each frame, counts the records
    already on disk in the streamed JSON's temporary file."""

    def __init__(self, config, folder, name):
        self.config, self.folder, self.name, self.flip, self.seen = config, folder, name, False, []

    def __call__(self, image_rgb, boxes_xyxy, flip=False):
        parts = list(self.folder.glob(f".{self.name}.*.part.json"))       # the temporary file, while written
        self.seen.append(parts[0].read_text().count('"index"') if len(parts) == 1 else -1)
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
        n, k = len(boxes), self.config.num_joints
        kpts = np.repeat(((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None], k, axis=1)
        return PosePrediction(boxes, kpts, np.ones((n, k, 2), np.float32),
                              np.broadcast_to(np.eye(2, dtype=np.float32), (n, k, 2, 2)).copy(),
                              np.ones((n, k), np.float32))


def _peak_bytes(tmp_path, frames):
    clip = _clip(tmp_path / f"long{frames}.avi", frames)
    cfg = coco_config("resnet18", input_hw=(64, 48))
    pipe = pl.PosePipeline(build_model(cfg).eval(), detector="full-frame")
    pipe.predictor = PartReader(cfg, tmp_path / f"out{frames}", f"long{frames}.json")
    (tmp_path / f"out{frames}").mkdir()
    run = Run(pipe, tmp_path / f"out{frames}", "full-frame", save_media=False, fmt="json", track=True,
              echo=lambda line: None)
    cap, fps, count = media.open_video(clip)
    tracemalloc.start()
    n = run.video(cap, fps, count, f"long{frames}", None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == frames and pipe.predictor.seen == list(range(frames))    # record i-1 on disk before frame i
    return peak


def test_long_video_streams_in_constant_memory(tmp_path):
    """Peak traced memory of 400 frames vs 100: kept frames would add 300 * 57.6 kB = 17 MB."""
    short, long = _peak_bytes(tmp_path, 100), _peak_bytes(tmp_path, 400)
    assert long - short < 1_000_000, (short, long)


def test_coco_results_replace_null_joints_with_zero():
    record = {"people": [{"keypoints": [[1.0, 2.0], [None, None]], "confidence": [0.5, None]}]}
    (res,) = coco_results(record, 9)
    assert res["keypoints"] == [1.0, 2.0, 0.5, 0.0, 0.0, 0.0] and res["score"] == pytest.approx(0.25)
