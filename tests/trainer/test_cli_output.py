"""What rle-train and rle-eval print: metrics as rle-eval prints them, presets with what they are
for, bad values as typed, missing data before any model, a progress bar that ends full."""
import json

import pytest
from click.testing import CliRunner

from models.build import build_model
from models.checkpoint import save_checkpoint
from models.config import PoseModelConfig
from trainer import engine
from trainer import fit as fit_module
from trainer.cli import eval_main, train_main
from trainer.config import PRESET_DIR, ConfigError, list_presets, resolve_config
from trainer.data.synthetic import SyntheticSpec, write_coco
from trainer.fit import format_metric


def test_metrics_read_like_rle_eval():
    assert format_metric("AP", 7.756058301432656e-05) == "val AP 0.0 %"
    assert format_metric("AP", 0.7234) == "val AP 72.3 %"        # rle-eval's table: percent, 1 decimal
    assert format_metric("MPJPE", 48.26) == "val MPJPE 48.3 mm"
    assert format_metric("AP", None) == "val AP n/a"


def test_list_presets_says_what_each_is_for():
    out = CliRunner().invoke(train_main, ["coco", "--list-presets"]).output.splitlines()
    assert [line.split()[0] for line in out] == list_presets()
    for line in out:
        name, summary = line.split(maxsplit=1)
        header = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        assert summary[:12] == header[:12]                           # the header's own words


def _error_line(result) -> str:
    """The one line a failed command prints (exit code 1, no traceback)."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("args, line", [
    (["--epochs", "0"], "Error: --epochs 0: must be at least 1"),
    (["--batch-size", "0"], "Error: --batch-size 0: must be at least 1"),
    (["--set", "optim.gamma=2"], "Error: --set optim.gamma=2: must be in (0, 1]"),
])
def test_a_bad_value_is_said_as_typed(tmp_path, args, line):
    result = CliRunner().invoke(train_main, ["coco", "--synthetic", "--data-root", str(tmp_path / "d"),
                                             "--out", str(tmp_path / "r"), *args])
    assert _error_line(result) == line
    assert not (tmp_path / "d").exists()                     # refused before any data is written


def test_a_bad_value_in_a_config_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  epochs: 0\n")
    with pytest.raises(ConfigError) as err:
        resolve_config("synthetic-coco", str(path))
    assert str(err.value) == f"config file {path}: optim.epochs 0: must be at least 1"


def _no_hub(monkeypatch):
    """Any build of a model (and so any fetch of pretrained weights) fails the test."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was built before the data root was checked")
    monkeypatch.setattr(fit_module, "build_model", refuse)


@pytest.mark.parametrize("how", ["--data-root", "--set", "preset"])
def test_missing_training_data_is_said_first_as_given(tmp_path, monkeypatch, how):
    _no_hub(monkeypatch)
    missing = tmp_path / "nowhere"
    given = {"--data-root": ["--data-root", str(missing)], "--set": ["--set", f"data.data_root={missing}"],
             "preset": []}[how]
    monkeypatch.chdir(tmp_path)                              # the preset's data/coco: not there either
    line = _error_line(CliRunner().invoke(train_main, ["coco", "--out", str(tmp_path / "r"), *given]))
    expected = {"--data-root": f"Error: --data-root {missing}: no such folder",
                "--set": f"Error: --set data.data_root={missing}: no such folder",
                "preset": "Error: data.data_root data/coco (of the preset or config file): no such folder"}[how]
    assert line.startswith(expected + "; give the folder holding annotations/ and images/"), line
    assert "pretrained" not in line and "hub" not in line


def test_missing_annotations_are_said_before_the_model(tmp_path, monkeypatch):
    _no_hub(monkeypatch)
    (tmp_path / "coco").mkdir()
    line = _error_line(CliRunner().invoke(train_main, ["coco", "--data-root", str(tmp_path / "coco"),
                                                       "--out", str(tmp_path / "r")]))
    assert "annotations/person_keypoints_train2017.json" in line and "pretrained" not in line, line


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    model = build_model(PoseModelConfig(backbone="resnet10t", input_hw=(64, 48)))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", model)


@pytest.mark.parametrize("layout", ["none", "no images"])
def test_rle_eval_names_data_root_as_typed(tmp_path, tiny_ckpt, layout):
    root = tmp_path / "coco"
    if layout == "no images":
        (root / "annotations").mkdir(parents=True)
        (root / "annotations" / "person_keypoints_val2017.json").write_text("{}")
    line = _error_line(CliRunner().invoke(eval_main, ["coco", str(tiny_ckpt), "--data-root", str(root)]))
    problem = "no such folder" if layout == "none" else "images/val2017 not found in it"
    assert line == (f"Error: --data-root {root}: {problem}; give the folder holding "
                    "annotations/person_keypoints_val2017.json and images/val2017/ (--data-root DIR)")


class _RecordingBar(engine.tqdm):
    """tqdm that records each training bar's (count, total) when it closes."""
    closed: list = []

    def close(self):
        if str(self.desc).startswith("epoch") and not getattr(self, "recorded", False):   # (closed twice)
            self.recorded = True
            _RecordingBar.closed.append((self.n, self.total))
        super().close()


@pytest.mark.parametrize("max_steps", [2, 100])
def test_the_progress_bar_ends_full_with_max_steps(tmp_path, monkeypatch, max_steps):
    monkeypatch.setattr(engine, "tqdm", _RecordingBar)
    monkeypatch.setattr(_RecordingBar, "closed", [])
    root = write_coco(tmp_path / "d", SyntheticSpec(num_train=12, num_val=2, seed=3))
    result = CliRunner().invoke(train_main, [
        "coco", "--preset", "synthetic-coco", "--data-root", str(root), "--out", str(tmp_path / "r"),
        "--epochs", "2", "--batch-size", "4", "--max-steps", str(max_steps), "--set", "model.input_hw=[64,48]",
        "--set", "optim.milestones=[]", "--set", "data.image_cache=none"])
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if r["kind"] == "epoch"]           # global step after each epoch
    ran = [steps[0], steps[1] - steps[0]]                               # steps each epoch really took
    assert _RecordingBar.closed == [(n, n) for n in ran]               # each bar ended full
    assert (ran[0] == 2) if max_steps == 2 else (2 < ran[0] < 100)     # cut short / a whole epoch
