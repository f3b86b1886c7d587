"""``rle-export``: a checkpoint (file, URL or zoo name) -> an ONNX graph, checked against torch.

    rle-export rle-r50-coco --out rle-r50-coco.onnx [--input-dtype uint8|float32]

The graph (``models/export.py``): input ``crops`` (N, 3, H, W) RGB, uint8 or float32 in [0, 1],
normalisation inside; outputs ``mu``, ``sigma`` (N, K, D) in the normalised crop frame. Not needed
for ``--backend onnxruntime``, which exports and caches by itself.
"""
from __future__ import annotations

import click

from trainer.cli import one_line_errors


@click.command(help="Export CKPT (a file, an http(s) URL or a zoo name) to ONNX: RGB crops in (normalisation "
               "inside the graph, dynamic batch), mu and sigma in the normalised crop frame out; checked "
               "against torch (max |diff| < 1e-4).")
@click.argument("checkpoint")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@click.option("--input-dtype", type=click.Choice(["uint8", "float32"]), default="uint8", show_default=True,
              help="uint8: crops 0..255; float32: crops in [0, 1].")
@one_line_errors
def main(checkpoint, out_path, input_dtype) -> None:
    from pathlib import Path
    from models.checkpoint import load_model
    from models.export import export_onnx
    out = Path(out_path)
    if not out.parent.is_dir():
        raise click.ClickException(f"--out {out_path}: folder {out.parent} does not exist; create it first")
    report = export_onnx(load_model(checkpoint), out, input_dtype)
    click.echo(f"wrote {report.path} ({report.path.stat().st_size / 2**20:.1f} MiB, {report.seconds:.1f} s); "
               f"ONNX Runtime vs torch max |diff|: mu {report.max_diff_mu:.1e}, sigma {report.max_diff_sigma:.1e}")


if __name__ == "__main__":
    main()
