"""Faults of the build directory (issue 11, no silent wrong results), with the real finn-plus
pipeline on a tiny MLP: a --from-step resume after a change upstream of it is refused naming
what changed (a later-step change is allowed), a damaged intermediate is named, stale
artifacts of an earlier or failed run never pass for current, and an unusable output_dir
gives one clear line."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finn_build.config import config_from_dict
from finn_build.errors import ResumeError
from finn_build.pipeline import FIRST_READER, run_build
from build_helpers import tiny_build_dict

ROOT = Path(__file__).resolve().parents[1]
FAST = {"fifo_depths": "minimal", "rtlsim": {"enabled": False}}  # no Verilator


def _quiet(*a, **k):
    pass


def _cfg(out_dir):
    d = tiny_build_dict(out_dir, "mlp", **FAST)
    d["output_dir"] = str(out_dir)
    return config_from_dict(d)


def _cli(cfg, tmp_path, *args):
    y = tmp_path / "build.yaml"
    y.write_text(yaml.safe_dump(cfg.to_dict()))
    return subprocess.run([sys.executable, "-m", "finn_build", "--config", str(y), *args],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})


def _snapshot_of(out: Path) -> dict:
    """{relative path: bytes} of a build directory (to show a refusal changed nothing)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A complete tiny build; tests resume COPIES of it (copytree keeps the mtimes)."""
    out = tmp_path_factory.mktemp("base") / "tiny_mlp"
    cfg = _cfg(out)
    return cfg, run_build(cfg, echo=_quiet)


@pytest.fixture
def build_copy(base, tmp_path):
    cfg, rep = base
    out = tmp_path / "tiny_mlp"
    shutil.copytree(cfg.out_dir, out)
    return _cfg(out), rep


def test_first_reader_table_names_existing_steps():
    from finn_build.steps import STEP_NAMES

    steps = {s for s in FIRST_READER.values() if s}
    assert steps <= set(STEP_NAMES), steps - set(STEP_NAMES)


def test_resume_refused_when_the_model_file_changed(base, tmp_path):
    """QONNX source edited in place (one weight): --from-step must not build the old model."""
    from qonnx.core.modelwrapper import ModelWrapper

    cfg0, _ = base
    src = tmp_path / "src"
    src.mkdir()
    for f in ("model.onnx", "model.meta.json"):
        shutil.copy(Path(cfg0.out_dir) / "model" / f, src / f)
    d = tiny_build_dict(tmp_path, "mlp", **FAST, model={"qonnx": str(src / "model.onnx")})
    d["model"].pop("untrained")
    cfg = config_from_dict(d)
    run_build(cfg, stop_step="set_folding", echo=_quiet)
    out = Path(cfg.out_dir)
    m = ModelWrapper(str(src / "model.onnx"))
    name = next(i.name for i in m.graph.initializer if len(i.dims) == 2)
    m.set_initializer(name, -m.get_initializer(name))
    m.save(str(src / "model.onnx"))
    before = _snapshot_of(out)
    r = _cli(cfg, tmp_path, "--from-step", "set_folding")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "BUILD OK" not in r.stdout and "Traceback" not in r.stderr
    assert "model.qonnx (sha256 of the file)" in r.stderr and "(read by load_model)" in r.stderr
    assert "run the full build (without --from-step)" in r.stderr
    assert _snapshot_of(out) == before  # refused before anything changed
    # doing what it says builds the new model
    rep = run_build(cfg, stop_step="tidy_up", echo=_quiet)
    from brevitas_models.export import sha256_file

    assert rep["provenance"]["model_files"][str(out / "model" / "model.onnx")] == \
        sha256_file(src / "model.onnx")


def test_resume_refused_for_upstream_config_fields_naming_them(build_copy):
    cfg, _ = build_copy
    d = cfg.to_dict()
    seed = config_from_dict({**d, "model": {"untrained": {
        **d["model"]["untrained"], "seed": 1}}})
    with pytest.raises(ResumeError) as ei:
        run_build(seed, from_step="set_folding", echo=_quiet)
    msg = str(ei.value)
    assert "model.untrained.seed: 0 -> 1 (read by load_model)" in msg
    assert "run the full build" in msg
    # another DSP block changes the RTL weight datatypes (minimize_datatypes)
    zcu = config_from_dict({**d, "board": "ZCU104"})
    with pytest.raises(ResumeError) as ei:
        run_build(zcu, from_step="set_folding", echo=_quiet)
    msg = str(ei.value)
    assert "board: 'Pynq-Z1' -> 'ZCU104'" in msg and "board (DSP block)" in msg
    assert "resume from 'minimize_datatypes'" in msg
    rep = run_build(zcu, from_step="minimize_datatypes", echo=_quiet)  # as the message says
    assert rep["status"] == "ok" and rep["fpga_part"].startswith("xczu7")
    # the same part and DSP block (Pynq-Z2) does not change the steps before specialize_layers
    z2 = config_from_dict({**d, "board": "Pynq-Z2"})
    with pytest.raises(ResumeError, match="'ZCU104' -> 'Pynq-Z2'"):
        run_build(z2, from_step="set_folding", echo=_quiet)  # vs the ZCU104 run now
    assert run_build(z2, from_step="minimize_datatypes", echo=_quiet)["status"] == "ok"
    assert run_build(cfg, from_step="specialize_layers", echo=_quiet)["board"] == "Pynq-Z1"


def test_later_step_config_change_is_allowed(build_copy, tmp_path):
    """The README's resume: new folding target from set_folding (CLI)."""
    cfg, rep0 = build_copy
    r = _cli(cfg, tmp_path, "--from-step", "set_folding", "--set", "folding.target_fps=20000")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BUILD OK" in r.stdout
    out = Path(cfg.out_dir)
    rep = json.loads((out / "build_report.json").read_text())
    assert 20000 <= rep["estimates"]["est_fps"] < rep0["estimates"]["est_fps"]
    assert rep["verification"]["verified_stages"][-1] == "insert_dwc_fifo"
    st = json.loads((out / "state.json").read_text())
    assert st["config"]["folding"]["target_fps"] == 20000 and st["failed_step"] is None
    snap = json.loads((out / "intermediate" / "08_set_folding.state.json").read_text())
    assert snap["state"]["config"]["folding"]["target_fps"] == 20000
    # and back to "max": a change of the same later-step field again
    r = _cli(cfg, tmp_path, "--from-step", "set_folding", "--set", "folding.target_fps=max")
    assert r.returncode == 0, r.stderr[-3000:]


