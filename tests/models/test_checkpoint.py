import math

import pytest
import torch
import torchvision

from models.checkpoint import CheckpointError, load_model, save_checkpoint
from models.config import coco_config
from models.build import build_model


def _same_outputs(a, b, shape):
    x = torch.rand(*shape)
    with torch.no_grad():
        oa, ob = a.eval()(x), b.eval()(x)
    torch.testing.assert_close(oa.mu, ob.mu, rtol=0, atol=0)
    torch.testing.assert_close(oa.sigma, ob.sigma, rtol=0, atol=0)


def test_project_round_trip_gives_identical_outputs(tmp_path):
    model = build_model(coco_config("resnet18", input_hw=(64, 48)))
    path = save_checkpoint(tmp_path / "m.pth", model, epoch=3)
    loaded = load_model(path)
    assert loaded.config == model.config
    _same_outputs(model, loaded, (2, 3, 64, 48))
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away


OFFICIAL = {2: "coco-laplace-rle.pth", 3: "h36m-laplace-rle.pth"}
MEAN_RGB, STD_RGB = torch.tensor([0.406, 0.457, 0.480]), torch.tensor([0.225, 0.224, 0.229])


def _official_outputs(state: dict, images01: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official RegressFlow / RegressFlow3D forward, written out from the official code with
    torchvision's ResNet-50 as the backbone (it has the official backbone's parameter names):
    2D input ``x - mean`` (no std), 3D ``(x - mean) / std``; mu = f W^T / |f| + b, sigma =
    sigmoid(f Ws^T + bs) (+ 1e-9 in 3D); in 3D, depth made root-relative (root = joint 0)."""
    net = torchvision.models.resnet50()
    missing, unexpected = net.load_state_dict(
        {k[len("preact."):]: v for k, v in state.items() if k.startswith("preact.")}, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    net.fc = torch.nn.Identity()
    x = images01 - MEAN_RGB.view(1, 3, 1, 1)
    if dims == 3:
        x = x / STD_RGB.view(1, 3, 1, 1)
    with torch.no_grad():
        f = net.eval()(x)
    n = f.shape[0]
    mu = (f @ state["fc_coord.linear.weight"].T) / f.norm(dim=1, keepdim=True) + state["fc_coord.linear.bias"]
    sigma_key = "fc_sigma.linear" if dims == 2 else "fc_sigma"
    sigma = torch.sigmoid(f @ state[f"{sigma_key}.weight"].T + state[f"{sigma_key}.bias"]).reshape(n, -1, dims)
    mu = mu.reshape(n, -1, dims)
    if dims == 3:
        sigma = sigma + 1e-9
        mu[:, :, 2] -= mu[:, :1, 2].clone()
    return mu, sigma


def _official_log_prob(state: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """The official RealNVP.log_prob (layers/real_nvp.py) on the state's tensors: layers in reverse,
    z = (1 - m)(z - t(m z)) exp(-s(m z)) + m z, log det -= sum(s), plus the standard normal prior."""
    def net(kind, i, h, last_tanh):
        for j in (0, 2, 4):
            h = h @ state[f"{prefix}.{kind}.{i}.{j}.weight"].T + state[f"{prefix}.{kind}.{i}.{j}.bias"]
            if j < 4:
                h = torch.nn.functional.leaky_relu(h)
        return torch.tanh(h) if last_tanh else h
    masks, z, log_det = state[f"{prefix}.mask"], x, torch.zeros(x.shape[0])
    for i in reversed(range(len(masks))):
        m = masks[i]
        s, t = net("s", i, m * z, True) * (1 - m), net("t", i, m * z, False) * (1 - m)
        z = (1 - m) * (z - t) * torch.exp(-s) + m * z
        log_det -= s.sum(dim=1)
    prior = -0.5 * (z ** 2).sum(dim=1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return prior + log_det


@pytest.mark.parametrize("dims", [2, 3])
def test_official_checkpoint_predicts_what_the_official_model_computes(tmp_path, dims, official_state):
    state = official_state(OFFICIAL[dims], seed=dims)
    torch.save(state, tmp_path / OFFICIAL[dims])
    loaded = load_model(tmp_path / OFFICIAL[dims]).eval()
    assert loaded.config.dims == dims and loaded.config.backbone == "resnet50"
    assert loaded.config.source == f"official:{OFFICIAL[dims]}"
    assert loaded.config.input_hw == ((256, 192) if dims == 2 else (256, 256))
    assert loaded.config.box_factor == (1.25 if dims == 2 else 1.0)
    images = torch.rand(2, 3, *loaded.config.input_hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = loaded(images)
    mu, sigma = _official_outputs(state, images, dims)
    assert mu.std() > 1e-3 and 0.01 < sigma.mean() < 0.99        # not a degenerate comparison
    torch.testing.assert_close(out.mu, mu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.sigma, sigma, rtol=1e-4, atol=1e-6)
    # the flows: the loss's log density equals the official RealNVP's on the same tensors
    flows = {"flow": loaded.criterion.flow2d} if dims == 2 else {
        "flow2d": loaded.criterion.flow2d, "flow3d": loaded.criterion.flow3d}
    for prefix, flow in flows.items():
        x = torch.randn(64, state[f"{prefix}.mask"].shape[1], generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            torch.testing.assert_close(flow.log_prob(x), _official_log_prob(state, prefix, x), rtol=1e-5, atol=1e-5)


def test_ddp_prefix_and_wrapped_state_dict_load(tmp_path, official_state):
    plain = official_state()
    torch.save(plain, tmp_path / "plain.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in plain.items()}}, tmp_path / "wrapped.pth")
    a, b = load_model(tmp_path / "plain.pth"), load_model(tmp_path / "wrapped.pth")
    assert b.config.backbone == "resnet50"
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_bad_files_give_one_line_errors(tmp_path, official_state):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match=r"text.pth: a text file, not a checkpoint \(it starts 'hello'\)$"):
        load_model(tmp_path / "text.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="neither an rle-pose checkpoint nor an official"):
        load_model(tmp_path / "foreign.pth")
    state = official_state()
    del state["fc_sigma.linear.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "broken.pth")
    assert "missing head.sigma.bias" in str(info.value) and "unexpected extra.weight" in str(info.value)
    assert "\n" not in str(info.value)


def test_shape_mismatch_is_named(tmp_path, official_state):
    state = official_state()
    state["fc_sigma.linear.weight"] = torch.zeros(34, 10)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="fc_sigma|head.sigma.weight has shape"):
        load_model(tmp_path / "shape.pth")


def _project_file(tmp_path, name, **changes):
    model = build_model(coco_config("resnet18", input_hw=(64, 48)))
    payload = {"format": "rle-pose", "format_version": 1, "config": model.config.to_dict(),
               "model": model.state_dict()}
    payload.update(changes)
    payload = {k: v for k, v in payload.items() if v is not None}
    torch.save(payload, tmp_path / name)
    return tmp_path / name, model


@pytest.mark.parametrize("name,change,message", [
    ("unknown_key", lambda c, s: {"config": {**c, "lens": 35}}, r"its model config does not load \(unknown .*lens"),
    ("dims5", lambda c, s: {"config": {**c, "dims": 5}}, r"its model config does not load \(dims must be 2 or 3, got 5\)"),
    ("future", lambda c, s: {"config": {**c, "dims": 5}, "format_version": 2}, r"written by a newer rle-pose \(format version 2\)"),
    ("no_config", lambda c, s: {"config": None}, r"without its model config \('config' missing\)"),
    ("list_config", lambda c, s: {"config": [1, 2]}, r"'config' is not a mapping"),
    ("float_weights", lambda c, s: {"model": {k: 1.0 for k in s}}, r"backbone\.\S+ is a float, not a tensor"),
    ("list_model", lambda c, s: {"model": [1, 2]}, r"'model' is not a state dict"),
])
def test_crafted_project_checkpoints_give_one_line_errors(tmp_path, name, change, message):
    model = build_model(coco_config("resnet18", input_hw=(64, 48)))
    path, _ = _project_file(tmp_path, f"{name}.pth", **change(model.config.to_dict(), model.state_dict()))
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


class _Runs:
    """Pickles as a call to print: loading it without weights_only would run it."""

    def __reduce__(self):
        return (print, ("ran code",))


def test_a_legacy_pickle_names_its_blocked_global_and_runs_nothing(tmp_path, capsys):
    import pickle
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps({"model": _Runs()}, protocol=4))
    with pytest.raises(CheckpointError, match=r"legacy.pth: holds a pickled 'builtins.print', which is not loaded"):
        load_model(path)
    assert "ran code" not in capsys.readouterr().out


def test_a_cut_error_message_ends_on_a_word():
    from models.file_kinds import short_line as _short
    assert _short("\n  first line here\nsecond", 12) == "first line ..."
    assert _short("Weights only load failed because of reasons", 30) == "Weights only load failed ..."
    assert _short("short", 30) == "short"


def test_a_safetensors_file_with_a_pth_name_is_read_as_its_state_dict(tmp_path, official_state):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state = official_state()
    torch.save(state, tmp_path / "official.pth")
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "renamed.pth"))
    _same_outputs(load_model(tmp_path / "official.pth"), load_model(tmp_path / "renamed.pth"), (1, 3, 256, 192))
