"""An unreachable hub: one connect attempt, then a one-line BackboneError naming the backbone and
the remedies, before any download (and its retries) starts."""
import socket

import pytest
import timm

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
    monkeypatch.setattr(backbone.socket, "create_connection",
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
    monkeypatch.setattr(backbone.socket, "create_connection", lambda *a, **k: connects.append(a))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone.require_hub("resnet10t")
    create_backbone("resnet10t", pretrained=False)
    assert connects == []
