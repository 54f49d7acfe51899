"""What the steps share: ``Build`` (config, build directory, verifier) and ``BuildState``,
the typed record of what the steps found. Every field has one writer (named beside it);
other steps and the reports only read it. ``state.json`` and the per-step resume records
hold ``BuildState.to_dict()``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from brevitas_models.files import write_json_atomic


@dataclass
class BuildState:
    """The build's findings, one field per fact (writer in the comment)."""

    # the pipeline (run_build)
    started: Optional[str] = None
    config: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)
    step_times: dict = field(default_factory=dict)
    failed_step: Optional[str] = None
    error: Optional[dict] = None              # {type, message, traceback}
    total_seconds: Optional[float] = None
    wall_seconds_this_run: Optional[float] = None
    # load_model
    meta: Optional[dict] = None               # model.meta.json: tasks, input, bit widths
    model_source: Optional[str] = None
    model_files: dict = field(default_factory=dict)   # {path: sha256}
    data_files: dict = field(default_factory=dict)    # verification images {path: sha256}
    export_fixups: dict = field(default_factory=dict)
    # streamline
    streamlined_host_ops: Optional[dict] = None       # {pre, post} of the streamlined graph
    acc_tensor: Optional[str] = None                  # the integer tensor the host post-ops read
    # minimize_datatypes, specialize_layers, insert_dwc_fifo
    rtl_datatype_changes: list = field(default_factory=list)
    # create_dataflow_partition
    host_ops: Optional[dict] = None           # host_ops.json: pre/post ops + partition I/O
    parent_model: Optional[str] = None
    # specialize_layers, insert_dwc_fifo
    backends: list = field(default_factory=list)      # [{name, op_type, backend}]
    # set_folding
    folding: Optional[dict] = None
    # set_fifo_depths: depths, and the measured interval of the design as built
    fifo_depths: Optional[dict] = None
    # estimates: FINN's estimates with our corrections (est_*), uncorrected (finn_*), fits
    estimates: Optional[dict] = None
    # rtlsim: stitched Verilator run (performance), synthesis, gate level
    rtlsim: Optional[dict] = None
    # the Zynq bitstream flow (finn_build.bitstream): partitions, tools, artifacts
    bitstream: dict = field(default_factory=dict)
    # custom steps (pipeline inject_after) record here, under their own name
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BuildState":
        """Raises ValueError naming the keys a record of another finn_build version has."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown build state fields {unknown}")
        return cls(**d)


class Build:
    """Config + build directory + state shared by the steps."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "intermediate").mkdir(exist_ok=True)
        self.report_dir = self.out / "report"
        self.report_dir.mkdir(exist_ok=True)
        self.state_path = self.out / "state.json"
        self.state = BuildState()
        self.verifier = None
        self._sha_cache: dict = {}

    def save_state(self):
        write_json_atomic(self.state_path, self.state.to_dict())

    def init_verifier(self, reset: bool):
        from .verify import Verifier

        vdir = self.out / "verification"
        if reset and vdir.exists():
            import shutil

            shutil.rmtree(vdir)
        self.verifier = Verifier(vdir, self.state.meta)

    def sha256(self, path) -> str:
        from brevitas_models.export import sha256_file

        p = str(path)
        if p not in self._sha_cache:
            self._sha_cache[p] = sha256_file(p)
        return self._sha_cache[p]

    def artifact(self, index: int, name: str) -> Path:
        return self.out / "intermediate" / f"{index:02d}_{name}.onnx"

    def snapshot(self, index: int, name: str) -> Path:
        return self.out / "intermediate" / f"{index:02d}_{name}.state.json"

    def file_sha(self, path) -> Optional[str]:
        try:
            return self.sha256(path) if Path(path).is_file() else None
        except OSError as e:  # unreadable: differs from any recorded hash
            return f"unreadable: {e.strerror}"
