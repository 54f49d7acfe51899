"""Run configuration: one YAML file -> one validated, typed config object.

Every field is declared once here with its type and allowed range; unknown keys and bad
values are rejected with an error that names the file and the dotted field path.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range."""


# PyYAML implements YAML 1.1, which reads `1e-3` and `5E-4` (no dot) as strings; a float field
# accepts such a string when it is a plain decimal number, nothing else (no nan/inf/garbage).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass
class AugmentSection:
    enabled: bool = True
    rotation_deg: float = 20.0
    zoom: float = 0.1
    brightness: float = 0.2
    contrast: float = 0.2
    erase_prob: float = 0.5


@dataclass
class DataSection:
    tasks: list = field(default_factory=lambda: ["pneumoniamnist", "breastmnist", "bloodmnist"])
    root: Optional[str] = None  # None: $MEDFPGA_DATA, else ../shared/data
    size: int = 28
    sampling: str = "balanced"  # balanced | proportional
    epoch_size: Optional[int] = None  # images per epoch; None = size of the training pool
    augment: AugmentSection = field(default_factory=AugmentSection)


@dataclass
class ModelSection:
    arch: str = "mlp"  # mlp | cnn
    mode: str = "multitask"  # multitask | multiclass
    in_channels: int = 1
    w_bits: Optional[int] = 4  # None (null) = float
    a_bits: Optional[int] = 4
    hidden: list = field(default_factory=lambda: [64, 64])  # mlp: hidden widths
    # cnn: [out_channels, kernel, stride, padding] per layer; must end at a 1x1 feature map
    convs: list = field(default_factory=lambda: [[16, 3, 1, 1], [32, 3, 2, 1], [32, 3, 2, 1],
                                                 [64, 3, 1, 0], [64, 3, 1, 0], [128, 3, 1, 0]])
    head_hidden: int = 16  # hidden units per task head
    embed_dim: int = 8  # task embedding size


@dataclass
class TrainSection:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    loss: str = "masked"  # masked | cross_task_negatives
    cross_task_weight: float = 1.0
    patience: int = 5  # early stopping on mean validation accuracy
    amp: bool = True  # only takes effect on CUDA
    device: str = "auto"  # auto | cpu | cuda
    threads: Optional[int] = None  # torch CPU threads; None = all cores


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        return asdict(self)


def _check(cond: bool, where: str, msg: str):
    if not cond:
        raise ConfigError(f"{where}: {msg}")


def _build(cls, raw: Any, where: str):
    """Build dataclass `cls` from a mapping, type-checking each field (fields with
    metadata {"internal": True} are set by loaders, not by users)."""
    _check(isinstance(raw, dict), where or "<top level>",
           f"expected a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(raw) - known)
    _check(not unknown, where or "<top level>",
           f"unknown key(s) {unknown}; known keys: {sorted(known)}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        kwargs[f.name] = _coerce(hints[f.name], raw[f.name], f"{where}.{f.name}".lstrip("."))
    return cls(**kwargs)


def _coerce(tp, value, where):
    if is_dataclass(tp):
        return _build(tp, value, where)
    if get_origin(tp) is Union:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e).split(": ", 1)[-1])
        raise ConfigError(f"{where}: " + " or ".join(errors))
    if tp is bool:
        _check(isinstance(value, bool), where, f"expected true/false, got {value!r}")
    elif tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), where,
               f"expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), where,
               f"expected a number, got {value!r}")
        value = float(value)
        _check(math.isfinite(value), where, f"expected a finite number, got {value!r}")
    elif tp is str:
        _check(isinstance(value, str), where, f"expected a string, got {value!r}")
    elif tp is list:
        _check(isinstance(value, list), where, f"expected a list, got {value!r}")
    elif tp is dict:
        _check(isinstance(value, dict), where, f"expected a mapping, got {value!r}")
    return value


def _one_of(value, allowed, where):
    _check(value in allowed, where, f"{value!r} is not one of {list(allowed)}")


