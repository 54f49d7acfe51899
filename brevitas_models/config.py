"""Run configuration: one YAML file -> one validated, typed config object.

Every field is declared once, as a pydantic model field with its type and allowed range; the
`model:` section is the class of its `arch` (brevitas_models.models). Unknown keys and bad
values are rejected with one line that names the file and the dotted field path, e.g.::

    configs/x.yaml: train.lr: -1 is outside (0, 1)

finn_build.config builds its config with the same machinery (`Section`, `validate_section`)
and writes the JSON Schema of both config kinds (`make schema`, docs/configs.md).
"""
from __future__ import annotations

import copy
import difflib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator,
                      Field, Tag, ValidationError, field_validator, model_validator)

from .models import ARCHS, AnyModelSection, MLPSection, ModelSection  # noqa: F401 (API)
from .tasks import TASKS, PreprocessSection, TaskSection, get_task


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range."""


# PyYAML implements YAML 1.1, which reads `1e-3` and `5E-4` (no dot) as strings; a float field
# accepts such a string when it is a plain decimal number, nothing else (no nan/inf/garbage).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def yaml11_number(value):
    """`value`, or the float a YAML 1.1 number string such as "1e-3" stands for."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


# A float field: ints are taken (as floats), so are YAML 1.1 number strings.
YamlFloat = Annotated[float, BeforeValidator(yaml11_number)]


class Section(BaseModel):
    """A config section: strict types (PyYAML already gives bools, ints, floats: "3" is not
    3), unknown keys are errors, no nan/inf."""
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def _known_task(name):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}; or declare it "
                         "inline: {name: ..., path: ..., format: ...} (docs/your_data.md)")
    return name


def _not_builtin(task):
    if task.name in TASKS:
        raise ValueError(f"name {task.name!r} is a built-in task's; give yours another name, "
                         "or list the built-in task by its name alone")
    return task


# a data.tasks entry: a built-in task's name, or a task declared inline (TaskSection)
TaskEntry = Annotated[
    Union[Annotated[str, AfterValidator(_known_task), Tag("name")],
          Annotated[TaskSection, AfterValidator(_not_builtin), Tag("task")]],
    Discriminator(lambda v: "name" if isinstance(v, str) else "task")]
_UNION_TAGS = {"name": str, "task": TaskSection}  # the tags pydantic puts in error locations


