"""The architecture registry and the PoseModel protocol: one class per PoseModelConfig.head, both
architectures satisfy the protocol, and the models package imports without cycles or deferred
imports."""
import ast
import importlib
import sys
from pathlib import Path

import pytest
import torch

from models import PoseModel
from models.build import MODEL_CLASSES, build_model
from models.config import HEADS, coco_config
from models.heatmap import HeatmapPoseModel
from models.pose_model import PoseOutput, RLEPoseModel

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def test_registry_covers_exactly_the_heads_the_config_accepts():
    assert set(MODEL_CLASSES) == set(HEADS)


@pytest.mark.parametrize("head,cls", [("rle", RLEPoseModel), ("heatmap", HeatmapPoseModel)])
def test_build_model_picks_the_class_of_the_head_and_it_is_a_pose_model(head, cls):
    model = build_model(coco_config("resnet10t", input_hw=(64, 48), head=head)).eval()
    assert type(model) is cls and isinstance(model, PoseModel) and isinstance(model, torch.nn.Module)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 48))
    assert isinstance(out, PoseOutput) and out.mu.shape == out.sigma.shape == (2, 17, 2)
    target, weight = torch.zeros(2, 17, 2), torch.ones(2, 17, 2)
    assert torch.isfinite(model.loss(out, target, weight))


def test_an_object_without_loss_is_not_a_pose_model():
    class NoLoss(torch.nn.Module):
        config = coco_config("resnet10t")

        def forward(self, x):
            return x
    assert not isinstance(NoLoss(), PoseModel)


def test_the_models_package_imports_from_scratch_without_a_cycle():
    """Import ``models`` (its __init__ imports the registry, which imports both architectures) and
    every module of it with no models module loaded yet: an import cycle fails here. The test
    session's modules are put back afterwards."""
    saved = {k: v for k, v in sys.modules.items() if k == "models" or k.startswith("models.")}
    for name in saved:
        del sys.modules[name]
    try:
        for path in sorted(MODELS_DIR.glob("*.py")):
            importlib.import_module("models" if path.stem == "__init__" else f"models.{path.stem}")
    finally:
        for name in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_registry_modules_have_no_import_inside_a_function():
    for name in ("build.py", "pose_model.py", "heatmap.py"):
        tree = ast.parse((MODELS_DIR / name).read_text())
        for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            inner = [n for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not inner, f"{name}: {func.name} imports inside its body"
