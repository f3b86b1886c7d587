"""What a file that ``torch.load`` refused (or should not be given) is, in words: a safetensors
file (read as its state dict), a text file, a legacy (non-zip) pickle naming a foreign global
(found with ``pickletools``, nothing executed), or torch's own reason cut on a word."""
from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Callable
from pathlib import Path

# globals torch's weights-only loader accepts in legacy files (beside torch.*): not named as foreign
LEGACY_ALLOWED = {"collections.OrderedDict", "builtins.set", "builtins.frozenset", "builtins.bytearray",
                  "builtins.slice", "builtins.complex", "__builtin__.set"}


def is_safetensors(path: Path) -> bool:
    """A safetensors file: 8-byte little-endian header length, then a JSON header ('{')."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < path.stat().st_size


def read_safetensors(path: Path, error: type[Exception]) -> dict:
    """The tensors of a safetensors file; ``error`` (one line) if it does not load."""
    try:
        from safetensors.torch import load_file
        return load_file(str(path), device="cpu")
    except ImportError:
        raise error(f"{path}: a safetensors file; pip install safetensors to load it") from None
    except Exception as exc:  # a damaged header or data
        raise error(f"{path}: a safetensors file that does not load ({short_line(str(exc))})") from None


def load_failure(path: Path, exc: Exception, numpy_global: Callable[[str], object]) -> str:
    """Why ``torch.load`` refused ``path``, in words: the foreign pickled global it holds (legacy
    non-zip files; ``numpy_global`` returns None for a name not allow-listed), a text file, or
    torch's reason."""
    foreign = [name for name in _legacy_pickle_globals(path) if numpy_global(name) is None
               and not name.startswith("torch.") and name not in LEGACY_ALLOWED]
    if foreign:
        return (f"holds a pickled '{foreign[0]}', which is not loaded (only tensors, plain data and numpy "
                "arrays are); if you trust the file, re-save its state dict alone with torch.load(f, "
                "weights_only=False) and torch.save")
    with open(path, "rb") as f:
        head = f.read(256)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\0" not in text:
        return f"a text file, not a checkpoint (it starts {short_line(text.strip(), 40)!r})"
    message = str(exc)
    if "WeightsUnpickler error:" in message:   # torch's long weights-only preamble: keep its reason
        message = message.split("WeightsUnpickler error:", 1)[1]
    return f"not a PyTorch checkpoint that loads safely ({short_line(message) or type(exc).__name__})"


def short_line(text: str, limit: int = 120) -> str:
    """The first non-empty line of ``text``, cut at a word boundary to ``limit`` characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " ..."


def _legacy_pickle_globals(path: Path) -> list[str]:
    """'module.name' of each global a non-zip (legacy) torch/pickle file references, read with
    ``pickletools`` (nothing is executed); [] for zip files or unparsable data."""
    if zipfile.is_zipfile(path):
        return []
    names: list[str] = []
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read(1 << 24))
    strings: list[str] = []
    try:
        while stream.tell() < len(stream.getbuffer()) and len(names) < 50:
            for op, arg, _ in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not (or no longer) a pickle stream: what was read is enough
        pass
    return names


