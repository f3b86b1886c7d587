"""Training loop end to end on generated COCO data (tiny ResNet, 64x48): rle / l1 / heatmap runs,
exact resume, the non-finite stop, gradient clipping, rle-eval, and one-line CLI errors."""
import hashlib
import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

from models.checkpoint import load_model, read_checkpoint, save_checkpoint
from models.config import PoseModelConfig
from models.heatmap import HeatmapPoseModel
from models.build import build_model
from models.pose_model import RLEPoseModel
from trainer import engine, fit as fit_module
from trainer.cli import eval_main, train_main
from trainer.config import ConfigError, TrainConfig, resolve_config
from trainer.data.synthetic import SyntheticSpec, write_coco
from trainer.engine import NonFiniteLossError, clip_gradients
from trainer.fit import fit
from trainer.init_from import init_backbone_from

DET = "detections/person_detection_results_val2017.json"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"), SyntheticSpec(num_train=12, num_val=4, seed=7))


def _cfg(root, out, loss="rle", epochs=1, *sets):
    return resolve_config("synthetic-coco", overrides={"data.data_root": str(root), "out_dir": str(out),
                                                       "loss": loss, "optim.epochs": epochs},
                          sets=["model.backbone=resnet10t", "model.input_hw=[64, 48]",
                                "data.batch_size_per_gpu=4", "data.val_batch_size=8",
                                "optim.milestones=[]", "log_every_steps=1", *sets])


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """One short RLE run (1 epoch, 2 steps); its run directory is shared by several tests."""
    out = tmp_path_factory.mktemp("run")
    fit(_cfg(data_root, out), max_steps_per_epoch=2, echo=lambda *_: None)
    return out / "last.pth"


def _check_run(run_dir, loss, cls, steps):
    model = load_model(run_dir / "last.pth")
    assert isinstance(model, cls) and model.config.head == ("heatmap" if loss == "heatmap" else "rle")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    assert all(math.isfinite(r["loss"]) for r in train), train   # finite, logged every step
    epoch = [r for r in lines if r["kind"] == "epoch"][-1]
    assert 0.0 <= epoch["val_AP"] <= 1.0                          # validation ran through evaluate
    stored = read_checkpoint(run_dir / "last.pth")["train_config"]
    assert stored["model"]["head"] == model.config.head and stored["loss"] == loss


def test_rle_run_end_to_end(trained):
    _check_run(trained.parent, "rle", RLEPoseModel, 2)


@pytest.mark.parametrize("loss,cls", [("l1", RLEPoseModel), ("heatmap", HeatmapPoseModel)])
def test_l1_and_heatmap_runs_end_to_end(data_root, tmp_path, loss, cls):
    fit(_cfg(data_root, tmp_path, loss), max_steps_per_epoch=2, echo=lambda *_: None)
    _check_run(tmp_path, loss, cls, 2)
    if loss == "heatmap":   # stage 2: an RLE run --init-from stage 1's best.pth takes the backbone
        lines = []
        fit(_cfg(data_root, tmp_path / "stage2", "rle", 1, f"init_from={tmp_path / 'best.pth'}"),
            max_steps_per_epoch=1, echo=lines.append)
        n = len(build_model(PoseModelConfig(backbone="resnet10t")).backbone.state_dict())
        assert any(f"took {n}/{n} backbone tensors" in line for line in lines), lines


def test_resume_gives_identical_weights(data_root, tmp_path, monkeypatch):
    sets = ("optim.milestones=[1]", "optim.grad_clip_norm=1.0")   # the lr step and clip must carry over
    fit(_cfg(data_root, tmp_path / "a", "rle", 2, *sets), max_steps_per_epoch=1, echo=lambda *_: None)
    real = fit_module.train_one_epoch

    def crash_in_epoch_2(*args, **kwargs):
        if args[4] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(fit_module, "train_one_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(data_root, tmp_path / "b", "rle", 2, *sets), max_steps_per_epoch=1, echo=lambda *_: None)
    monkeypatch.setattr(fit_module, "train_one_epoch", real)
    torch.manual_seed(999)   # resume must restore the RNG itself
    fit(_cfg(data_root, tmp_path / "b", "rle", 2, *sets), resume="auto", max_steps_per_epoch=1,
        echo=lambda *_: None)
    a, b = read_checkpoint(tmp_path / "a" / "last.pth"), read_checkpoint(tmp_path / "b" / "last.pth")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 2)
    assert a["scheduler"] == b["scheduler"] and a["scheduler"]["_last_lr"] == [1e-4]
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_nan_loss_stops_naming_the_step_and_keeps_last_pth(trained, data_root, tmp_path, monkeypatch):
    shutil.copy(trained, tmp_path / "last.pth")                  # after epoch 1, global step 2
    last = tmp_path / "last.pth"
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    real, calls = engine.compute_loss, []

    def nan_on_second(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), terms
    monkeypatch.setattr(engine, "compute_loss", nan_on_second)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2 \(global step 4\)"):
        fit(_cfg(data_root, tmp_path, "rle", 2), resume="auto", max_steps_per_epoch=2, echo=lambda *_: None)
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest
    assert isinstance(load_model(last), RLEPoseModel)


