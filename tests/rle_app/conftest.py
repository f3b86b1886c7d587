"""Fixtures of the app tests: a huge-dimension image that is small on disk, and a recorder of
what PIL decodes."""
import struct
import zlib

import pytest
from PIL import ImageFile


def write_flat_png(path, width: int, height: int) -> None:
    """A valid all-black RGB PNG of any size, compressed row by row (a few hundred KB on disk at
    13000 x 13000, never the whole image in memory)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    comp, row, parts = zlib.compressobj(9), bytes(1 + 3 * width), []
    for _ in range(height):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def huge_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    write_flat_png(path, 13000, 13000)
    return path


@pytest.fixture
def decoded_sizes(monkeypatch):
    """Sizes (w, h) of every image PIL decodes from a file while the test runs (any thread)."""
    sizes, real_load = [], ImageFile.ImageFile.load

    def load(self):
        sizes.append(self.size)
        return real_load(self)
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return sizes