def test_truncated_intermediate_is_named_with_the_fix(build_copy, tmp_path):
    cfg, _ = build_copy
    art = Path(cfg.out_dir) / "intermediate" / "07_specialize_layers.onnx"
    art.write_bytes(art.read_bytes()[: art.stat().st_size // 2])
    r = _cli(cfg, tmp_path, "--from-step", "set_folding")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert str(art) in r.stderr and "--from-step 'specialize_layers'" in r.stderr
    rep = run_build(cfg, from_step="specialize_layers", echo=_quiet)  # the fix works
    assert rep["status"] == "ok"


def test_output_dir_that_is_a_file_or_under_a_file(tmp_path):
    f = tmp_path / "taken"
    f.write_text("not a build\n")
    for out, words in ((f, "is an existing file, not a directory"),
                       (f / "sub", "cannot write the build directory")):
        cfg = _cfg(out)
        r = _cli(cfg, tmp_path)
        assert r.returncode == 2, r.stderr[-3000:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, lines
    assert f.read_text() == "not a build\n"


def test_full_disk_mid_build_is_one_clear_line_and_nothing_half_written(build_copy, tmp_path):
    cfg, _ = build_copy
    inter = Path(cfg.out_dir) / "intermediate"
    # the temporary file the artifact is written to is on a "full disk"
    tmp = inter / "08_set_folding.onnx.tmp"
    tmp.symlink_to("/dev/full")
    old = (inter / "00_load_model.onnx").stat().st_mtime_ns  # not a file of a later step
    os.utime(tmp, ns=(old, old), follow_symlinks=False)
    r = _cli(cfg, tmp_path, "--from-step", "set_folding")
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    assert str(inter / "08_set_folding.onnx") in lines[0]
    assert not (inter / "08_set_folding.onnx").exists()
    assert not tmp.is_symlink() and not tmp.exists()
    st = json.loads((Path(cfg.out_dir) / "state.json").read_text())
    assert st["failed_step"] == "set_folding"
    with pytest.raises(ResumeError, match="use --from-step 'set_folding'"):
        run_build(cfg, from_step="insert_dwc_fifo", echo=_quiet)


def test_failed_resume_leaves_no_stale_results_of_the_earlier_run(build_copy):
    """A resume that fails at set_folding: the earlier run's later artifacts, estimates and
    'insert_dwc_fifo' verification must not remain in the reports or be resumable."""
    cfg, _ = build_copy
    out = Path(cfg.out_dir)
    d = cfg.to_dict()
    tight = config_from_dict({**d, "folding": {**d["folding"], "max_utilization": {
        "lut": 0.0001, "bram18": 0.0001, "dsp": 0.0001, "uram": 0.0001}}})
    from finn_build.errors import DoesNotFitError

    with pytest.raises(DoesNotFitError):
        run_build(tight, from_step="set_folding", echo=_quiet)
    rep = json.loads((out / "build_report.json").read_text())
    assert rep["status"] == "failed" and rep["failed_step"] == "set_folding"
    assert rep["estimates"] is None
    assert "insert_dwc_fifo" not in rep["verification"]["verified_stages"]
    assert rep["verification"]["verified_stages"][-1] == "minimize_datatypes"
    assert not any(a.startswith(("intermediate/08", "intermediate/09", "intermediate/1"))
                   for a in rep["artifacts"]), rep["artifacts"]
    assert list(rep["step_times"])[-2:] == ["specialize_layers", "set_folding"]
    assert not (out / "report" / "estimates.json").exists()
    assert not (out / "verification" / "stage_insert_dwc_fifo.npz").exists()
    assert (out / "host_ops.json").exists() and (out / "verification" / "stage_minimize_datatypes.npz").exists()
    with pytest.raises(ResumeError) as ei:  # the old 08_set_folding is gone, not reused
        run_build(cfg, from_step="insert_dwc_fifo", echo=_quiet)
    assert "08_set_folding" in str(ei.value) and "use --from-step 'set_folding'" in str(ei.value)


def test_fresh_build_removes_the_earlier_runs_outputs(build_copy):
    """A new full build that stops early (or fails): nothing of the earlier run's later steps
    remains, and a resume past the new run's end is refused instead of using them."""
    cfg, _ = build_copy
    out = Path(cfg.out_dir)
    d = cfg.to_dict()
    new = config_from_dict({**d, "model": {"untrained": {**d["model"]["untrained"], "seed": 1}}})
    rep = run_build(new, stop_step="tidy_up", echo=_quiet)
    assert rep["artifacts"] == ["intermediate/00_load_model.onnx",
                                "intermediate/01_qonnx_to_finn.onnx",
                                "intermediate/02_tidy_up.onnx"]
    assert rep["estimates"] is None and rep["host_ops"] is None
    assert not (out / "host_ops.json").exists()
    assert not any((out / "report").iterdir())
    assert not (out / "intermediate" / "dataflow_parent.onnx").exists()
    with pytest.raises(ResumeError) as ei:
        run_build(new, from_step="set_folding", echo=_quiet)
    assert "07_specialize_layers.onnx is missing" in str(ei.value)
    assert "use --from-step 'streamline'" in str(ei.value)
