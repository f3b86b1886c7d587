"""TrainConfig: the typed schema of a training run, and the strict layered loader.

Precedence (later wins): dataclass defaults < preset (``trainer/presets/<name>.yaml``) < config
file < explicit options (a dict, ``None`` values ignored) < ``--set key.sub=value``. The dataset
(``data.dataset``) picks the model's base config (``coco_config`` or ``h36m_config``) before the
``model.*`` keys are applied, so a sparse preset need not list 18 joint names.
The loader is strict: unknown keys fail with a difflib suggestion, values are converted to the
field's annotated type (PyYAML reads ``lr: 1e-3`` as a string), and ``__post_init__`` checks
invariants. Every failure is one ``ConfigError`` line naming the file or option.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from models.config import PoseModelConfig, coco_config, h36m_config
from trainer.init_from import checkpoint_conventions, with_conventions

PRESET_DIR = Path(__file__).resolve().parent / "presets"
MODEL_BASES = {"coco": coco_config, "h36m": h36m_config}   # data.dataset -> model defaults
# TrainConfig.loss -> PoseModelConfig.head (the architecture it trains): L1 trains the RLE model
LOSS_MODEL_HEADS = {"rle": "rle", "l1": "rle", "heatmap": "heatmap"}
# keys of configs written before a rename (run folders' config.yaml, checkpoints' train_config)
RENAMED_KEYS = {"head": "loss"}


class ConfigError(ValueError):
    """A bad preset, config file, option or value; the message is one line naming its source."""


class FieldError(ConfigError):
    """One field's invariant: ``key`` ("optim.epochs"), its ``value`` and what is wrong with it
    ("must be at least 1"); the loader rewords it as the user gave the value (``--epochs 0: ...``)."""

    def __init__(self, key: str, value: Any, problem: str) -> None:
        super().__init__(f"{key} {value}: {problem}")
        self.key, self.value, self.problem = key, value, problem


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_field(ok: bool, key: str, value: Any, problem: str) -> None:
    if not ok:
        raise FieldError(key, value, problem)


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and how it is loaded. Paths are relative to ``data_root``.

    Image decoding (``trainer/data/images.py``): "full" decodes the whole image at full resolution
    and warps it, the reference's (and the app's) pixels exactly; "reduced" decodes only the
    crop's region, DCT-scaled by 2, 4 or 8 where the crop has at least that many image pixels per
    crop pixel (a box over twice the crop size): faster, and its crops then differ by a few grey
    levels. Training defaults to "reduced" (a speed option; augmentation moves pixels far more);
    validation and ``rle-eval`` to "full" (``rle-eval --image-decode reduced`` opts in; its AP
    effect is in the README). ``image_cache`` serves "reduced" decoding only.
    """

    dataset: Literal["coco", "h36m"] = "coco"
    data_root: str = "data/coco"
    train_annotation_file: str = "annotations/person_keypoints_train2017.json"
    val_annotation_file: str = "annotations/person_keypoints_val2017.json"
    train_image_dir: str = "images/train2017"   # the seed README's layout: <root>/images/train2017
    val_image_dir: str = "images/val2017"
    val_boxes: Literal["gt", "det"] = "gt"      # boxes for validation during training
    det_file: str = "detections/person_detection_results_val2017.json"
    det_score_threshold: float = 0.0            # reference: all detections of the file are used
    workers: int = 4                            # DataLoader worker processes per GPU
    batch_size_per_gpu: int = 32
    val_batch_size: int = 64
    image_decode: Literal["reduced", "full"] = "reduced"   # training images (speed option, below)
    val_image_decode: Literal["reduced", "full"] = "full"  # validation and rle-eval (as the reference)
    image_cache: str | None = None              # folder for restart-marker copies of the images
                                                # (trainer/data/images.py): decode only the crop
                                                # (relative: under data_root; the CLI makes it absolute)

    def __post_init__(self) -> None:
        _check_field(self.workers >= 0, "data.workers", self.workers, "must be at least 0")
        for name in ("batch_size_per_gpu", "val_batch_size"):
            _check_field(getattr(self, name) >= 1, f"data.{name}", getattr(self, name), "must be at least 1")
        _check_field(0.0 <= self.det_score_threshold <= 1.0, "data.det_score_threshold",
                     self.det_score_threshold, "must be in [0, 1]")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (COCO defaults of the reference; the H36M preset overrides).

    ``uniform`` modes draw scale in [1-sf, 1+sf] and rotation in [-rf, rf] deg; ``clipped_normal``
    draws clip(1 + sf*N, 1-sf, 1+sf) and clip(rf*N, -2rf, 2rf) (the reference's H36M recipe).
    """

    scale_factor: float = 0.25
    scale_mode: Literal["uniform", "clipped_normal"] = "uniform"
    rot_factor: float = 45.0                    # degrees
    rot_mode: Literal["uniform", "clipped_normal"] = "uniform"
    rot_prob: float = 0.5
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 3               # half-body only with MORE than this many visible
    half_body_factor: float = 1.5
    color_factor: float = 0.0                   # per-channel gain in [1-c, 1+c]
    occlusion: bool = False                     # random noise rectangle (H36M)
    zero_weight_outside: bool = False           # official COCO: False; H36M: True

    def __post_init__(self) -> None:
        for name in ("rot_prob", "flip_prob", "half_body_prob"):
            _check_field(0.0 <= getattr(self, name) <= 1.0, f"augment.{name}", getattr(self, name), "must be in [0, 1]")
        for name in ("scale_factor", "color_factor"):
            _check_field(0.0 <= getattr(self, name) < 1.0, f"augment.{name}", getattr(self, name), "must be in [0, 1)")
        for name in ("rot_factor", "half_body_min_joints"):
            _check_field(getattr(self, name) >= 0, f"augment.{name}", getattr(self, name), "must be at least 0")
        _check_field(self.half_body_factor > 0, "augment.half_body_factor", self.half_body_factor, "must be > 0")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and step schedule (lr multiplied by ``gamma`` at each milestone epoch)."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 270
    milestones: tuple[int, ...] = (170, 200)
    gamma: float = 0.1
    grad_clip_norm: float | None = None
    grad_clip_mode: Literal["per_tensor", "global"] = "per_tensor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        m = self.milestones
        _check_field(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        _check_field(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be at least 0")
        _check_field(self.epochs >= 1, "optim.epochs", self.epochs, "must be at least 1")
        _check(all(a < b for a, b in zip(m, m[1:])) and all(0 < e < self.epochs for e in m),
               f"optim.milestones {list(m)} must be increasing, > 0 and < optim.epochs ({self.epochs}); "
               f"e.g. --set optim.milestones=[{', '.join(map(str, _paper_milestones(self.epochs)))}] "
               "(the paper's 170/270, 200/270)")
        _check_field(0 < self.gamma <= 1, "optim.gamma", self.gamma, "must be in (0, 1]")
        _check_field(self.grad_clip_norm is None or self.grad_clip_norm > 0, "optim.grad_clip_norm",
                     self.grad_clip_norm, "must be > 0 (or none)")


def model_head_for_loss(loss: str) -> str:
    """The architecture (``PoseModelConfig.head``) a loss trains: rle and l1 -> "rle", heatmap ->
    "heatmap". The one rule; ``resolve_config`` / ``TrainConfig.from_dict`` apply it."""
    return LOSS_MODEL_HEADS[loss]


def _paper_milestones(epochs: int) -> list[int]:
    """The paper's schedule (x0.1 at 170 and 200 of 270 epochs) at ``epochs``: valid milestones."""
    return sorted({m for m in (round(170 * epochs / 270), round(200 * epochs / 270)) if 0 < m < epochs})


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, augmentation, optimiser and run settings."""

    model: PoseModelConfig = field(default_factory=coco_config)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 123123
    device: str = "auto"                        # "auto", "cpu", "cuda", "cuda:1", ...
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU (loss fp32 always)
    channels_last: bool = True                  # applies on CUDA only
    compile: bool = False
    out_dir: str = "runs/rle"
    val_every_epochs: int = 1
    save_every_epochs: int = 0                  # also keep epoch_NNN.pth every N epochs (0: last/best only)
    pretrained: bool = True                     # ImageNet weights for the backbone
    init_from: str | None = None                # checkpoint to start from (e.g. heatmap stage 1)
    loss: Literal["rle", "heatmap", "l1"] = "rle"   # picks model.head (model_head_for_loss)
    log_every_steps: int = 50
    # (loss-spike policy fields go here; owned by the engine)

    def __post_init__(self) -> None:
        for name in ("val_every_epochs", "log_every_steps"):
            _check_field(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        _check_field(self.save_every_epochs >= 0, "save_every_epochs", self.save_every_epochs,
                     "must be at least 0 (0 keeps last.pth and best.pth only)")
        dims = {"coco": 2, "h36m": 3}[self.data.dataset]
        _check(self.model.dims == dims, f"model.dims {self.model.dims} does not fit data.dataset "
               f"'{self.data.dataset}' ({dims}D)")

    def to_dict(self) -> dict:
        """Plain nested dict (lists, str, numbers, None): for JSON, YAML and checkpoints."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict, source: str = "stored config") -> TrainConfig:
        """Inverse of ``to_dict`` (strict: unknown keys and bad values raise ConfigError)."""
        return _build(_flatten(data, source))


SECTIONS = {"model": PoseModelConfig, "data": DataConfig, "augment": AugmentConfig,
            "optim": OptimConfig}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _all_keys() -> list[str]:
    keys = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in SECTIONS]
    return keys + [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _unknown(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known sections: {', '.join(SECTIONS)})"
    return ConfigError(f"{source}: unknown key '{key}'{hint}")


def _flatten(layer: dict, source: str) -> dict[str, tuple[Any, str]]:
    """Nested or dotted dict -> {'optim.lr': (value, source)}; unknown keys raise ConfigError."""
    _check(isinstance(layer, dict), f"{source}: expected a mapping of keys to values")
    known = set(_all_keys())
    flat: dict[str, tuple[Any, str]] = {}
    for key, value in layer.items():
        key = RENAMED_KEYS.get(str(key), str(key))
        if key in SECTIONS:
            _check(isinstance(value, dict), f"{source}: '{key}' must be a mapping of its keys")
            flat.update(_flatten({f"{key}.{k}": v for k, v in value.items()}, source))
        elif key in known:
            flat[key] = (value, source)
        else:
            raise _unknown(key, source)
    return flat


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type ``hint``; ConfigError naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            _check(type(None) in args, f"{where}: a value is required, got None")
            return None
        return _convert(value, next(a for a in args if a is not type(None)), where)
    if origin is Literal:
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        _check(value in args, f"{where}: '{value}' is not one of {list(args)}"
               + (f" (did you mean '{close[0]}'?)" if close else ""))
        return value
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], where) for v in value)
        _check(len(value) == len(args), f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, where) for v, a in zip(value, args))
    return _convert_scalar(value, hint, where)