class AugmentSection(Section):
    """brevitas_models/augment.py; the fields after erase_prob are the augmentation against
    style (docs/configs.md), all off by default: configs without them reproduce old runs."""
    enabled: bool = True
    rotation_deg: YamlFloat = Field(20.0, ge=0, le=180)
    zoom: YamlFloat = Field(0.1, ge=0, lt=1)
    brightness: YamlFloat = Field(0.2, ge=0, lt=1, description="pixel gain in [1-b, 1+b]; "
                                  "against style: 0.3")
    contrast: YamlFloat = Field(0.2, ge=0, lt=1, description="contrast around the image mean in "
                                "[1-c, 1+c]; against style: 0.4")
    erase_prob: YamlFloat = Field(0.5, ge=0, lt=1)
    crop_area: list[YamlFloat] = Field([1.0, 1.0], description=(
        "[lo, hi] area of a random crop window, resized to the image, as a fraction of the "
        "image; 0 < lo <= hi <= 1; [1, 1] (with crop_ratio [1, 1]) = off; against style: "
        "[0.6, 1.0]"))
    crop_ratio: list[YamlFloat] = Field([1.0, 1.0], description=(
        "[lo, hi] width/height of the crop window, log-uniform, in [0.1, 10]; against style: "
        "[0.8, 1.25]"))
    pad_prob: YamlFloat = Field(0.0, ge=0.0, le=1.0, description=(
        "probability of shrinking an image into a black frame, at a random place; 0 = off; "
        "against style: 0.5"))
    pad_fraction: list[YamlFloat] = Field([0.05, 0.15], description=(
        "[lo, hi] share of each side taken by the frame (both edges together), in [0, 0.9]; "
        "against style: [0.05, 0.2]"))
    gamma: list[YamlFloat] = Field([1.0, 1.0], description=(
        "[lo, hi] gamma of 255*(x/255)**gamma, log-uniform, in [0.1, 10]; [1, 1] = off; "
        "against style: [0.6, 1.7]"))
    sharpen: list[YamlFloat] = Field([0.0, 0.0], description=(
        "[lo, hi] amount a of x + a*(x - blur(x)), 5x5 gaussian-like blur, in [-1, 4]: a < 0 "
        "blurs (-1: fully), a > 0 sharpens; [0, 0] = off; against style: [-1, 1]"))
    noise_std: list[YamlFloat] = Field([0.0, 0.0], description=(
        "[lo, hi] std of additive gaussian noise on the 0..255 scale, in [0, 100]; [0, 0] = "
        "off; against style: [0, 6]"))
    jpeg_prob: YamlFloat = Field(0.0, ge=0.0, le=1.0, description=(
        "probability of a JPEG re-compression per image (Pillow, on the CPU); 0 = off; "
        "against style: 0.3"))
    jpeg_quality: list[int] = Field([30, 90], description=(
        "[lo, hi] JPEG quality, integers in 1..100; against style: [30, 90]"))

    @field_validator("crop_area", "crop_ratio", "pad_fraction", "gamma", "sharpen", "noise_std",
                     "jpeg_quality")
    @classmethod
    def _ordered_range(cls, v, info):
        from .augment import RANGES  # one table of bounds, shared with AugmentConfig
        lo, hi = RANGES[info.field_name]
        low = "0 < lo" if info.field_name == "crop_area" else f"{lo} <= lo"
        if len(v) != 2 or not (lo <= v[0] <= v[1] <= hi
                               and (v[0] > 0 or info.field_name != "crop_area")):
            raise ValueError(f"must be [lo, hi] with {low} <= hi <= {hi}, got {v}")
        return v


class DataSection(Section):
    tasks: list[TaskEntry] = Field(
        default_factory=lambda: ["pneumoniamnist", "breastmnist", "bloodmnist"],
        description="built-in task names (brevitas_models/tasks.py) and/or tasks declared "
        "inline: {name, path, format, classes, ...} (docs/configs.md, Tasks)")
    root: Optional[str] = Field(None, description="null: $MEDFPGA_DATA, else ../shared/data")
    size: int = Field(28, ge=8, le=512, description="image side in pixels")
    sampling: Literal["balanced", "proportional"] = "balanced"
    epoch_size: Optional[int] = Field(None, gt=0, description="images per epoch; null = size "
                                      "of the training pool")
    augment: AugmentSection = Field(default_factory=AugmentSection)
    preprocess: dict[str, PreprocessSection] = Field(
        default_factory=dict, description="task -> its preprocessing; a task not listed gets "
        "its default (on for chest_xray and brain_mri); the stored run config lists every task")

    @field_validator("tasks")
    @classmethod
    def _tasks_once_each(cls, tasks):
        if not tasks:
            raise ValueError("needs at least one task")
        names = [t if isinstance(t, str) else t.name for t in tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"task {twice[0]!r} is listed twice; give each task its own name")
        return tasks

    @property
    def task_names(self) -> list[str]:
        return [t if isinstance(t, str) else t.name for t in self.tasks]

    @model_validator(mode="after")
    def _preprocess_of_every_task(self):
        # resolved here, so the run's stored config says what was applied even if a task's
        # default changes later
        extra = sorted(set(self.preprocess) - set(self.task_names))
        if extra:
            raise ValueError(f"preprocess lists {extra}, which are not in data.tasks "
                             f"{self.task_names}; remove them or add them to data.tasks")
        self.preprocess = {
            (t if isinstance(t, str) else t.name): self.preprocess.get(
                t if isinstance(t, str) else t.name) or (
                PreprocessSection(**get_task(t).preprocess.to_dict()) if isinstance(t, str)
                else t.preprocess.model_copy())
            for t in self.tasks}
        return self


