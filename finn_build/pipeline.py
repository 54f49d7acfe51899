"""The build runner: ordered steps, one artifact per step, timing, resume, reports.

Build directory layout (``output_dir``)::

    config.yaml                  snapshot of the validated config
    model/model.onnx, model.meta.json   the QONNX the build started from
    intermediate/NN_<step>.onnx  model after each step (resume point)
    intermediate/dataflow_parent.onnx   host ops + partition node
    host_ops.json                exact host-side ops (pre/post) for a runtime
    verification/                images, per-stage outputs, results.json
    verification.json            all-output verification summary (all stages)
    report/                      estimates, folding config, candidates, ...
    build_report.json / .md      per-node type+backend, estimates, timings, provenance
    state.json                   build state (for --from-step)
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from .finn_env import ensure_finn_env, package_versions

log = logging.getLogger("finn_build")

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_BUILD = 2
EXIT_VERIFY = 3
EXIT_NOT_RTL = 4
EXIT_NO_FIT = 5
EXIT_NO_VIVADO = 6  # finn_build.bitstream.VivadoRequiredError (a BuildError): a Vivado/
                    # Vitis HLS step on a machine without them; earlier steps are kept


class Build:
    """Config + build-directory state shared by the steps."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "intermediate").mkdir(exist_ok=True)
        self.report_dir = self.out / "report"
        self.report_dir.mkdir(exist_ok=True)
        self.state_path = self.out / "state.json"
        self.state: dict = {}
        self.verifier = None
        self._sha_cache: dict = {}

    # ---------------------------------------------------------------- state
    def load_state(self):
        if self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())
        if "meta" in self.state:
            self.init_verifier(reset=False)

    def save_state(self):
        self.state_path.write_text(json.dumps(self.state, indent=1, default=str))

    def init_verifier(self, reset: bool):
        from .verify import Verifier

        vdir = self.out / "verification"
        if reset and vdir.exists():
            import shutil

            shutil.rmtree(vdir)
        self.verifier = Verifier(vdir, self.state["meta"])

    def sha256(self, path) -> str:
        from brevitas_models.export import sha256_file

        p = str(path)
        if p not in self._sha_cache:
            self._sha_cache[p] = sha256_file(p)
        return self._sha_cache[p]

    def artifact(self, index: int, name: str) -> Path:
        return self.out / "intermediate" / f"{index:02d}_{name}.onnx"


def _git_commit() -> Optional[str]:
    """HEAD, with "+dirty" when tracked files differ from it (provenance of a result)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=root, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=root, timeout=10)
        return f"{head}+dirty" if head and dirty.returncode == 1 else head
    except Exception:
        return None


def resolve_steps(steps=None, inject_after: Optional[dict] = None):
    """[(name, fn)] from the default list; ``inject_after={step: [(name, fn), ...]}`` adds
    custom steps (same signature) after a named step."""
    from .steps import STEPS

    steps = list(steps or STEPS)
    if inject_after:
        out = []
        for name, fn in steps:
            out.append((name, fn))
            out.extend(inject_after.get(name, []))
        steps = out
    return steps


def run_build(cfg, from_step: Optional[str] = None, stop_step: Optional[str] = None,
              steps=None, inject_after: Optional[dict] = None,
              echo: Callable = print) -> dict:
    """Run the pipeline; returns the build report dict. Raises the step's exception on
    failure after writing the (partial) report and verification.json."""
    ensure_finn_env()
    from qonnx.core.modelwrapper import ModelWrapper

    from .config import dump_config

    steps = resolve_steps(steps, inject_after)
    names = [n for n, _ in steps]
    for s, label in ((from_step, "--from-step"), (stop_step, "--stop-step")):
        if s is not None and s not in names:
            raise ValueError(f"{label} {s!r}: unknown step; steps are: {', '.join(names)}")
    build = Build(cfg)
    start = 0
    model = None
    if from_step is not None:
        start = names.index(from_step)
        build.load_state()
        if start > 0:
            prev = build.artifact(start - 1, names[start - 1])
            if not prev.exists():
                raise FileNotFoundError(
                    f"cannot resume from {from_step!r}: {prev} does not exist (run the "
                    "build from an earlier step first)")
            model = ModelWrapper(str(prev))
        # drop results of the steps that are re-run
        build.state["step_times"] = {k: v for k, v in build.state.get("step_times", {}).items()
                                     if k in names[:start]}
    else:
        build.state = {"started": _dt.datetime.now().isoformat(timespec="seconds")}
    dump_config(cfg, build.out / "config.yaml")
    build.state["config"] = cfg.to_dict()
    build.state.setdefault("step_times", {})
    build.state["steps"] = names
    error = None
    t_build = time.time()
    for i in range(start, len(steps)):
        name, fn = steps[i]
        t = time.time()
        echo(f"[finn_build] step {i + 1}/{len(steps)} {name} ...")
        try:
            model = fn(model, build)
        except Exception as e:  # record, report, re-raise
            build.state["step_times"][name] = round(time.time() - t, 2)
            build.state["failed_step"] = name
            build.state["error"] = {"type": type(e).__name__, "message": str(e),
                                    "traceback": traceback.format_exc()[-4000:]}
            error = e
            echo(f"[finn_build] step {name} FAILED after {time.time() - t:.1f}s: "
                 f"{type(e).__name__}: {e}")
            break
        dt = time.time() - t
        build.state["step_times"][name] = round(dt, 2)
        model.save(str(build.artifact(i, name)))
        build.save_state()
        echo(f"[finn_build]   done in {dt:.1f}s -> {build.artifact(i, name).name}")
        if name == stop_step:
            break
    if error is None:
        build.state.pop("failed_step", None)
        build.state.pop("error", None)
    build.state["total_seconds"] = round(sum(build.state["step_times"].values()), 2)
    build.state["wall_seconds_this_run"] = round(time.time() - t_build, 2)
    build.save_state()
    from .report import write_reports

    report = write_reports(build, model)
    if error is not None:
        raise error
    return report


def exit_code_for(exc: BaseException) -> int:
    from .config import BuildConfigError
    from .steps import BuildError
    from .verify import VerificationError

    if isinstance(exc, BuildConfigError):
        return EXIT_CONFIG
    if isinstance(exc, VerificationError):
        return EXIT_VERIFY
    if isinstance(exc, BuildError):
        return exc.exit_code
    return EXIT_BUILD


def provenance(build) -> dict:
    return {"model_files": build.state.get("model_files", {}),
            "data_files": build.state.get("data_files", {}),
            "packages": package_versions(), "git_commit": _git_commit(),
            "command": " ".join(sys.argv), "config_file": build.cfg.source_file,
            "date": _dt.datetime.now().isoformat(timespec="seconds")}
