"""``rle-train`` and ``rle-eval``: parse, resolve the config, call. Nothing else lives here."""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import click

# rle-train's options by the config key they set (errors name a value as the user typed it)
OPTION_NAMES = {"data.data_root": "--data-root", "model.backbone": "--backbone", "optim.epochs": "--epochs",
                "data.batch_size_per_gpu": "--batch-size", "optim.lr": "--lr", "data.workers": "--workers",
                "device": "--device", "out_dir": "--out", "seed": "--seed", "init_from": "--init-from",
                "loss": "--loss", "pretrained": "--pretrained", "data.image_cache": "--image-cache"}
DEFAULT_PRESETS = {"coco": "256x192_res50_regress-flow", "h36m": "256x192_res50_3d_h36mmpii-flow"}
SYNTHETIC_PRESETS = {"coco": "synthetic-coco", "h36m": "synthetic-h36m"}


def one_line_errors(fn):
    """Turn the project's own errors into one-line click errors (exit code 1), never tracebacks."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from models.backbone import BackboneError
        from models.checkpoint import CheckpointError
        from trainer.config import ConfigError
        from trainer.data.dataset import DatasetError
        from models.export import ExportError
        from models.files import CacheNotWritable
        from models.zoo import ZooError
        from trainer.engine import NonFiniteLossError, peer_lost_message
        try:
            return fn(*args, **kwargs)
        except (ConfigError, DatasetError, CheckpointError, BackboneError, NonFiniteLossError, ZooError,
                ExportError, CacheNotWritable) as err:
            raise click.ClickException(str(err)) from None
        except RuntimeError as err:   # under torchrun: a peer died or hung -> one line, not a traceback
            message = peer_lost_message(err)
            if message is None:
                raise
            raise click.ClickException(message) from None
    return wrapper


def _absolute(path: str | None) -> str | None:
    """A folder given on the command line is relative to the working directory (config files'
    data paths are relative to data.data_root)."""
    return None if path is None else str(Path(path).resolve())


def _renamed(old: str, new: str):
    """Callback of a hidden option kept from before a rename: one warning line, value passed on."""
    def callback(ctx, param, value):
        if value is not None:
            click.echo(f"warning: {old} is renamed {new}; use {new} {value}", err=True)
        return value
    return callback


def train_options(fn):
    options = [
        click.option("--preset", help="Preset name (see --list-presets); default: the paper's config."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file."),
        click.option("--data-root", help="Data set folder (annotations/ + images/)."),
        click.option("--synthetic", is_flag=True, help="Train on generated data (written if missing)."),
        click.option("--backbone", help="Any timm model name, e.g. resnet50, convnext_tiny."),
        click.option("--epochs", type=int), click.option("--batch-size", type=int, help="Per GPU."),
        click.option("--lr", type=float), click.option("--workers", type=int),
        click.option("--device", help="auto | cpu | cuda | cuda:N"),
        click.option("--image-cache", help="Folder for lossless restart-marker copies of the JPEGs, made "
                     "on first use: later epochs decode only each crop (about the images' size on disk)."),
        click.option("--out", "out_dir", help="Run directory (checkpoints, metrics.jsonl)."),
        click.option("--resume", help="auto (the run directory's last.pth) or a checkpoint path."),
        click.option("--seed", type=int),
        click.option("--init-from", help="Start from the backbone of this checkpoint (e.g. heatmap stage 1): a "
                     "file, an http(s) URL or a zoo name (rle-app --list-models), fetched once into the cache."),
        click.option("--loss", type=click.Choice(["rle", "l1", "heatmap"]),
                     help="rle (default), l1, or heatmap (which trains the heatmap model)."),
        click.option("--head", "renamed_head", type=click.Choice(["rle", "l1", "heatmap"]), hidden=True,
                     callback=_renamed("--head", "--loss")),
        click.option("--pretrained/--no-pretrained", default=None, help="timm ImageNet weights."),
        click.option("--max-steps", type=int, help="Stop each epoch after N steps (smoke runs)."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config field, e.g. optim.grad_clip_norm=35."),
        click.option("--list-presets", is_flag=True, help="List the presets and exit."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(help="Train RLE pose models (presets reproduce the paper's configs).")
def train_main() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _run_training(dataset: str, **opts) -> None:
    from trainer.config import list_presets, resolve_config
    from trainer.fit import fit
    if opts["list_presets"]:
        click.echo("\n".join(f"{name:40s} {_preset_summary(name)}" for name in list_presets()))
        return
    preset = opts["preset"] or (SYNTHETIC_PRESETS if opts["synthetic"] else DEFAULT_PRESETS)[dataset]
    if opts["init_from"]:
        from models.zoo import resolve_checkpoint
        opts["init_from"] = str(resolve_checkpoint(opts["init_from"], option="--init-from"))
    overrides = {"data.dataset": dataset, "data.data_root": opts["data_root"],
                 "model.backbone": opts["backbone"], "optim.epochs": opts["epochs"],
                 "data.batch_size_per_gpu": opts["batch_size"], "optim.lr": opts["lr"],
                 "data.workers": opts["workers"], "device": opts["device"], "out_dir": opts["out_dir"],
                 "seed": opts["seed"], "init_from": opts["init_from"], "loss": opts["loss"] or opts["renamed_head"],
                 "pretrained": opts["pretrained"], "data.image_cache": _absolute(opts["image_cache"])}
    cfg = resolve_config(preset, opts["config_file"], overrides, opts["sets"], OPTION_NAMES)
    _check_image_cache("reduced", cfg.data.image_cache, cfg.data.data_root,
                       (cfg.data.train_image_dir, cfg.data.val_image_dir))
    if opts["synthetic"]:
        ensure_synthetic(dataset, Path(cfg.data.data_root))
    else:   # before the model (and any download of its weights); fit reads the data before it too
        _require_data(_data_root_source(opts, cfg.data.data_root), cfg.data.data_root, (), DATA_HOLDS[dataset])
    result = fit(cfg, resume=opts["resume"], max_steps_per_epoch=opts["max_steps"], echo=click.echo)
    if result.is_main:   # under torchrun only rank 0 speaks
        from trainer.fit import format_metric
        from trainer.tasks import TASKS
        best = format_metric(TASKS[dataset].best_key, result.best).replace("val ", "best val ", 1)
        click.echo(f"done: {result.epochs_done} epochs in {result.run_dir}; {best}")


DATA_HOLDS = {"coco": "annotations/ and images/", "h36m": "h36m/ and mpii/"}   # what a data root holds


def _data_root_source(opts: dict, root: str) -> str:
    """``data.data_root`` as the user gave it: the last ``--set data.data_root=``, else
    ``--data-root``, else the config file's or preset's ``data.data_root``."""
    for item in reversed(opts["sets"]):
        if item.partition("=")[0].strip() == "data.data_root":
            return f"--set {item}"
    if opts["data_root"]:
        return f"--data-root {opts['data_root']}"
    return f"data.data_root {root} (of the preset or config file)"


def _require_data(source: str, root: str, needed: tuple[str, ...], holds: str) -> None:
    """The data root is a folder holding ``needed`` (paths under it), else one line naming ``source``
    (how the user gave the root), said before a model is built or downloaded."""
    from trainer.data.dataset import DatasetError
    if not Path(root).is_dir():
        raise DatasetError(f"{source}: no such folder; give the folder holding {holds} (--data-root DIR)")
    for rel in needed:
        if not (Path(root) / rel).exists():
            raise DatasetError(f"{source}: {rel} not found in it; give the folder holding {holds} (--data-root DIR)")


def _preset_summary(name: str) -> str:
    """The first sentence of a preset's header comment (what it is for)."""
    from trainer.config import PRESET_DIR
    lines = (PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
    header = " ".join(line.lstrip("# ").strip() for line in lines[:3] if line.startswith("#"))
    first = header.split(". ")[0]
    return re.sub(r" \([^)]{12,}(\)|$)", "", first).rstrip(".,:")   # long asides (citations) dropped


def ensure_synthetic(dataset: str, root: Path) -> None:
    """Write the generated data set to ``root`` unless it is already there, whole (COCO: the
    COCO layout in ``root``; h36m: ``root/h36m`` and ``root/mpii``, the seed README's layout):
    each part appears complete or not at all (``trainer/data/synthetic/complete.py``)."""
    from trainer.data import synthetic
    from trainer.data.synthetic.complete import is_complete, write_generated
    spec = synthetic.SyntheticSpec(num_train=256, num_val=64)
    parts = {"coco": [(root, synthetic.write_coco)],
             "h36m": [(root / "h36m", synthetic.write_h36m), (root / "mpii", synthetic.write_mpii)]}[dataset]
    for folder, writer in parts:
        if not is_complete(folder, writer):
            click.echo(f"writing generated {dataset} data to {folder} ...")
            write_generated(folder, writer, spec)


@train_main.command("coco", help="Train the 2D model on COCO-format keypoints.")
@train_options
@one_line_errors
def train_coco(**opts) -> None:
    _run_training("coco", **opts)


@train_main.command("h36m", help="Train the 3D model on Human3.6M (+ MPII).")
@train_options
@one_line_errors
def train_h36m(**opts) -> None:
    _run_training("h36m", **opts)


def _load_for_eval(checkpoint: str, dims: int, device):
    """``load_model`` of a file, URL or zoo name; a zoo name of the other task is refused before
    any download, a file of the other task after loading (one line each)."""
    from models.checkpoint import load_model
    from models.zoo import lookup
    command, other = ("rle-eval coco", "rle-eval h36m") if dims == 2 else ("rle-eval h36m", "rle-eval coco")
    lookup(checkpoint, dims, f"{command} CKPT")
    model = load_model(checkpoint, device)
    if model.config.dims != dims:
        raise click.ClickException(f"{checkpoint}: a {model.config.dims}D model; {command} needs a {dims}D "
                                   f"checkpoint (use {other} for {model.config.dims}D)")
    return model


def _runner(model, backend: str, device):
    """The model, or its ONNX Runtime runner (``models.backends``), for ``--backend``."""
    from models.backends import make_runner
    runner, used = make_runner(model, backend, device)
    if backend == "auto":
        click.echo(f"--backend auto: {used}", err=True)
    return runner


def _check_image_cache(image_decode: str, image_cache: str | None, data_root: str | None = None,
                       image_dirs: tuple[str, ...] = ()) -> None:
    """Restart copies serve region decoding only: refuse ``--image-cache`` with full decoding, and
    a cache whose copies would land in an image folder (``data_root/<dir>``) or over its files."""
    if image_cache and image_decode != "reduced":
        raise click.ClickException(f"--image-cache {image_cache}: restart copies serve --image-decode "
                                   "reduced only (full decoding reads whole images); drop it or add "
                                   "--image-decode reduced")
    from trainer.data.images import cache_overlaps_images
    for rel in image_dirs if image_cache and data_root else ():
        cache = Path(data_root) / image_cache / Path(rel).relative_to(Path(rel).anchor)
        if cache_overlaps_images(Path(data_root) / rel, cache):
            raise click.ClickException(f"--image-cache {image_cache}: its copies of {rel} would go to {cache}, "
                                       f"inside the image folder {Path(data_root) / rel}; give a folder "
                                       "outside the data's image folders (e.g. beside them)")


def _check_out_file(option: str, path: str | None) -> None:
    """Before a long run: the folder an output file goes to must exist."""
    if path and not Path(path).resolve().parent.is_dir():
        raise click.ClickException(f"{option} {path}: folder {Path(path).resolve().parent} does not exist; "
                                   "create it first (checked before the evaluation runs)")


def _write_out(path: str, payload: dict) -> None:
    """Write the metrics JSON; a failed write (a full disk) is one line, the metrics printed above."""
    from models.files import write_json_atomic
    try:
        write_json_atomic(path, payload, indent=2)
    except OSError as err:
        raise click.ClickException(f"--out {path}: cannot write ({err.strerror or err}); the metrics "
                                   "are printed above") from None


def _warn_truncated(dataset) -> None:
    """One warning line counting cut-off JPEGs (evaluated as OpenCV decodes them: grey below)."""
    from trainer.data.dataset import truncated_note
    note = truncated_note(dataset, "evaluated")
    if note:
        click.echo(note, err=True)


@click.group(help="Evaluate RLE checkpoints (project or official).")
def eval_main() -> None:
    pass


def eval_options(fn):
    """The options ``rle-eval coco`` and ``rle-eval h36m`` share: batch size, workers, device, image
    decoding, the restart cache and the inference backend."""
    for option in reversed([
        click.option("--batch-size", type=int, default=64, show_default=True),
        click.option("--workers", type=int, default=2, show_default=True),
        click.option("--device", default="auto", show_default=True),
        click.option("--image-decode", type=click.Choice(["full", "reduced"]), default="full", show_default=True,
                      help="full: whole images at full resolution, the reference's pixels; reduced: only the "
                      "crop's region, DCT-scaled for large boxes (faster, slightly different AP; README)."),
        click.option("--image-cache", help="With --image-decode reduced: folder for restart-marker copies of the "
                      "images (see rle-train --help)."),
        click.option("--backend", type=click.Choice(["auto", "torch", "onnxruntime"]), default="torch", show_default=True,
                      help="Inference backend (ONNX Runtime: the graph is exported once and cached beside the checkpoint)."),
    ]):
        fn = option(fn)
    return fn


@eval_main.command("coco", help="COCO keypoint AP (pycocotools) of CKPT (a file, an http(s) URL or a zoo "
                   "name such as rle-r50-coco) on val2017.")
@click.argument("checkpoint")
@click.option("--data-root", required=True, help="COCO folder: annotations/person_keypoints_val2017.json, images/val2017/.")
@click.option("--boxes", default="gt", show_default=True, help="gt, or a detection-results JSON file.")
@click.option("--score-threshold", type=float, default=0.0, show_default=True, help="Detection score threshold.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Flip test.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write the metrics JSON here.")
@click.option("--results", "results_path", type=click.Path(dir_okay=False), help="Write COCO keypoint results here.")
@click.option("--val-dir", default="images/val2017", show_default=True, help="Image folder under --data-root.")
@eval_options
@one_line_errors
def eval_coco(checkpoint, data_root, boxes, score_threshold, flip, out_path, results_path,
              batch_size, workers, device, val_dir, image_decode, image_cache, backend) -> None:
    from trainer.config import DataConfig, TrainConfig
    from trainer.data.dataset import DatasetError
    from trainer.data.coco import build_val_loader
    from trainer.engine import resolve_device
    from trainer.evaluate import evaluate_coco_loader
    _check_image_cache(image_decode, image_cache, data_root, (val_dir,))
    _check_out_file("--out", out_path)
    _check_out_file("--results", results_path)
    dev = resolve_device(device)
    model = _load_for_eval(checkpoint, 2, dev)
    _require_data(f"--data-root {data_root}", data_root, (DataConfig.val_annotation_file, val_dir),
                  f"{DataConfig.val_annotation_file} and {val_dir}/")
    detected = boxes != "gt"
    if detected and not Path(boxes).is_file():
        raise DatasetError(f"--boxes {boxes}: no such detection-results file (or use --boxes gt)")
    data = DataConfig(data_root=data_root, val_image_dir=val_dir, val_batch_size=batch_size,
                      workers=workers, val_boxes="det" if detected else "gt",
                      det_score_threshold=score_threshold, val_image_decode=image_decode,
                      image_cache=_absolute(image_cache))
    cfg = TrainConfig(model=model.config, data=data)
    loader = build_val_loader(cfg, det_file=boxes if detected else None)
    loader.dataset.require_images(f"check --data-root (it must hold {val_dir}/) and --val-dir")
    _warn_truncated(loader.dataset)
    gt_json = Path(data_root) / data.val_annotation_file
    metrics, calib = evaluate_coco_loader(_runner(model, backend, dev), loader, gt_json, dev, flip, detected, results_path)
    click.echo(metrics.format_table())
    if calib is not None:
        click.echo("\nsigma vs error (visible joints, box-normalised):\n" + calib.format_table())
    if out_path:
        payload = {**metrics.to_dict(), "checkpoint": str(checkpoint), "boxes": boxes, "flip": flip,
                   "image_decode": image_decode,
                   "calibration": calib.to_dict() if calib is not None else None}
        _write_out(out_path, payload)


H36M_TEST_FILE = "annotations/Sample_64_test_Human36M_protocol_2.json"


@eval_main.command("h36m", help="Human3.6M protocol 2 (S9, S11, every 64th frame, GT boxes): MPJPE and "
                   "PA-MPJPE in mm per action, of a 3D CKPT (project or official h36m-laplace-rle.pth, a "
                   "URL, or the zoo name rle-r50-h36m).")
@click.argument("checkpoint")
@click.option("--data-root", required=True, help="Folder holding h36m/ (h36m/annotations/Sample_64_test_"
              "Human36M_protocol_2.json, h36m/images/); the h36m folder itself works too.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Flip test (u -> -u - 1/W, depth kept).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write the metrics JSON here.")
@eval_options
@one_line_errors
def eval_h36m(checkpoint, data_root, flip, out_path, batch_size, workers, device, image_decode,
              image_cache, backend) -> None:
    from trainer.config import DataConfig, TrainConfig
    from trainer.data.dataset import DatasetError
    from trainer.data.h36m import build_val_loader
    from trainer.engine import resolve_device
    from trainer.evaluate import evaluate_h36m_loader
    _check_image_cache(image_decode, image_cache)
    _check_out_file("--out", out_path)
    dev = resolve_device(device)
    model = _load_for_eval(checkpoint, 3, dev)
    root = Path(data_root)
    if not root.is_dir():
        raise DatasetError(f"--data-root {data_root}: no such folder; give the folder holding h36m/")
    prefix = "" if (root / H36M_TEST_FILE).is_file() and not (root / "h36m").is_dir() else "h36m/"
    data = DataConfig(dataset="h36m", data_root=str(root), val_annotation_file=prefix + H36M_TEST_FILE,
                      val_image_dir=prefix + "images", val_batch_size=batch_size, workers=workers,
                      val_image_decode=image_decode, image_cache=_absolute(image_cache))
    loader = build_val_loader(TrainConfig(model=model.config, data=data))
    loader.dataset.require_images(f"check --data-root (it must hold {prefix}images/)")
    _check_image_cache(image_decode, image_cache, str(root), (prefix + "images",))
    _warn_truncated(loader.dataset)
    metrics = evaluate_h36m_loader(_runner(model, backend, dev), loader, dev, flip)
    click.echo(metrics.format_table())
    if out_path:
        payload = {**metrics.to_dict(), "checkpoint": str(checkpoint), "flip": flip,
                   "image_decode": image_decode, "skipped": loader.dataset.instances.skipped}
        _write_out(out_path, payload)