class DistillSection(Section):
    teacher: str = Field(description="a trained run directory (or its best.pt) of the same "
                         "tasks, e.g. the float model of the network being quantized")
    weight: YamlFloat = Field(0.5, ge=0, le=1, description="share of the loss that matches "
                              "the teacher; the rest is the labels' cross-entropy")
    temperature: YamlFloat = Field(2.0, gt=0, description="softens both models' class "
                                   "probabilities before they are compared")


class TrainSection(Section):
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: YamlFloat = Field(2e-3, gt=0, lt=1)
    weight_decay: YamlFloat = Field(0.0, ge=0)
    loss: Literal["masked", "cross_task_negatives"] = "masked"
    cross_task_weight: YamlFloat = 1.0
    patience: int = Field(5, gt=0, description="early stopping on mean validation accuracy")
    amp: bool = Field(True, description="only takes effect on CUDA")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Optional[int] = Field(None, gt=0, description="torch CPU threads; null = all cores")
    init_from: Optional[str] = Field(
        None, description="a trained run directory (or its best.pt) of the same network whose "
        "weights start this run, e.g. its float model before QAT; the quantizers' scales start "
        "from statistics as in a fresh run")
    distill: Optional[DistillSection] = Field(
        None, description="knowledge distillation: also learn the class probabilities of a "
        "trained teacher run on each (augmented) training image")


class RunConfig(Section):
    """A training run (brevitas_models.train): `medzoo train CONFIG`."""
    name: str = Field("run", description="the run directory is out_dir/name")
    seed: int = 0
    out_dir: str = "runs"
    data: DataSection = Field(default_factory=DataSection)
    model: AnyModelSection = Field(default_factory=MLPSection,
                                   description="the fields of its `arch` (default mlp)")
    train: TrainSection = Field(default_factory=TrainSection)

    @field_validator("name")
    @classmethod
    def _plain_directory_name(cls, name):
        # the run directory is out_dir/name: a name with a path in it would write elsewhere
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise ValueError(f"{name!r} must be a plain directory name (no '/' or '\\', not "
                             "'.' or '..'); use out_dir to choose where runs go")
        return name

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        return self.model_dump()


# ----------------------------------------------------------- pydantic errors -> one line

def validate_section(cls: type[BaseModel], raw: Any):
    """`cls` from `raw`, or ConfigError "dotted.field: message" for the first problem."""
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_one_line(cls, e.errors())) from None