def _convert_scalar(value: Any, hint: type, where: str) -> Any:
    try:
        if hint is bool:
            text = str(value).strip().lower()
            if text in ("true", "on", "yes", "1"):
                return True
            if text in ("false", "off", "no", "0"):
                return False
            raise ValueError
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            raise ValueError
        if hint is int:
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from None
    raise ConfigError(f"{where}: unsupported field type {hint}")


def _section(cls: type, flat: dict, prefix: str, make: typing.Callable[..., Any],
             blame: dict | None = None) -> Any:
    """Convert the ``prefix`` keys of ``flat`` to ``cls``'s field types and call ``make(**them)``."""
    hints = typing.get_type_hints(cls)
    changes = {}
    for key, (value, source) in flat.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            changes[name] = _convert(value, hints[name], f"{source}: {key}")
    try:
        return make(**changes)
    except FieldError as err:   # one field: said as the user gave it
        blame = flat if blame is None else blame
        raise ConfigError(f"{_as_given(err.key, *blame.get(err.key, (err.value, 'default')))}: "
                          f"{err.problem}") from None
    except ValueError as err:   # ConfigError or the model config's ValueError
        blame = flat if blame is None else blame
        named = {k for k in blame if k.startswith(prefix) and k in str(err)}   # the keys it names
        sources = sorted({s for k, (_, s) in blame.items() if k in named or (not named and k.startswith(prefix))})
        label = "" if isinstance(err, ConfigError) or not prefix else f"{prefix[:-1]} config: "
        raise ConfigError(f"{label}{err} (set by: {'; '.join(sources or ['defaults'])})") from None


