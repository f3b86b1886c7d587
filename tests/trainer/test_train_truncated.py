"""Truncated JPEGs in a training set (issue #13, item 12): counted once per run in one warning
line naming them, then trained on as decoded; the count's helper on a mixed data set."""
import json

from trainer.config import resolve_config
from trainer.data.coco import build_train_dataset
from trainer.data.dataset import image_paths, truncated_note
from trainer.data.mpii import MixedDataset
from trainer.data.synthetic import SyntheticSpec, write_coco
from trainer.fit import fit


def _cut(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_training_jpegs_are_counted_once_and_trained_on(tmp_path):
    root = write_coco(tmp_path / "coco", SyntheticSpec(num_train=8, num_val=2, seed=3))
    images = sorted((root / "images" / "train2017").glob("*.jpg"))
    _cut(images[1])
    _cut(images[4], 0.9)
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(root), "out_dir": str(tmp_path / "run"),
                                                      "optim.epochs": 2},
                         sets=["model.backbone=resnet10t", "model.input_hw=[64, 48]", "data.batch_size_per_gpu=4",
                               "data.val_batch_size=8", "optim.milestones=[]", "val_every_epochs=2"])
    lines = []
    result = fit(cfg, max_steps_per_epoch=2, echo=lines.append)
    warnings = [line for line in lines if "truncated JPEGs" in line]
    assert result.epochs_done == 2 and len(warnings) == 1          # two epochs, one warning
    annotations = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())["annotations"]
    used = {a["image_id"] for a in annotations if a["num_keypoints"] > 0 and not a["iscrowd"]}
    assert f"2 of {len(used)} images" in warnings[0] and "trained on as decoded" in warnings[0]
    assert str(images[1]) in warnings[0] and str(images[4]) in warnings[0]


def test_a_mixed_data_set_counts_the_images_of_both_parts(tmp_path):
    parts = []
    for name, seed in (("a", 1), ("b", 2)):
        root = write_coco(tmp_path / name, SyntheticSpec(num_train=3, num_val=1, seed=seed))
        cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(root)},
                             sets=["model.backbone=resnet10t", "model.input_hw=[64, 48]"])
        parts.append(build_train_dataset(cfg))
    mix = MixedDataset(*parts)
    a, b = image_paths(parts[0]), image_paths(parts[1])
    assert image_paths(mix) == a + b and len(a) == len(set(a)) == 3
    assert truncated_note(mix, "trained on") is None
    _cut(b[0])
    note = truncated_note(mix, "trained on")
    assert note.startswith(f"warning: 1 of {len(a) + len(b)} images") and str(b[0]) in note
