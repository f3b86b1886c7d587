"""Test-wide settings: offline hubs, quiet Gradio, small thread pools, deterministic seeds."""
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


OFFICIAL_KEYS = Path(__file__).resolve().parent / "data" / "official_rle_state_dicts.json"
OFFICIAL_MASKS = {2: [[0, 1], [1, 0]] * 3, 3: [[0, 0, 1], [1, 1, 0]] * 3}   # by flow width; regression_nf*.py


def official_state_dict(name: str = "coco-laplace-rle.pth", seed: int = 0, mu: np.ndarray | None = None,
                        sigma: float | None = None) -> dict[str, torch.Tensor]:
    """A state dict with exactly the keys and shapes of the official checkpoint ``name`` (from the
    checked-in list in tests/data, read from the official code), filled with seeded random values:
    He-scaled convolutions, BatchNorm statistics near identity, the official flow masks. With ``mu``
    (K, D) and ``sigma`` the heads' weights are zero and their biases give that output for any
    input (u, v[, d] in [-0.5, 0.5]; sigma in (0, 1), after the official sigmoid)."""
    spec = json.loads(OFFICIAL_KEYS.read_text())[name]
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in spec["shapes"].items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "mask":
            value = torch.tensor(OFFICIAL_MASKS[shape[1]], dtype=torch.float32)
        elif leaf == "num_batches_tracked":
            value = torch.tensor(0)
        elif leaf == "running_var":
            value = 0.5 + torch.rand(shape, generator=gen)
        elif leaf in ("running_mean", "bias"):
            value = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 4:                                      # convolutions: He init
            value = torch.randn(shape, generator=gen) * (2.0 / np.prod(shape[1:])) ** 0.5
        elif len(shape) == 1:                                      # BatchNorm weight
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:                                                      # linear layers
            value = 0.05 * torch.randn(shape, generator=gen)
        state[key] = value
    if mu is not None:
        sigma_key = "fc_sigma.linear" if spec["dims"] == 2 else "fc_sigma"
        state["fc_coord.linear.weight"].zero_()
        state["fc_coord.linear.bias"] = torch.as_tensor(np.asarray(mu), dtype=torch.float32).reshape(-1)
        state[f"{sigma_key}.weight"].zero_()
        state[f"{sigma_key}.bias"].fill_(float(np.log(sigma / (1 - sigma))))
    return state


@pytest.fixture(scope="session")
def official_state():
    """``official_state_dict`` above, for tests that write official checkpoints."""
    return official_state_dict


# ---- mmpose's MobileNetV2 (mmpose/models/backbones/mobilenet_v2.py, widen_factor 1.0), with its
# module names: the reference for mmpose checkpoints (tests/models/test_mmpose.py, tests/trainer) ----
class ConvModule(nn.Sequential):
    def __init__(self, cin, cout, k, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if act:
            self.act = nn.ReLU6()


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, ratio):
        super().__init__()
        hidden = cin * ratio
        layers = [ConvModule(cin, hidden, 1)] if ratio != 1 else []
        layers += [ConvModule(hidden, hidden, 3, stride, groups=hidden), ConvModule(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class MMPoseMobileNetV2(nn.Module):
    ARCH = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]

    def __init__(self):
        super().__init__()
        self.conv1 = ConvModule(3, 32, 3, 2)
        cin = 32
        for i, (ratio, cout, blocks, stride) in enumerate(self.ARCH):
            self.add_module(f"layer{i + 1}", nn.Sequential(*[
                InvertedResidual(cin if j == 0 else cout, cout, stride if j == 0 else 1, ratio) for j in range(blocks)]))
            cin = cout
        self.conv2 = ConvModule(320, 1280, 1)

    def forward(self, x):
        x = self.conv1(x)
        for i in range(7):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.conv2(x)


@pytest.fixture(scope="session")
def mmpose_mobilenetv2():
    """``MMPoseMobileNetV2`` above (mmpose's parameter names: conv1.conv, layer1.0.conv.0.conv ...)."""
    return MMPoseMobileNetV2