def test_init_from_a_heatmap_checkpoint_takes_every_backbone_tensor(tmp_path):
    heat = build_model(PoseModelConfig(backbone="resnet10t", input_hw=(64, 48), head="heatmap"))
    path = save_checkpoint(tmp_path / "stage1.pth", heat)
    rle = build_model(PoseModelConfig(backbone="resnet10t", input_hw=(64, 48)))
    assert isinstance(rle, RLEPoseModel)
    report = init_backbone_from(rle, str(path))
    n = len(rle.backbone.state_dict())
    assert f"took {n}/{n} backbone tensors" in report and "left" not in report
    for key, value in heat.backbone.state_dict().items():
        assert torch.equal(rle.backbone.state_dict()[key], value), key


def test_per_tensor_and_global_clipping_numbers():
    model = torch.nn.Module()
    model.a, model.b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))

    def clipped(mode):
        model.a.grad, model.b.grad = torch.tensor([3.0, 4.0]), torch.tensor([12.0])   # norms 5, 12
        clip_gradients(model, 6.5, mode)
        return model.a.grad.tolist(), model.b.grad.tolist()
    a, b = clipped("per_tensor")           # each tensor alone: 5 < 6.5 kept, 12 -> 6.5
    assert a == pytest.approx([3.0, 4.0]) and b == pytest.approx([6.5], rel=1e-5)
    a, b = clipped("global")               # total norm 13 -> 6.5: everything halved
    assert a == pytest.approx([1.5, 2.0], rel=1e-5) and b == pytest.approx([6.0], rel=1e-5)


@pytest.mark.parametrize("boxes", ["gt", "det"])
def test_rle_eval_prints_ap_and_writes_metrics(trained, data_root, tmp_path, boxes):
    out = tmp_path / "metrics.json"
    args = ["coco", str(trained), "--data-root", str(data_root), "--out", str(out), "--workers", "0",
            "--device", "cpu", "--batch-size", "8"]
    if boxes == "det":
        args += ["--boxes", str(data_root / DET)]
    result = CliRunner().invoke(eval_main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["AP", "AP50"])
    printed = dict(zip(lines[header].split(), lines[header + 1].split(), strict=True))
    for key in ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50"):
        value = metrics[key]
        # pycocotools gives -1 for an area range without ground truth; anything else is in [0, 1]
        assert math.isfinite(value) and (value == -1 or 0 <= value <= 1), (key, value)
        assert printed[key] == ("-" if value == -1 else f"{100 * value:.1f}"), (key, printed[key], value)
    assert 0 <= metrics["AP"] <= 1 and 0 <= metrics["AR"] <= 1   # the val split has ground truth


def _one_line_error(result):
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.exception
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1 and text.startswith("Error:"), text


def _eval(ckpt, root, *extra):
    return CliRunner().invoke(eval_main, ["coco", str(ckpt), "--data-root", str(root), "--workers", "0",
                                          "--device", "cpu", *extra])


def test_bad_inputs_give_one_line_errors(trained, data_root, tmp_path):
    _one_line_error(_eval(trained, tmp_path / "nowhere"))
    _one_line_error(_eval(tmp_path / "missing.pth", data_root))
    _one_line_error(CliRunner().invoke(train_main, ["coco", "--data-root", str(tmp_path / "nowhere"),
                                                    "--out", str(tmp_path / "r"), "--epochs", "1"]))
    garbled = tmp_path / "garbled"
    (garbled / "annotations").mkdir(parents=True)
    (garbled / "annotations" / "person_keypoints_val2017.json").write_text('{"images": [')
    _one_line_error(_eval(trained, garbled))
    five = PoseModelConfig(backbone="resnet10t", joint_names=("a", "b", "c", "d", "e"), edges=(),
                           flip_pairs=(), input_hw=(64, 48))
    wrong_k = save_checkpoint(tmp_path / "five.pth", build_model(five))
    _one_line_error(_eval(wrong_k, data_root))


def test_missing_images_are_named_before_the_run_with_default_workers(trained, data_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(data_root, root)
    images = sorted((root / "images" / "val2017").glob("*.jpg"))
    for path in images[:2]:
        path.unlink()
    result = CliRunner().invoke(eval_main, ["coco", str(trained), "--data-root", str(root), "--device", "cpu"])
    _one_line_error(result)                      # default --workers 2: no worker traceback
    text = result.output
    assert f"2 of {len(images)} images missing or unreadable" in text and "--data-root" in text
    assert str(images[0]) in text and str(images[1]) in text


def test_empty_detection_file_gives_a_one_line_error(trained, data_root, tmp_path):
    empty = tmp_path / "empty_dets.json"
    empty.write_text("[]")
    _one_line_error(_eval(trained, data_root, "--boxes", str(empty)))


@pytest.mark.parametrize("option", ["--loss", "--head"])
def test_loss_option_and_its_old_name_reach_the_config(tmp_path, monkeypatch, option):
    seen = []
    monkeypatch.setattr(fit_module, "fit", lambda cfg, **_: seen.append(cfg) or fit_module.FitResult(tmp_path, 0, None, None))
    result = CliRunner().invoke(train_main, ["coco", "--data-root", str(tmp_path), "--out", str(tmp_path / "r"),
                                             option, "heatmap"])
    assert result.exit_code == 0, result.output
    assert (seen[0].loss, seen[0].model.head) == ("heatmap", "heatmap")
    warned = "warning: --head is renamed --loss; use --loss heatmap" in result.output
    assert warned == (option == "--head")


def test_fit_refuses_a_model_head_the_loss_does_not_train(tmp_path):
    with pytest.raises(ConfigError, match="model.head 'rle' does not fit loss 'heatmap'"):
        fit(TrainConfig(loss="heatmap", out_dir=str(tmp_path)))
    assert not any(tmp_path.iterdir())
