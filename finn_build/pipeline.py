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
    state.json                   build state
    build.log                    FINN / qonnx / Brevitas log records and warnings (ours too)
    intermediate/NN_<step>.state.json   the build state right after that step (for --from-step)

Resume (``--from-step S``) continues from ``NN_<S-1>.onnx`` with the state the build had
right after step S-1, and only if nothing an earlier step read has changed since (config
fields per ``FIRST_READER``, the sha256 of the model/folding/FIFO/data files, the step list,
the artifact itself); otherwise ``ResumeError`` names what differs and where to start
instead. Files that later steps of an earlier run wrote are removed first; a build without
``--from-step`` removes everything an earlier run wrote. Every file the pipeline writes is
written to a temporary name and renamed, so none is ever half-written.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from brevitas_models.config import flatten_dict
from brevitas_models.files import write_atomic, write_json_atomic

from .build import Build, BuildState
from .config import dump_config
from .errors import OutputDirError, ResumeError
from .finn_env import ensure_finn_env
from .progress import BuildLog, echo_to
from .provenance import now
from .report import write_reports
from .steps import STEPS

log = logging.getLogger("finn_build")


# The first step that reads each config field (the longest dotted prefix listed wins; None:
# no step's result depends on it). A field not listed, or whose step is not in the step list,
# counts as read by the first step, so a resume can only be refused too often, never wrongly
# allowed. Keep this in sync when a step starts to read a field.
FIRST_READER = {
    "name": None, "output_dir": None,       # where the build is and what reports call it
    "rtlsim.cache_dir": None,                # compiled libraries, keyed by a hash of sources
    "model": "load_model", "verify": "load_model",
    "board (DSP block)": "minimize_datatypes",  # RTL weight datatypes depend on it
    "board": "specialize_layers",            # the part: layer specialization, folding, ...
    "allow_hls": "specialize_layers",
    "clock_mhz": "set_folding", "folding": "set_folding",
    "fifo_depths": "set_fifo_depths",
    "rtlsim": "rtlsim",
}
# What the steps write next to intermediate/NN_<step>.onnx: a resume removes the files here
# that were written after the step it resumes from (they belong to steps that are re-run).
# verification/ is pruned by its own records, bitstream/ has its own state and resume.
STEP_OUTPUTS = ("intermediate", "report", "host_ops.json", "rtlsim", "fifo_sizing")
# a build without --from-step starts with none of these (model/ is always rewritten)
FRESH_REMOVES = STEP_OUTPUTS + ("verification", "bitstream", "verification.json",
                                "build_report.json", "build_report.md", "state.json",
                                "build.log")


def _dir_error(out, e: OSError) -> OutputDirError:
    return OutputDirError(
        f"cannot write the build directory {out}: {e.strerror or e} "
        f"({e.filename or out}); fix: make it writable / free space, or set output_dir to "
        "another directory")


def _is_dir_fault(e: BaseException, out: Path) -> bool:
    """A full, read-only or not writable build directory (not, e.g., an unreadable input)."""
    if not isinstance(e, OSError) or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                                                     errno.EACCES):
        return False
    return e.filename is None or Path(e.filename).resolve().is_relative_to(out.resolve())


def step_inputs(build) -> dict:
    """Everything a step's result depends on besides its input model, flat: each config
    field (dotted), the board's DSP block, the sha256 of the model source, folding and
    FIFO-depth files and of the data files read so far."""
    cfg = build.cfg
    flat = flatten_dict(json.loads(json.dumps(cfg.to_dict(), default=str)))
    flat["board (DSP block)"] = cfg.board_info.dsp_block
    files = input_files(cfg)
    for src in build.state.data_files:
        files[f"verify (data file {src})"] = src
    for name, path in files.items():
        flat[f"{name} (sha256 of the file)"] = build.file_sha(path)
    return flat


def save_resume_record(build, index: int, name: str):
    """The resume record of a finished step, written after its artifact."""
    write_json_atomic(build.snapshot(index, name), {
        "step": name, "artifact_sha256": build.sha256(build.artifact(index, name)),
        "inputs": step_inputs(build), "state": build.state.to_dict(),
        "verification": build.verifier.results if build.verifier else None})


def input_files(cfg) -> dict:
    """{config field: path} of the files this config makes the steps read."""
    from .model_io import source_files

    files = dict(source_files(cfg))
    if cfg.folding.file:
        files["folding.file"] = cfg.folding.file
    if cfg.fifo_depths not in ("minimal", "simulate"):
        files["fifo_depths"] = cfg.fifo_depths
    return files