def _as_given(key: str, value: Any, source: str) -> str:
    """A value as the user gave it: ``--epochs 0``, ``--set optim.lr=0``, ``config file x.yaml:
    optim.lr 0``, ``optim.lr 0 (default)``."""
    if source.startswith("option --"):
        return f"{source[len('option '):]} {value}"
    if source.startswith("--set "):
        return source
    if source.startswith("option "):
        return f"{key} {value}"
    return f"{key} {value} ({source})" if source in ("default", "defaults") else f"{source}: {key} {value}"


def _build(flat: dict[str, tuple[Any, str]]) -> TrainConfig:
    dataset = _section(DataConfig, {k: v for k, v in flat.items() if k == "data.dataset"},
                       "data.", DataConfig).dataset
    parts = {"model": _model_section(flat, dataset)}
    for name in ("data", "augment", "optim"):
        parts[name] = _section(SECTIONS[name], flat, f"{name}.", SECTIONS[name])
    top = {k: v for k, v in flat.items() if "." not in k}
    return _section(TrainConfig, top, "", lambda **c: TrainConfig(**parts, **c), blame=flat)


def _model_section(flat: dict[str, tuple[Any, str]], dataset: str) -> PoseModelConfig:
    """The ``model.*`` keys on the dataset's base config, with ``head`` set from ``loss``
    (``model_head_for_loss``); a ``model.head`` given in a layer must agree with it. An
    ``init_from`` checkpoint's conventions (``trainer.init_from.CONVENTIONS``) fill the model
    fields no layer sets."""
    loss, loss_source = flat.get("loss", (TrainConfig.loss, "default"))
    loss = _convert(loss, typing.get_type_hints(TrainConfig)["loss"], f"{loss_source}: loss")
    model_base = MODEL_BASES[dataset]()
    model = _section(PoseModelConfig, flat, "model.", lambda **c: dataclasses.replace(model_base, **c))
    head = model_head_for_loss(loss)
    if "model.head" in flat and model.head != head:
        raise ConfigError(f"model.head '{model.head}' ({flat['model.head'][1]}) contradicts loss "
                          f"'{loss}' ({loss_source}); drop model.head: the loss (--loss) picks the model")
    try:
        model = model.replace(head=head)
    except ValueError as err:
        raise ConfigError(f"loss '{loss}' ({loss_source}) trains model.head '{head}': {err}") from None
    init_from = flat.get("init_from", (None, ""))[0]   # its conventions, under what the user set
    if isinstance(init_from, str) and Path(init_from).is_file():
        given = {k[len("model."):] for k in flat if k.startswith("model.")}
        model = with_conventions(model, checkpoint_conventions(init_from), given)
    return model


