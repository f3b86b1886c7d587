"""An unreachable hub: one connect attempt, then a one-line BackboneError naming the backbone and
the remedies, before any download (and its retries) starts."""
import socket

import pytest
import timm
import torch

from models import backbone
from models.backbone import BackboneError, create_backbone, weights_host


def _closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_fails_at_once_in_one_line(monkeypatch):
    port = _closed_port()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    connects, creates = [], []
    real_connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda *a, **k: connects.append(a[0]) or real_connect(*a, **k))
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: creates.append(a))
    assert weights_host("resnet10t") == ("127.0.0.1", port)
    with pytest.raises(BackboneError) as err:
        create_backbone("resnet10t", pretrained=True)
    text = str(err.value)
    assert "\n" not in text and "'resnet10t'" in text and f"127.0.0.1:{port} is unreachable" in text
    assert "HF_HUB_OFFLINE=1" in text and "--no-pretrained" in text and "--init-from" in text
    assert connects == [("127.0.0.1", port)]   # one attempt, no retries
    assert creates == []                       # no download was started


def test_offline_mode_and_no_weights_skip_the_check(monkeypatch):
    connects = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone.require_hub("resnet10t")
    create_backbone("resnet10t", pretrained=False)
    assert connects == []


def test_unreachable_hub_with_cached_weights_loads_them_without_a_download(monkeypatch, tmp_path):
    """The weights in the local Hugging Face cache (the hub's own layout) and the hub unreachable:
    the backbone is built from the cached file, with no download attempt."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    reference = timm.create_model("resnet10t", pretrained=False, num_classes=0, global_pool="avg")
    repo = tmp_path / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(reference.state_dict(), str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    downloads = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: downloads.append(a))
    model = create_backbone("resnet10t", pretrained=True)
    assert downloads == []
    for (key, mine), (_, theirs) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(mine, theirs), key