def first_reader(key: str, names: list) -> Optional[int]:
    """Index of the first step that reads config item ``key`` (see FIRST_READER)."""
    field = key.split(" (sha256")[0]
    for p in sorted(FIRST_READER, key=len, reverse=True):
        if field == p or field.startswith(p + ".") or field.startswith(p + " ("):
            step = FIRST_READER[p]
            if step is None:
                return None
            return names.index(step) if step in names else 0
    return 0


def _short(v):
    return f"{v[:12]}..." if isinstance(v, str) and len(v) == 64 else repr(v)


def _resume_hint(build, names) -> str:
    done = 0
    while done < len(names) and build.snapshot(done, names[done]).exists():
        done += 1
    if done == 0:
        return "run the full build (without --from-step)"
    return (f"the last step recorded as done there is {names[done - 1]!r}: use --from-step "
            f"{names[done]!r} or an earlier step, or the full build")


def _check_resume(build, names, start) -> dict:
    """-> the snapshot of step start-1, if resuming there gives what a full build with this
    config would; else ResumeError (nothing is changed)."""
    prev = names[start - 1]
    art, sp = build.artifact(start - 1, prev), build.snapshot(start - 1, prev)
    where = f"cannot resume from {names[start]!r} in {build.out}"
    if not art.exists() or not sp.exists():
        missing = art if not art.exists() else sp
        raise ResumeError(f"{where}: {missing} is missing (step {prev!r} did not complete in "
                          f"this build directory, or was built before resume records "
                          f"existed); {_resume_hint(build, names)}")
    try:
        snap = json.loads(sp.read_text())
    except ValueError:
        raise ResumeError(f"{where}: {sp} is not readable JSON (damaged); rebuild it with "
                          f"--from-step {prev!r} or the full build") from None
    try:
        old_state = BuildState.from_dict(snap["state"])
    except (KeyError, TypeError, ValueError) as e:
        raise ResumeError(f"{where}: {sp} was written by another version of finn_build ({e}); "
                          "run the full build (without --from-step)") from None
    old_steps = old_state.steps[:start]
    if old_steps != names[:start]:
        raise ResumeError(f"{where}: the earlier run had the steps {old_steps}, this one "
                          f"{names[:start]}; run the full build (without --from-step)")
    if build.sha256(art) != snap["artifact_sha256"]:
        raise ResumeError(f"{where}: {art} is damaged or was changed after step {prev!r} wrote "
                          f"it (its sha256 is not the recorded one); rebuild it: --from-step "
                          f"{prev!r} (or the full build)")
    build.state = BuildState(data_files=old_state.data_files)  # hash the same files
    old, new = snap["inputs"], step_inputs(build)
    diff = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            i = first_reader(k, names)
            if i is not None and i < start:
                diff.append((i, f"  {k}: {_short(old.get(k))} -> {_short(new.get(k))} "
                                f"(read by {names[i]})"))
    if diff:
        i = min(d[0] for d in diff)
        fix = ("run the full build (without --from-step)" if i == 0 else
               f"resume from {names[i]!r} (the first step that reads them) or earlier")
        raise ResumeError(f"{where}: the steps before it were built with other inputs than "
                          f"this config's:\n" + "\n".join(d[1] for d in sorted(diff))
                          + f"\nFix: {fix}")
    return snap


def _remove(out: Path, entries, newer_than_ns: Optional[int] = None, keep=()):
    """Delete the files under ``out/entries`` (only those modified after ``newer_than_ns``),
    never a file in ``keep`` (an input of this build may live in an earlier build's report);
    then the directories left empty."""
    for e in entries:
        p = out / e
        files = [p] if p.is_file() else [f for f in p.rglob("*") if not f.is_dir()]
        for f in files:
            if f.resolve() in keep:
                continue
            if newer_than_ns is None or f.lstat().st_mtime_ns > newer_than_ns:
                f.unlink()
        if p.is_dir():
            for d, _, _ in sorted(os.walk(p), key=lambda w: -len(w[0])):
                if d != str(p) and not os.listdir(d):
                    os.rmdir(d)


def _restore(build, snap, names, start, keep):
    """The build directory as it was right after step start-1: its state and verification
    records; the artifacts of the re-run steps and the files they wrote removed."""
    mtime = build.snapshot(start - 1, names[start - 1]).stat().st_mtime_ns
    for pattern in ("[0-9][0-9]_*.onnx", "[0-9][0-9]_*.state.json"):  # any step list's
        for p in (build.out / "intermediate").glob(pattern):
            if int(p.name[:2]) >= start:
                p.unlink()
    _remove(build.out, STEP_OUTPUTS, mtime, keep)
    build.state = BuildState.from_dict(snap["state"])
    build.state.failed_step = build.state.error = None
    build.state.total_seconds = build.state.wall_seconds_this_run = None
    if build.state.meta is not None:
        build.init_verifier(reset=False)
        v = build.verifier
        v.results = snap["verification"] or {}
        for f in v.vdir.glob("stage_*.npz"):
            if f.stem[len("stage_"):] not in v.results:
                f.unlink()
        kinds = {r.get("kind") for r in v.results.values()}  # the first checks define refs
        if "integer" not in kinds:
            (v.vdir / "ref_acc.npz").unlink(missing_ok=True)
        if not kinds & {"float", "integer"}:
            (v.vdir / "ref_logits.npz").unlink(missing_ok=True)
        v.save()