def _strip(tp):
    """The type under Annotated[...] and Optional[...]."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) is Union and type(None) in get_args(tp) and len(get_args(tp)) == 2:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _is_section(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _locate(root, loc):
    """Follow a pydantic error location through the section classes -> (dotted path, the
    type at the end, the FieldInfo of the last field). The `arch` tag pydantic puts in the
    location of a model section is not part of the path."""
    path, tp, info = "", root, None
    for part in loc:
        tp = _strip(tp)
        if isinstance(part, int):
            path += f"[{part}]"
            tp, info = (get_args(tp) or (None,))[0], None
        elif _is_section(tp):
            info = tp.model_fields.get(part)
            path = f"{path}.{part}" if path else part
            tp = info.annotation if info else None
        elif get_origin(tp) is Union:  # pydantic names the member: the arch of a section
            tp = (_UNION_TAGS[part] if part in _UNION_TAGS else
                  ARCHS[part][0] if part in ARCHS else None)
        elif get_origin(tp) is dict:  # a mapping's key: the path goes on into its value type
            path = f"{path}.{part}" if path else str(part)
            tp, info = get_args(tp)[1], None
        else:
            path = f"{path}.{part}" if path else str(part)
    return path, _strip(tp), info


def _bounds(info, ctx) -> dict:
    """The range of a field: from its declaration, else the bound the error names."""
    bounds = {}
    for meta in (info.metadata if info else []):
        for name in ("gt", "ge", "lt", "le"):
            if getattr(meta, name, None) is not None:
                bounds[name] = getattr(meta, name)
    return bounds or dict(ctx)


def _range_text(value, bounds) -> str:
    low = bounds.get("gt", bounds.get("ge"))
    high = bounds.get("lt", bounds.get("le"))
    if low is not None and high is not None:
        if "ge" in bounds and "le" in bounds and isinstance(low, int) and isinstance(high, int):
            return f"{value} is outside {low}..{high}"
        return (f"{value} is outside {'[' if 'ge' in bounds else '('}{low}, {high}"
                f"{']' if 'le' in bounds else ')'}")
    if bounds.get("gt") == 0:
        return "must be positive"
    name, bound = next(iter(bounds.items()))
    return f"must be {dict(gt='>', ge='>=', lt='<', le='<=')[name]} {bound}"


_EXPECTED = {  # pydantic error type -> what the field takes
    "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "finite_number": "a finite number", "bool_type": "true/false", "string_type": "a string",
    "list_type": "a list"}


def _one_line(root, errors: list[dict]) -> str:
    """The first of pydantic's errors as "dotted.field: message" in this project's words."""
    first = errors[0]
    kind, value, ctx = first["type"], first.get("input"), first.get("ctx") or {}
    if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: not a string (YAML `1: x`)
        parent = first["loc"][:-1]
        keys = [e["loc"][-1] for e in errors
                if e["type"] in ("extra_forbidden", "invalid_key") and e["loc"][:-1] == parent]
        return _unknown_keys(root, parent, keys)
    path, tp, info = _locate(root, first["loc"])
    where = path or "<top level>"
    if (tp is None and info is not None and get_origin(_strip(info.annotation)) is Union
            and kind != "value_error"):  # a value fitting no member of a union field
        return f"{where}: expected {_union_text(info.annotation)}, got {value!r}"
    if kind in _EXPECTED:
        return f"{where}: expected {_EXPECTED[kind]}, got {value!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found") and isinstance(value, dict):
        return f"{where}.arch: {value.get('arch')!r} is not one of {list(ARCHS)}"
    if kind == "model_type" and first["loc"][-1] == "task":  # a data.tasks entry
        return (f"{where}: expected a built-in task's name or a task declaration (a mapping: "
                f"name, path, format, ...), got {value!r}")
    if kind in ("model_type", "dict_type", "union_tag_not_found"):
        return f"{where}: expected a mapping, got {type(value).__name__}"
    if kind == "literal_error" and get_origin(tp) is Literal:
        return f"{where}: {value!r} is not one of {list(get_args(tp))}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{where}: {_range_text(value, _bounds(info, ctx))}"
    if kind == "value_error":
        return f"{where}: {ctx['error']}"
    return f"{where}: {first['msg']}"


def _union_text(tp) -> str:
    """What a union field takes, in words: "'auto' or a list"."""
    words = {str: "a string", int: "an integer", float: "a number", bool: "true/false"}
    out = []
    for a in get_args(_strip(tp)):
        a = _strip(a)
        out += ([repr(v) for v in get_args(a)] if get_origin(a) is Literal else
                ["a list"] if get_origin(a) is list else [words.get(a, getattr(a, "__name__",
                                                                                 str(a)))])
    return " or ".join(out)


def _unknown_keys(root, parent_loc, keys: list) -> str:
    path, section, _ = _locate(root, parent_loc)
    known = sorted(section.model_fields)
    arch = next((name for name, (cls, _) in ARCHS.items() if cls is section), None)
    for key in keys:  # a field of another architecture: say which
        owners = [name for name, (cls, _) in ARCHS.items() if key in cls.model_fields]
        if arch and owners:
            return (f"{path}.{key}: a field of arch {' / '.join(owners)}, not of arch {arch}; "
                    f"remove it or set {path}.arch: {owners[0]}")
    guess = difflib.get_close_matches(str(keys[0]), known, n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return (f"{path or '<top level>'}: unknown key(s) {sorted(keys, key=str)}{hint}; "
            f"known keys: {known}")


# ----------------------------------------------------------------------------- loading

def _check(cond: bool, where: str, msg: str):
    if not cond:
        raise ConfigError(f"{where}: {msg}")


def _check_relations(cfg: RunConfig):
    """Checks across sections (each field's own range is checked by its declaration)."""
    problem = cfg.model.input_size_problem(cfg.data.size)
    if problem:
        raise ConfigError(f"model.{problem[0]}: {problem[1]}")
    t = cfg.train
    _check(cfg.data.epoch_size is None or t.batch_size <= cfg.data.epoch_size, "train.batch_size",
           f"{t.batch_size} is larger than data.epoch_size {cfg.data.epoch_size}: an epoch would "
           "run no step; lower train.batch_size or raise data.epoch_size")
    _check(not (t.loss == "cross_task_negatives" and cfg.model.mode == "multiclass"),
           "train.loss", "cross_task_negatives needs per-task heads (model.mode: multitask)")


def _resolve_tasks(cfg: RunConfig):
    """Inline tasks with `classes: auto` (or image trees without `splits`) get them listed
    from their files (data.resolve_task): the run stores, and everything downstream reads, the
    resolved declaration. A declaration that is already resolved is not looked at here (a
    stored config loads without its data); its files are checked when they are loaded."""
    from .data import TaskDataError, resolve_task
    for i, t in enumerate(cfg.data.tasks):
        if isinstance(t, str):
            continue
        try:
            cfg.data.tasks[i] = resolve_task(t, cfg.data.root)
        except TaskDataError as e:
            raise ConfigError(f"data.tasks[{i}].{e.field}: {e}") from None
        except FileNotFoundError as e:  # no data root at all
            raise ConfigError(f"data.tasks[{i}].path: {e}") from None


# Before each arch had its own section, to_dict() wrote every arch's model fields (an MLP run's
# checkpoint also holds `convs`). Such a complete dump (checkpoints, run directories'
# config.yaml) still loads and compares equal: the other arch's fields were never used.
_PRE_SPLIT_MODEL_KEYS = {"arch", "mode", "in_channels", "w_bits", "a_bits", "hidden", "convs",
                         "head_hidden", "embed_dim"}


def _drop_pre_split_fields(raw):
    model = raw.get("model") if isinstance(raw, dict) else None
    if not (isinstance(model, dict) and set(model) == _PRE_SPLIT_MODEL_KEYS
            and model["arch"] in ("mlp", "cnn")):
        return raw
    fields = ARCHS[model["arch"]][0].model_fields
    return {**raw, "model": {k: v for k, v in model.items() if k in fields}}


def stored_run_config(raw):
    """A config as a run stored it (checkpoint, the run directory's config.yaml) -> the same
    run in today's fields. Stored configs list every task's preprocessing; one without
    `data.preprocess` was trained before preprocessing existed, so its tasks had none (not
    today's task defaults, which would silently change what the model is fed)."""
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, dict) or "preprocess" in data:
        return raw
    tasks = data.get("tasks", DataSection.model_fields["tasks"].default_factory())
    return {**raw, "data": {**data, "preprocess": {
        (t["name"] if isinstance(t, dict) else t): {} for t in tasks}}}


def config_from_dict(raw: dict, source: str = "<config>") -> RunConfig:
    try:
        cfg = validate_section(RunConfig, _drop_pre_split_fields(raw))
        _resolve_tasks(cfg)
        _check_relations(cfg)
        return cfg
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


def flatten_dict(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1} (empty dicts kept as values): config diffs and hashes."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ------------------------------------------------------------------------- JSON Schema
# finn_build.config.write_schemas() (`make schema`) writes both config kinds to docs/schema/.

_EDITOR_HINT = ("Editor completion and checks (yaml-language-server, e.g. VS Code's YAML "
                "extension): make this the first line of the YAML file, the path relative to "
                "it: `# yaml-language-server: $schema=../docs/schema/{file}`. Generated by "
                "`make schema` from the pydantic models (docs/configs.md).")


def json_schema(cls: type[BaseModel], file: str) -> dict:
    """The JSON Schema of config class `cls`, its description saying how an editor uses
    it from docs/schema/`file`."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **cls.model_json_schema()}
    hint = _EDITOR_HINT.format(file=file)
    schema["description"] = f"{schema.get('description', '')} {hint}".strip()
    return schema


def schema_text(schema: dict) -> str:
    return json.dumps(schema, indent=2) + "\n"
