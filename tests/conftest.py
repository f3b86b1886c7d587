"""Test-wide settings: offline hubs, quiet Gradio, small thread pools, deterministic seeds."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def _official_layout(model):
    """Re-key a project state dict into the official layout, from the documented key names only."""
    dims = model.config.dims
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            out["preact." + key[len("backbone."):]] = value
        elif key.startswith("head.coord."):
            out["fc_coord.linear." + key[len("head.coord."):]] = value
        elif key.startswith("head.sigma."):
            prefix = "fc_sigma.linear." if dims == 2 else "fc_sigma."
            out[prefix + key[len("head.sigma."):]] = value
        elif key.startswith("criterion.flow2d."):
            prefix = "flow." if dims == 2 else "flow2d."
            out[prefix + key[len("criterion.flow2d."):]] = value
        elif key.startswith("criterion.flow3d."):
            out["flow3d." + key[len("criterion.flow3d."):]] = value
    return out


@pytest.fixture(scope="session")
def official_layout():
    """The re-keying function above, for tests that write official-layout checkpoints."""
    return _official_layout