def resolve_steps(steps=None, inject_after: Optional[dict] = None):
    """[(name, fn)] from the default list; ``inject_after={step: [(name, fn), ...]}`` adds
    custom steps (same signature) after a named step."""
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

    steps = resolve_steps(steps, inject_after)
    names = [n for n, _ in steps]
    for s, label in ((from_step, "--from-step"), (stop_step, "--stop-step")):
        if s is not None and s not in names:
            raise ResumeError(f"{label} {s!r}: unknown step; steps are: {', '.join(names)}")
    start = names.index(from_step) if from_step else 0
    if stop_step is not None and names.index(stop_step) < start:
        raise ResumeError(f"--stop-step {stop_step!r} comes before --from-step {from_step!r}")
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output_dir {out} is an existing file, not a directory; fix: "
                             "remove it or set output_dir to another path")
    if start > 0 and not out.is_dir():
        raise ResumeError(f"cannot resume from {from_step!r}: {out} does not exist; run the "
                          "full build (without --from-step)")
    keep = {Path(f).resolve() for f in input_files(cfg).values()}
    try:
        if start == 0 and out.is_dir():  # nothing of an earlier run may pass for this one's
            _remove(out, FRESH_REMOVES, keep=keep)
        build = Build(cfg)
        model = None
        if start > 0:
            snap = _check_resume(build, names, start)  # refuses before anything changes
            prev = build.artifact(start - 1, names[start - 1])
            try:
                model = ModelWrapper(str(prev))
            except Exception as e:  # noqa: BLE001  (its sha256 is the one the build wrote)
                raise ResumeError(f"cannot resume: {prev} is not a readable ONNX model ({e}); "
                                  f"rebuild it: --from-step {names[start - 1]!r}") from None
            _restore(build, snap, names, start, keep)
        else:
            build.state = BuildState(started=now())
        write_atomic(build.out / "config.yaml", lambda t: dump_config(cfg, t))
        build.state.config = cfg.to_dict()
        build.state.steps = names
        build.save_state()
    except OSError as e:
        raise _dir_error(out, e) from None
    with echo_to(echo), BuildLog(build.out / "build.log"):
        model, error = _run_steps(build, steps, start, stop_step, model, echo)
        try:
            build.save_state()
            report = write_reports(build, model)
        except OSError as e:
            if isinstance(error, OutputDirError):
                raise error from None
            raise _dir_error(build.out, e) from None
    if error is not None:
        raise error
    return report


def _run_steps(build, steps, start, stop_step, model, echo):
    """Steps ``start``.. in order, each artifact and resume record saved after it; stops at
    the first failure. -> (last model, the failure or None)"""
    import onnx

    error = None
    t_build = time.time()
    for i in range(start, len(steps)):
        name, fn = steps[i]
        t = time.time()
        echo(f"[finn_build] step {i + 1}/{len(steps)} {name} ...")
        try:
            model = fn(model, build)
            build.state.step_times[name] = round(time.time() - t, 2)
            write_atomic(build.artifact(i, name),
                         lambda p: onnx.save(model.model, str(p), format="protobuf"))
            save_resume_record(build, i, name)
            build.save_state()
        except Exception as e:  # record, report, re-raise
            if _is_dir_fault(e, build.out):
                e = _dir_error(build.out, e)
            build.state.step_times.setdefault(name, round(time.time() - t, 2))
            build.state.failed_step = name
            build.state.error = {"type": type(e).__name__, "message": str(e),
                                 "traceback": traceback.format_exc()[-4000:]}
            error = e
            log.info("step %s failed", name, exc_info=True)  # the traceback: build.log only
            echo(f"[finn_build] step {name} FAILED after {time.time() - t:.1f}s: "
                 f"{type(e).__name__}: {e}")
            break
        echo(f"[finn_build]   done in {time.time() - t:.1f}s -> {build.artifact(i, name).name}")
        if name == stop_step:
            break
    if error is None:
        build.state.failed_step = build.state.error = None
    build.state.total_seconds = round(sum(build.state.step_times.values()), 2)
    build.state.wall_seconds_this_run = round(time.time() - t_build, 2)
    return model, error
