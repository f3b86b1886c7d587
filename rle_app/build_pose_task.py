"""Build a MediaPipe PoseLandmarker ``.task`` offline from the mediapipe 0.10.21 wheel.

mediapipe >= 1.0 ships no model files, and Google's model storage may be out of reach (CI,
air-gapped machines). The 0.10.21 wheel (on PyPI) still carries the legacy BlazePose graphs:
``pose_detection.tflite`` (224x224 detector, input in [-1, 1]) and ``pose_landmark_full.tflite``
(256x256 landmark model, input in [0, 1]). The Tasks API needs both with image-input metadata
(normalisation mean/std), zipped uncompressed as ``pose_detector.tflite`` +
``pose_landmarks_detector.tflite``; this script writes that bundle with mediapipe's own metadata
writer and bundle helper.

Usage::

    python -m rle_app.build_pose_task --wheel download --out ~/.cache/rle-pose/pose_landmarker_lite.task
    python -m rle_app.build_pose_task --wheel mediapipe-0.10.21-....whl --out pose.task
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

from models.files import atomic_path

WHEEL_VERSION = "0.10.21"
MEMBERS = {  # bundle name -> (path inside the wheel, input normalisation mean, std)
    "pose_detector.tflite": ("mediapipe/modules/pose_detection/pose_detection.tflite", 127.5, 127.5),
    "pose_landmarks_detector.tflite": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite", 0.0, 255.0),
}
# The minimum metadata-parser version of image-input metadata (general info + normalisation),
# as computed by the 0.10.21 wheel's _pywrap_metadata_version for exactly these two models.
_MIN_PARSER_VERSION = "1.0.0"


def download_wheel(dest_dir: Path) -> Path:
    """``pip download`` the mediapipe 0.10.21 wheel (any platform's; only its .tflite are read)."""
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={WHEEL_VERSION}", "--no-deps",
           "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
           "-d", str(dest_dir), "-q"]
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"build_pose_task: pip download mediapipe=={WHEEL_VERSION} failed; pass --wheel FILE")
    return next(dest_dir.glob("mediapipe-*.whl"))


def _import_metadata_writer():
    """mediapipe's metadata writer; shims the version module that mediapipe >= 1.0 no longer ships."""
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    try:
        __import__(name)
    except ImportError:
        shim = types.ModuleType(name)
        shim.GetMinimumMetadataParserVersion = lambda _buffer: _MIN_PARSER_VERSION
        parts = name.split(".")
        for i in range(3, len(parts)):
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        sys.modules[name] = shim
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, model_asset_bundle_utils
    return metadata_writer, model_asset_bundle_utils


def with_image_metadata(model: bytes, name: str, mean: float, std: float) -> bytes:
    """TFLite model bytes -> the same model carrying RGB image-input metadata (x - mean) / std."""
    metadata_writer, _ = _import_metadata_writer()
    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, "BlazePose graph from the mediapipe 0.10.21 wheel")
    writer.add_image_input(norm_mean=[mean], norm_std=[std])
    model_with_metadata, _json = writer.populate()
    return bytes(model_with_metadata)


def build_task(wheel: Path, out: Path) -> Path:
    """Write the PoseLandmarker bundle built from ``wheel`` to ``out`` (atomically) and return it."""
    _, bundle_utils = _import_metadata_writer()
    with zipfile.ZipFile(wheel) as zf:
        models = {bundle: with_image_metadata(zf.read(member), Path(bundle).stem, mean, std)
                  for bundle, (member, mean, std) in MEMBERS.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        bundle_utils.create_model_asset_bundle(models, str(tmp))  # ZIP_STORED, 4-byte aligned
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True,
                        help=f"mediapipe=={WHEEL_VERSION} wheel file, or 'download' to pip-download it")
    parser.add_argument("--out", required=True, type=Path, help="the .task file to write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(Path(tmp)) if args.wheel == "download" else Path(args.wheel)
        if not wheel.is_file():
            raise SystemExit(f"build_pose_task: --wheel {wheel} does not exist")
        out = build_task(wheel, args.out.expanduser())
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
