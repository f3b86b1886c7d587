"""The GPU code paths, run on the CPU: bf16 autocast (CPU autocast) with the flow and the loss in
fp32, channels_last inputs, and ``torch.compile`` of a tiny model (resnet10t, 64x48). Each gives
finite losses and a checkpoint that loads and predicts like the eager model (mu, fp32 eval)."""
import json
import math
import types

import pytest
import torch

from models.build import build_model
from models.checkpoint import load_model, read_checkpoint
from models.config import PoseModelConfig
from models.pose_model import RLEPoseModel
from trainer.config import resolve_config
from trainer.data.synthetic import SyntheticSpec, write_coco
from trainer.engine import Runtime, compute_loss, setup_runtime, train_one_epoch
from trainer.fit import fit

CFG = PoseModelConfig(backbone="resnet10t", input_hw=(64, 48))


def _batches(n: int, seed: int = 0) -> list:
    """``n`` PoseBatch-like batches of 4 random uint8 crops with targets inside the crop."""
    gen = torch.Generator().manual_seed(seed)
    return [types.SimpleNamespace(images=torch.randint(0, 256, (4, 3, 64, 48), dtype=torch.uint8, generator=gen),
                                  targets=(torch.rand(4, 17, 2, generator=gen) - 0.5) * 0.6,
                                  weights=torch.ones(4, 17, 2)) for _ in range(n)]


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(CFG)


def test_bf16_step_keeps_flow_and_loss_fp32_and_feeds_channels_last(monkeypatch):
    model = _model()
    seen = {}

    def before(_module, args):
        seen.setdefault("backbone_in", args[0])

    def after(_module, _args, out):
        seen.setdefault("features", out.dtype)
    model.backbone.register_forward_pre_hook(before)
    model.backbone.register_forward_hook(after)
    flow, real_log_prob = model.criterion.flow2d, model.criterion.flow2d.log_prob

    def recording_log_prob(x):
        out = real_log_prob(x)
        seen.setdefault("flow", (x.dtype, out.dtype))
        return out
    monkeypatch.setattr(flow, "log_prob", recording_log_prob)
    rt = Runtime(torch.device("cpu"), amp_dtype=torch.bfloat16, channels_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    stats, step = train_one_epoch(model, _batches(2), optimizer, rt, epoch=1, step=0)
    assert step == 2 and math.isfinite(stats["loss"])
    assert seen["backbone_in"].is_contiguous(memory_format=torch.channels_last)   # channels_last reached the net
    assert not seen["backbone_in"].is_contiguous()
    assert seen["features"] == torch.bfloat16            # autocast was on for the backbone ...
    assert seen["flow"] == (torch.float32, torch.float32)  # ... and off for the flow
    loss, terms = compute_loss(model, "rle", _batches(1)[0].images, _batches(1)[0].targets,
                               _batches(1)[0].weights, rt)
    assert loss.dtype == terms["nf"].dtype == terms["log_q"].dtype == torch.float32
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())   # master weights stay fp32


def test_bf16_loss_is_close_to_the_fp32_loss():
    """The same weights and batch: bf16 autocast changes the loss by bf16 rounding only."""
    model, batch = _model(), _batches(1, seed=5)[0]
    model.train()
    values = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        rt = Runtime(torch.device("cpu"), amp_dtype=dtype, channels_last=dtype is not None)
        images = batch.images.contiguous(memory_format=torch.channels_last) if rt.channels_last else batch.images
        torch.manual_seed(0)
        values[name] = compute_loss(model, "rle", images, batch.targets, batch.weights, rt)[0].item()
    assert math.isfinite(values["fp32"])
    assert values["bf16"] != values["fp32"]                 # autocast really changed the arithmetic
    assert values["bf16"] == pytest.approx(values["fp32"], rel=0.05, abs=0.5)


def test_setup_runtime_reads_amp_and_keeps_channels_last_for_cuda():
    rt = setup_runtime("cpu", "bf16", True)
    assert (rt.amp_dtype, rt.channels_last, rt.world_size, rt.is_main) == (torch.bfloat16, False, 1, True)
    assert setup_runtime("cpu", "auto", True).amp_dtype is None      # auto: fp32 on the CPU
    assert setup_runtime("cpu", "off", True).amp_dtype is None


def test_fit_with_compile_and_bf16_saves_a_checkpoint_that_predicts_like_eager(tmp_path, monkeypatch):
    """``compile=true`` and ``amp=bf16`` through ``fit`` (the trainer's own torch.compile call):
    finite logged losses, a checkpoint without ``_orig_mod.`` keys, and the compiled module's mu in
    fp32 eval equal to the loaded checkpoint's eager mu (< 1e-3). One tiny model; the first run
    compiles for about a minute on 2 cores (inductor's cache makes later runs seconds)."""
    root = write_coco(tmp_path / "coco", SyntheticSpec(num_train=8, num_val=3, seed=4))
    cfg = resolve_config("synthetic-coco", overrides={"data.data_root": str(root), "out_dir": str(tmp_path / "run"),
                                                      "optim.epochs": 1},
                         sets=["model.backbone=resnet10t", "model.input_hw=[64, 48]", "data.batch_size_per_gpu=4",
                               "optim.milestones=[]", "log_every_steps=1", "compile=true", "amp=bf16",
                               "data.image_decode=full"])
    compiled, real_compile = [], torch.compile

    def recording_compile(module, *args, **kwargs):
        compiled.append(real_compile(module, *args, **kwargs))
        return compiled[-1]
    monkeypatch.setattr(torch, "compile", recording_compile)
    fit(cfg, max_steps_per_epoch=2, echo=lambda *_: None)
    assert len(compiled) == 1 and isinstance(compiled[0]._orig_mod, RLEPoseModel)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(math.isfinite(r["loss"]) for r in train)
    ckpt = read_checkpoint(tmp_path / "run" / "last.pth")
    assert ckpt["train_config"]["compile"] is True and ckpt["train_config"]["amp"] == "bf16"
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])
    loaded = load_model(tmp_path / "run" / "last.pth")
    images = _batches(1, seed=3)[0].images
    compiled[0].eval()
    with torch.no_grad():
        mu_compiled, mu_eager = compiled[0](images).mu, loaded(images).mu
    assert mu_compiled.dtype == mu_eager.dtype == torch.float32
    assert (mu_compiled - mu_eager).abs().max().item() < 1e-3
