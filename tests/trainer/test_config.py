"""TrainConfig: precedence of the layers, strict errors, type conversion, presets."""
from __future__ import annotations

import json

import pytest
import yaml

from trainer.config import ConfigError, TrainConfig, list_presets, resolve_config


def _write(tmp_path, text: str, name: str = "run.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_follow_the_reference():
    cfg = resolve_config()
    assert cfg.optim.lr == 1e-3 and cfg.optim.epochs == 270 and cfg.optim.milestones == (170, 200)
    assert cfg.seed == 123123 and cfg.model.input_hw == (256, 192) and cfg.model.box_factor == 1.25
    assert cfg.augment.scale_factor == 0.25 and cfg.augment.rot_factor == 45
    assert cfg.augment.half_body_prob == 0.3 and cfg.augment.zero_weight_outside is False


def test_precedence_preset_file_options_set(tmp_path):
    path = _write(tmp_path, "optim:\n  lr: 2e-3\n  epochs: 10\n  milestones: [5]\nseed: 1\n")
    cfg = resolve_config("synthetic-coco", path, {"seed": 2, "optim.lr": None}, [])
    assert cfg.model.backbone == "resnet10t"          # from the preset
    assert cfg.optim.lr == 2e-3                        # file; None option ignored
    assert isinstance(cfg.optim.lr, float)             # PyYAML read "2e-3" as a string
    assert cfg.seed == 2                               # option beats file
    cfg = resolve_config("synthetic-coco", path, {"seed": 2}, ["seed=3", "optim.lr=1e-4"])
    assert cfg.seed == 3 and cfg.optim.lr == 1e-4      # --set beats all


def test_unknown_key_names_file_and_suggests(tmp_path):
    path = _write(tmp_path, "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        resolve_config(None, path, {}, [])
    message = str(err.value)
    assert "\n" not in message and path in message and "did you mean 'optim.lr'" in message
    with pytest.raises(ConfigError, match=r"--set augment.flip_prb=0.1.*augment.flip_prob"):
        resolve_config(sets=["augment.flip_prb=0.1"])
    with pytest.raises(ConfigError, match="did you mean '256x192_res50_regress-flow'"):
        resolve_config("256x192_res50_regres-flow")


@pytest.mark.parametrize("item, pattern", [
    ("optim.milestones=[100, 50]", "optim.milestones"),
    ("optim.milestones=[300]", "< optim.epochs"),
    ("optim.lr=0", "--set optim.lr=0: must be > 0"),
    ("optim.lr=fast", "expected float"),
    ("amp=bf17", "did you mean 'bf16'"),
    ("channels_last=maybe", "expected bool"),
    ("data.workers=1.5", "expected int"),
    ("model.input_hw=[256]", "expected 2 values"),
])
def test_bad_values_fail_in_one_line(item, pattern):
    with pytest.raises(ConfigError, match=pattern) as err:
        resolve_config(sets=[item])
    assert "\n" not in str(err.value)


def test_conversions():
    cfg = resolve_config(sets=["channels_last=on", "compile=false", "optim.grad_clip_norm=35",
                               "model.input_hw=[128, 96]", "init_from=none", "data.workers=2"])
    assert cfg.channels_last is True and cfg.compile is False
    assert cfg.optim.grad_clip_norm == 35.0 and isinstance(cfg.optim.grad_clip_norm, float)
    assert cfg.model.input_hw == (128, 96) and cfg.init_from is None and cfg.data.workers == 2


def test_dataset_picks_the_model_base():
    cfg = resolve_config(sets=["data.dataset=h36m"])
    assert cfg.model.dims == 3 and cfg.model.num_joints == 18 and cfg.model.box_factor == 1.0


def test_round_trip_through_json():
    cfg = resolve_config("256x192_res50_3d_h36mmpii-flow", sets=["optim.lr=5e-4"])
    data = json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(data) == cfg
    data["optim"]["lrr"] = 1
    with pytest.raises(ConfigError, match="optim.lrr"):
        TrainConfig.from_dict(data)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(None, _write(tmp_path, "optim: [1,\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_config(None, str(tmp_path / "nope.yaml"))


def test_every_preset_loads():
    names = list_presets()
    assert {"256x192_res50_regress-flow", "256x192_res50_heatmap-pretrain",
            "256x192_res50_regress-flow-finetune", "256x192_res50_3d_h36mmpii-flow",
            "synthetic-coco", "synthetic-h36m"} <= set(names)
    for name in names:
        assert isinstance(resolve_config(name), TrainConfig)


def test_presets_match_the_reference():
    coco = resolve_config("256x192_res50_regress-flow")
    assert (coco.data.batch_size_per_gpu, coco.optim.epochs, coco.optim.milestones) == (32, 270, (170, 200))
    h36m = resolve_config("256x192_res50_3d_h36mmpii-flow")
    assert h36m.model.input_hw == (256, 256) and h36m.model.box_factor == 1.0
    assert (h36m.optim.epochs, h36m.optim.milestones) == (200, (90, 120))
    assert (h36m.optim.grad_clip_norm, h36m.optim.grad_clip_mode) == (35.0, "per_tensor")
    assert (h36m.augment.scale_factor, h36m.augment.rot_factor, h36m.augment.rot_prob) == (0.3, 30, 0.6)
    assert h36m.augment.color_factor == 0.2 and h36m.augment.occlusion and h36m.augment.zero_weight_outside
    pre = resolve_config("256x192_res50_heatmap-pretrain")
    assert (pre.loss, pre.model.head, pre.optim.epochs, pre.optim.milestones) == ("heatmap", "heatmap", 140, (90, 120))
    assert resolve_config("256x192_res50_regress-flow-finetune").init_from


def test_epochs_option_scales_the_presets_milestones_unless_they_are_given(tmp_path):
    paper = resolve_config("256x192_res50_regress-flow", overrides={"optim.epochs": 27})
    assert paper.optim.epochs == 27 and paper.optim.milestones == (17, 20)
    assert resolve_config("synthetic-coco", overrides={"optim.epochs": 2}).optim.milestones == (1,)
    assert resolve_config("synthetic-coco", overrides={"optim.epochs": 1}).optim.milestones == ()
    assert resolve_config("synthetic-coco", sets=["optim.epochs=6"]).optim.milestones == (4,)
    same = resolve_config("256x192_res50_regress-flow", overrides={"optim.epochs": 270})
    assert same.optim.milestones == (170, 200)
    given = resolve_config("synthetic-coco", overrides={"optim.epochs": 10}, sets=["optim.milestones=[9]"])
    assert given.optim.milestones == (9,)
    path = _write(tmp_path, "optim:\n  epochs: 100\n  milestones: [50, 75]\n")
    assert resolve_config(None, path, {"optim.epochs": 10}).optim.milestones == (5, 8)
    assert resolve_config(None, path).optim.milestones == (50, 75)   # the file alone: as written
    with pytest.raises(ConfigError, match="< optim.epochs"):           # a file's own mistake stays one
        resolve_config(None, _write(tmp_path, "optim:\n  epochs: 10\n  milestones: [50]\n"))


@pytest.mark.parametrize("loss,head", [("rle", "rle"), ("l1", "rle"), ("heatmap", "heatmap")])
def test_the_loss_picks_the_model_architecture(loss, head):
    cfg = resolve_config(overrides={"loss": loss})
    assert (cfg.loss, cfg.model.head) == (loss, head)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("loss", ["l1", "heatmap"])
def test_stored_configs_with_the_old_head_key_still_load(tmp_path, loss):
    cfg = resolve_config("synthetic-coco", overrides={"loss": loss})
    old = cfg.to_dict()
    old = {("head" if k == "loss" else k): v for k, v in old.items()}   # as written before the rename
    assert "loss" not in old and old["head"] == loss
    assert TrainConfig.from_dict(old) == cfg                            # a checkpoint's train_config
    run_yaml = _write(tmp_path, yaml.safe_dump(old, sort_keys=False), "config.yaml")
    assert resolve_config(config_file=run_yaml) == cfg                  # a run folder's config.yaml


def test_a_model_head_that_contradicts_the_loss_fails_in_one_line():
    with pytest.raises(ConfigError, match=r"model.head 'heatmap' \(--set model.head=heatmap\) contradicts "
                       r"loss 'l1' \(option loss\)") as err:
        resolve_config(overrides={"loss": "l1"}, sets=["model.head=heatmap"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"loss 'heatmap' \(option loss\) trains model.head 'heatmap'.*2D only"):
        resolve_config(overrides={"loss": "heatmap", "data.dataset": "h36m"})
    assert resolve_config(overrides={"loss": "heatmap"}, sets=["model.head=heatmap"]).model.head == "heatmap"