def list_presets() -> list[str]:
    """Names (file stems) of the presets shipped in ``trainer/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _load_yaml(path: Path, source: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{source}: cannot read ({err.strerror}); check the path") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{where} is not valid YAML; fix the syntax") from None
    return data or {}


def _parse_set(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    _check(bool(sep) and bool(key.strip()), f"--set {item!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def resolve_config(preset: str | None = None, config_file: str | None = None,
                   overrides: dict | None = None, sets: list[str] | tuple = (),
                   option_names: dict[str, str] | None = None) -> TrainConfig:
    """Defaults < preset < config file < ``overrides`` (None ignored) < ``--set`` items.
    ``option_names`` ({"optim.epochs": "--epochs"}) names the overrides in errors as typed."""
    flat: dict[str, tuple[Any, str]] = {}
    if preset:
        if preset not in list_presets():
            close = difflib.get_close_matches(preset, list_presets(), n=1, cutoff=0.3)
            raise ConfigError(f"preset '{preset}' not found" + (f" (did you mean '{close[0]}'?)"
                              if close else f"; known: {', '.join(list_presets())}"))
        path = PRESET_DIR / f"{preset}.yaml"
        flat.update(_flatten(_load_yaml(path, f"preset {path.name}"), f"preset {path.name}"))
    if config_file:
        flat.update(_flatten(_load_yaml(Path(config_file), f"config file {config_file}"),
                             f"config file {config_file}"))
    file_epochs = flat.get("optim.epochs", (OptimConfig.epochs, ""))[0]
    for key, value in (overrides or {}).items():
        if value is not None:
            flat.update(_flatten({key: value}, f"option {(option_names or {}).get(key, key)}"))
    for item in sets:
        key, value = _parse_set(item)
        flat.update(_flatten({key: value}, f"--set {item}"))
    _scale_milestones(flat, file_epochs)
    return _build(flat)


def _scale_milestones(flat: dict[str, tuple[Any, str]], file_epochs: Any) -> None:
    """``--epochs N`` on a preset's schedule: the preset's (or config file's, or default)
    milestones scaled by N / its epochs (rounded, kept increasing and inside 1..N-1), unless the
    milestones were given too. 270 epochs x0.1 at 170, 200 -> 27 epochs x0.1 at 17, 20."""
    epochs, epochs_source = flat.get("optim.epochs", (None, ""))
    milestones, source = flat.get("optim.milestones", (OptimConfig.milestones, "default"))
    def given(src):
        return src.startswith(("option ", "--set "))
    if not given(epochs_source) or given(source):
        return
    try:
        new, old = int(epochs), int(file_epochs)
        scaled = sorted({round(int(m) * new / old) for m in milestones})
    except (TypeError, ValueError, ZeroDivisionError):
        return   # ill-typed values: _build names them
    if new != old:
        flat["optim.milestones"] = ([m for m in scaled if 0 < m < new],
                                    f"{source}, scaled to optim.epochs {new} ({epochs_source})")
