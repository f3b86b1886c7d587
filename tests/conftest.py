"""Test-wide settings: offline hubs, quiet Gradio, small thread pools, deterministic seeds."""
import json
import os
import socket
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["RLE_POSE_OFFLINE"] = "1"      # the app never tries the network; zoo tests unset it

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(2)


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}


@pytest.fixture(autouse=True)
def _no_external_network(monkeypatch):
    """Tests reach only this machine (127.0.0.1): a name lookup or connection to any other host
    fails at once with OSError (as offline) and fails the test, so no test can leak traffic."""
    attempts = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if host is not None and str(host) not in LOCAL_HOSTS:
            attempts.append(str(host))
            raise socket.gaierror(f"tests: no external network ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in LOCAL_HOSTS:
            attempts.append(str(address[0]))
            raise OSError(f"tests: no external network ({address[0]})")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert not attempts, f"the test tried to reach {sorted(set(attempts))}"


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


REAL_COCO = Path(__file__).resolve().parent / "data" / "real" / "coco"


def real_coco_people(min_keypoints: int = 0) -> list[tuple[Path, np.ndarray]]:
    """The real COCO val2017 photos of tests/data/real (source note there), in file-name order ->
    (path, person boxes xyxy px (M, 4) float64): the annotated non-crowd people with a box over 1 px
    and at least ``min_keypoints`` labelled keypoints."""
    coco = json.loads((REAL_COCO / "test_coco.json").read_text())
    photos = []
    for im in sorted(coco["images"], key=lambda im: im["file_name"]):
        boxes = [[x, y, x + w, y + h] for a in coco["annotations"] if a["image_id"] == im["id"]
                 and not a["iscrowd"] and a["num_keypoints"] >= min_keypoints
                 for x, y, w, h in [a["bbox"]] if w > 1 and h > 1]
        photos.append((REAL_COCO / im["file_name"], np.array(boxes, np.float64).reshape(-1, 4)))
    return photos


@pytest.fixture(scope="session")
def real_coco():
    """``real_coco_people`` above."""
    return real_coco_people


@pytest.fixture(scope="session")
def official_state():
    """``official_state_dict`` above, for tests that write official checkpoints."""
    return official_state_dict


class FileServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``files`` (path -> bytes); ``mode[path]`` may be
    "truncate" (Content-Length of the whole file, then half the body and a closed connection) or
    "404". ``hits[path]`` counts the requests. ``url(path)`` is the address of a path."""

    def __init__(self):
        import http.server
        import threading
        self.files, self.mode, self.hits = {}, {}, {}
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                server_self.hits[path] = server_self.hits.get(path, 0) + 1
                body = server_self.files.get(path)
                if body is None or server_self.mode.get(path) == "404":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server_self.mode.get(path) == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed for this test ($RLE_POSE_OFFLINE unset): only for tests whose network is a
    server on 127.0.0.1 or a patched ``urlopen``."""
    monkeypatch.delenv("RLE_POSE_OFFLINE", raising=False)


@pytest.fixture
def file_server():
    """A local HTTP file server (``FileServer``); no external traffic."""
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def closed_port_url():
    """An http URL on 127.0.0.1 whose port nothing listens on (an unreachable host, offline)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone.pth"


@pytest.fixture
def zoo_cache(tmp_path, monkeypatch):
    """An empty download cache for this test ($RLE_POSE_CACHE), network allowed (RLE_POSE_OFFLINE unset)."""
    monkeypatch.setenv("RLE_POSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RLE_POSE_OFFLINE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def serve_zoo(file_server, zoo_cache, monkeypatch):
    """``serve_zoo(name, payload, sha256="auto", drive=False)``: point the zoo entry ``name`` at the
    local file server holding ``payload`` (bytes). ``sha256="auto"``: the payload's first 8 hex
    digits (as OpenMMLab names its files); ``drive=True``: keep the Drive id and send gdown to the
    local server through ``models.files.DRIVE_URL``. Returns the entry as patched."""
    import dataclasses
    import hashlib

    from models import files, zoo

    def serve(name, payload: bytes, sha256="auto", drive=False):
        entry = zoo.ZOO[name]
        if drive:
            monkeypatch.setattr(files, "DRIVE_URL", file_server.url("/drive/{id}"))
            file_server.files[f"/drive/{entry.drive_id}"] = payload
            new = dataclasses.replace(entry, sha256=None)
        else:
            path = f"/zoo/{entry.file_name}"
            file_server.files[path] = payload
            digest = hashlib.sha256(payload).hexdigest()[:8] if sha256 == "auto" else sha256
            new = dataclasses.replace(entry, url=file_server.url(path), drive_id=None, sha256=digest)
        monkeypatch.setitem(zoo.ZOO, name, new)
        return new
    return serve


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


def mmpose_flow_state(flow: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """mmpose's RLE flow (``RealNVP``: ``loc``/``cov`` of its standard-normal prior, ``mask`` (6, 2),
    ``s``/``t`` nets 2-64-64-2) under the key prefix ``flow``, seeded random weights."""
    state = {flow + "loc": torch.zeros(2), flow + "cov": torch.eye(2),
             flow + "mask": torch.tensor([[0, 1], [1, 0]] * 3, dtype=torch.float32)}
    for net in ("s", "t"):
        for i in range(6):
            for j, shape in ((0, (64, 2)), (2, (64, 64)), (4, (2, 64))):
                state[f"{flow}{net}.{i}.{j}.weight"] = 0.3 * torch.randn(shape, generator=gen)
                state[f"{flow}{net}.{i}.{j}.bias"] = 0.1 * torch.randn(shape[0], generator=gen)
    return state


@pytest.fixture(scope="session")
def mmpose_flow():
    """``mmpose_flow_state`` above."""
    return mmpose_flow_state


@pytest.fixture(scope="session")
def mmpose_mobilenetv2():
    """``MMPoseMobileNetV2`` above (mmpose's parameter names: conv1.conv, layer1.0.conv.0.conv ...)."""
    return MMPoseMobileNetV2
