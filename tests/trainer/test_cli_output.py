"""What rle-train prints: metrics as rle-eval prints them, presets with what they are for."""
from click.testing import CliRunner

from trainer.cli import train_main
from trainer.config import PRESET_DIR, list_presets
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