def validate(cfg: RunConfig) -> RunConfig:
    """Range and consistency checks that types alone cannot express."""
    from .tasks import TASKS

    d, m, t = cfg.data, cfg.model, cfg.train
    # the run directory is out_dir/name: a name with a path in it would write elsewhere
    _check(cfg.name not in ("", ".", "..") and not any(c in cfg.name for c in "/\\\0"),
           "name", f"{cfg.name!r} must be a plain directory name (no '/' or '\\', not '.' "
           "or '..'); use out_dir to choose where runs go")
    _check(bool(d.tasks), "data.tasks", "needs at least one task")
    for i, name in enumerate(d.tasks):
        _check(name in TASKS, f"data.tasks[{i}]", f"unknown task {name!r}; known: {sorted(TASKS)}")
    _check(len(set(d.tasks)) == len(d.tasks), "data.tasks", "a task is listed twice")
    _check(8 <= d.size <= 512, "data.size", f"{d.size} is outside 8..512")
    _one_of(d.sampling, ("balanced", "proportional"), "data.sampling")
    _check(d.epoch_size is None or d.epoch_size > 0, "data.epoch_size", "must be positive")
    a = d.augment
    _check(0 <= a.rotation_deg <= 180, "data.augment.rotation_deg", "must be within 0..180")
    for k in ("zoom", "brightness", "contrast", "erase_prob"):
        _check(0 <= getattr(a, k) < 1, f"data.augment.{k}", "must be within [0, 1)")
    _one_of(m.arch, ("mlp", "cnn"), "model.arch")
    _one_of(m.mode, ("multitask", "multiclass"), "model.mode")
    _one_of(m.in_channels, (1, 3), "model.in_channels")
    for k in ("w_bits", "a_bits"):
        v = getattr(m, k)
        _check(v is None or 1 <= v <= 8, f"model.{k}", f"{v} is outside 1..8 (null = float)")
    _check((m.w_bits is None) == (m.a_bits is None), "model",
           "w_bits and a_bits must both be set or both be null (float)")
    _check(all(isinstance(h, int) and h > 0 for h in m.hidden), "model.hidden",
           "must be a list of positive integers")
    for i, c in enumerate(m.convs):
        _check(isinstance(c, list) and len(c) == 4 and all(isinstance(v, int) for v in c),
               f"model.convs[{i}]", f"expected [out_channels, kernel, stride, padding], got {c!r}")
        _check(c[0] > 0 and c[1] > 0 and c[2] > 0 and c[3] >= 0, f"model.convs[{i}]",
               f"channels/kernel/stride must be positive and padding >= 0, got {c!r}")
    if m.arch == "cnn":
        side = d.size
        for c in m.convs:
            side = (side + 2 * c[3] - c[1]) // c[2] + 1
            _check(side >= 1, "model.convs", f"feature map vanishes for input size {d.size}")
        _check(side == 1, "model.convs",
               f"the last conv must leave a 1x1 feature map (got {side}x{side} for input "
               f"{d.size}x{d.size}); adjust kernels/strides so the flatten before the heads "
               "is trivial for FINN")
    _check(m.head_hidden > 0, "model.head_hidden", "must be positive")
    _check(m.embed_dim > 0, "model.embed_dim", "must be positive")
    _check(t.epochs > 0, "train.epochs", "must be positive")
    _check(t.batch_size > 0, "train.batch_size", "must be positive")
    _check(d.epoch_size is None or t.batch_size <= d.epoch_size, "train.batch_size",
           f"{t.batch_size} is larger than data.epoch_size {d.epoch_size}: an epoch would run "
           "no step; lower train.batch_size or raise data.epoch_size")
    _check(0 < t.lr < 1, "train.lr", f"{t.lr} is outside (0, 1)")
    _check(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _one_of(t.loss, ("masked", "cross_task_negatives"), "train.loss")
    _check(not (t.loss == "cross_task_negatives" and m.mode == "multiclass"), "train.loss",
           "cross_task_negatives needs per-task heads (model.mode: multitask)")
    _check(t.patience > 0, "train.patience", "must be positive")
    _one_of(t.device, ("auto", "cpu", "cuda"), "train.device")
    _check(t.threads is None or t.threads > 0, "train.threads", "must be positive")
    return cfg


def config_from_dict(raw: dict, source: str = "<config>") -> RunConfig:
    try:
        return validate(_build(RunConfig, raw, ""))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def read_yaml(path, overrides: Optional[dict] = None, error=ConfigError,
              allow_empty: bool = True) -> dict:
    """A YAML mapping from `path`, with `overrides` (a nested dict) merged on top."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({e})") from None
    if raw is None:
        if not allow_empty:
            raise error(f"{path}: the config file is empty (or only comments); write at least "
                        "the run's `name` and the fields that differ from the defaults")
        raw = {}
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return merge(raw, overrides) if overrides else raw


def load_config(path, overrides: Optional[dict] = None) -> RunConfig:
    """Load a YAML config; `overrides` is a nested dict merged on top (e.g. from the CLI)."""
    # an empty file would silently start the full default run
    return config_from_dict(read_yaml(path, overrides, allow_empty=False), str(path))


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict:
    """'train.epochs=3' -> {'train': {'epochs': 3}} (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, val = text.split("=", 1)
    node: dict = {}
    cur = node
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = yaml.safe_load(val)
    return node
