"""finn-plus' rtlsim API on the Verilator backend (``finn_build.rtlsim.xsi_backend``), real
Verilator, no mocks:

- FINN's own node-level path (``PrepareIP`` + ``PrepareRTLSim`` + ``exec_mode="rtlsim"`` under
  ``execute_onnx``) runs through the SimEngine streaming methods (``stream_input``,
  ``create_watchdog``, ``collect_output``, ``run``: finn-plus' ``rtlsim_multi_io`` sequence)
  and equals FINN's python execution bit for bit;
- a clock-pumped MVAU_rtl (``pumpedCompute=1``: its DSP core on ``ap_clk2x``, driven at twice
  the rate of ``ap_clk``) equals python bit for bit;
- the streaming methods used directly: chunked/generator inputs, throttling, ``run(cycles)``
  and an output watchdog that wakes on a stalled design (and the clear error of
  ``rtlsim_multi_io`` then).

Compiles use ``-O0`` (FINN_BUILD_RTLSIM_OPT) and a cache private to this module."""
import numpy as np
import pytest

from finn_build.finn_env import ensure_finn_env

ensure_finn_env()

FPGAPART = "xc7z020clg400-1"
CLK_NS = 10.0
RTL = "finn.custom_op.fpgadataflow.rtl"


@pytest.fixture(scope="module")
def verilator_xsi(tmp_path_factory):
    """finn.xsi served by Verilator, with a module-private library cache."""
    from finn_build.finn_env import install_verilator_xsi, uninstall_verilator_xsi

    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("rtlsim_cache_api")
    mp.setenv("FINN_BUILD_RTLSIM_OPT", "-O0")
    mp.setenv("FINN_BUILD_RTLSIM_CACHE", str(d))
    assert install_verilator_xsi()
    yield d
    uninstall_verilator_xsi()
    mp.undo()


def _mvau(pumped: int, mw=8, mh=4, simd=4, pe=2, vectors=(1, 3), seed=0):
    """One MVAU_rtl node (INT4 x INT4 -> INT16, no activation, weights streamed) and an input."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    rng = np.random.default_rng(seed)
    vectors = list(vectors)
    node = helper.make_node(
        "MVAU_rtl", ["x", "w"], ["y"], domain=RTL, backend="fpgadataflow", name="MVAU_rtl_0",
        MW=mw, MH=mh, SIMD=simd, PE=pe, inputDataType="INT4", weightDataType="INT4",
        outputDataType="INT16", noActivation=1, binaryXnorMode=0,
        mem_mode="internal_decoupled", numInputVectors=vectors, pumpedCompute=pumped)
    g = helper.make_graph(
        [node], "mvau",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, vectors + [mw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, vectors + [mh])])
    model = ModelWrapper(qonnx_make_model(g, producer_name="test_finn_rtlsim_api"))
    model.set_tensor_datatype("x", DataType["INT4"])
    model.set_tensor_datatype("w", DataType["INT4"])
    model.set_tensor_datatype("y", DataType["INT16"])
    w = rng.integers(-8, 8, (mw, mh)).astype(np.float32)
    model.set_initializer("w", w)
    x = rng.integers(-8, 8, vectors + [mw]).astype(np.float32)
    return model, x, w


def _prepared(model):
    """FINN's own preparation: PrepareIP + PrepareRTLSim (finn.xsi.compile_sim_obj)."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.prepare_rtlsim import PrepareRTLSim

    model = model.transform(PrepareIP(FPGAPART, CLK_NS))
    return model.transform(PrepareRTLSim(num_workers=1))


def _exec(model, x, mode):
    """``mode``: "rtlsim", or "cppsim", which MVAU_rtl executes in python (FINN's MVAU)."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.custom_op.registry import getCustomOp

    for n in model.graph.node:
        getCustomOp(n).set_nodeattr("exec_mode", mode)
    return execute_onnx(model, {"x": x})["y"]


class _Calls:
    """Records which SimEngine methods FINN's path called (then runs the real method)."""

    def __init__(self, monkeypatch, cls, names):
        self.seen = []
        for name in names:
            real = getattr(cls, name)

            def spy(sim, *a, _real=real, _name=name, **k):
                self.seen.append(_name)
                return _real(sim, *a, **k)

            monkeypatch.setattr(cls, name, spy)


STREAMING = ("do_reset", "stream_input", "create_watchdog", "collect_output", "run")


@pytest.mark.parametrize("pumped", [0, 1], ids=["plain", "pumpedCompute"])
def test_node_rtlsim_through_simengine_streams_bit_exact(verilator_xsi, tmp_path, monkeypatch,
                                                         pumped):
    """FINN's node-level rtlsim path on Verilator: every call goes through the SimEngine
    streaming methods, the output equals FINN's python execution exactly (also for the
    clock-pumped MVU: before ap_clk2x was driven at 2x, it took its input and then hung)."""
    import finn.xsi as fxsi
    from qonnx.custom_op.registry import getCustomOp

    from finn_build.rtlsim import xsi_backend

    assert fxsi.SimEngine is xsi_backend.SimEngine
    model, x, w = _mvau(pumped)
    ref = _exec(model, x, "cppsim")
    assert np.array_equal(ref, np.einsum("...k,kn->...n", x, w))  # python = plain matmul
    model = _prepared(model)
    calls = _Calls(monkeypatch, xsi_backend.SimEngine, STREAMING)
    got = _exec(model, x, "rtlsim")
    assert np.array_equal(got, ref)
    assert set(STREAMING) <= set(calls.seen)
    assert calls.seen.count("stream_input") == 2  # activations + FINN-streamed weights
    inst = getCustomOp(model.graph.node[0])
    assert "xsim.dir" in inst.get_nodeattr("rtlsim_so")
    # cycles: about one per input vector per weight tile (3 vectors x 2 SIMD folds x 2 PE
    # folds = 12) plus pipeline latency
    assert 12 <= inst.get_nodeattr("cycles_rtlsim") < 80


def _loaded(model):
    from finn import xsi as finnxsi
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(model.graph.node[0])
    sim = inst.get_rtlsim()
    finnxsi.reset_rtlsim(sim)
    return inst, sim


def _io(inst, x, w, d):
    """FINN's packed stream values (ints) for activations and weights (as MVAU_rtl's
    execute_node makes them), and the number of output beats."""
    from finn.util.data_packing import npy_to_rtlsim_input

    np.save(d / "x.npy", x.reshape(inst.get_folded_input_shape(0)))
    act = npy_to_rtlsim_input(str(d / "x.npy"), inst.get_input_datatype(0),
                              inst.get_instream_width(0))
    inst.make_weight_file(w, "decoupled_npy", str(d / "w.npy"))
    wts = npy_to_rtlsim_input(str(d / "w.npy"), inst.get_input_datatype(1),
                              inst.get_instream_width(1))
    reps = int(np.prod(inst.get_nodeattr("numInputVectors")))
    return act, wts * reps, inst.get_number_output_values()


def test_streaming_methods_directly(verilator_xsi, tmp_path):
    """stream_input (generators of hex strings, ints; throttled), collect_output with a
    watchdog, run(cycles) partial runs that resume, ticks; the design's outputs equal the
    python result, and a throttled input stream takes longer."""
    from finn.util.data_packing import rtlsim_output_to_npy

    model, x, w = _mvau(0)
    ref = _exec(model, x, "cppsim")
    model = _prepared(model)
    out = []
    for throttle, step in (((float("inf"), 0), None), ((1, 4), 5)):
        inst, sim = _loaded(model)
        act, wts, n_out = _io(inst, x, w, tmp_path)
        sim.stream_input("in0_V", (f"{v:x}" for v in act), throttle)
        sim.stream_input("in1_V", iter(wts))  # ints are taken too
        wd = sim.create_watchdog("out0_V timeout", 200)
        col = sim.collect_output("out0_V", n_out, wd)
        t0 = sim.ticks
        if step:  # partial runs: only run's own timeout wakes, the tasks resume
            runs = 0
            while sim.tasks:
                assert [repr(k) for k in sim.run(step)] in ([], ["Run Timeout"])
                runs += 1
            assert runs > 5
            assert len(sim.watchdogs) == 1  # run's own timeout watchdog was removed
        else:
            assert sim.run() == []
        cycles = sim.ticks - t0
        vals = [int(v, 16) for v in col]
        assert len(vals) == n_out and all(len(v) == (inst.get_outstream_width() + 3) // 4
                                          for v in col)
        sim.close()
        y = rtlsim_output_to_npy(vals, None, inst.get_output_datatype(),
                                 inst.get_folded_output_shape(), inst.get_outstream_width(),
                                 inst.get_output_datatype().bitwidth())
        assert np.array_equal(y.reshape(ref.shape), ref)
        out.append((cycles, len(act)))
    # throttled: at most one activation beat per 4 cycles
    (free, n_act), (slow, _) = out
    assert n_act == 6 and slow >= 4 * (n_act - 1) and slow > free


def test_watchdog_wakes_on_a_stalled_design(verilator_xsi, tmp_path):
    """No weights streamed: the MVU takes nothing and produces nothing. The output watchdog
    wakes after exactly its timeout; the run returns it; rtlsim_multi_io turns it into a clear
    error naming the watchdog; run(cycles) returns its own timeout watchdog."""
    from finn import xsi as finnxsi
    from finn_build.rtlsim.verilator import SimError

    model, x, w = _mvau(0)
    model = _prepared(model)
    inst, sim = _loaded(model)
    act, _, n_out = _io(inst, x, w, tmp_path)
    try:
        sim.stream_input("in0_V", (f"{v:x}" for v in act))
        wd = sim.create_watchdog("out0_V timeout", 50)
        col = sim.collect_output("out0_V", n_out, wd)
        t0 = sim.ticks
        assert sim.run() == [wd] and not wd
        assert sim.ticks - t0 == 50 and list(col) == []
        assert len(sim.tasks) == 2  # the stalled tasks stay enlisted, as in finn-plus
        sim.remove_watchdog(wd)
        woken = sim.run(30)
        assert [repr(k) for k in woken] == ["Run Timeout"] and sim.ticks - t0 == 80
        sim.tasks.clear()
        io = {"inputs": {"in0": act}, "outputs": {"out0": []}}
        with pytest.raises(SimError, match=r"out0_V timeout.*collected \{'out0': 0\}"):
            finnxsi.rtlsim_multi_io(sim, io, n_out, sname="_V", liveness_threshold=40)
        assert sim.watchdogs == []  # rtlsim_multi_io removes its watchdogs also on error
    finally:
        sim.close()


def test_unsupported_tasks_are_refused(verilator_xsi):
    """AXI-MM tasks, unknown streams and a second task on a busy stream: clear errors."""
    from finn_build.rtlsim.verilator import SimError

    _, sim = _loaded(_prepared(_mvau(0)[0]))
    try:
        with pytest.raises(SimError, match="aximm_ro_image is not supported"):
            sim.aximm_ro_image("m_axi_0", 0, np.zeros(4, np.uint8))
        with pytest.raises(SimError, match="no input stream nope_V"):
            sim.stream_input("nope_V", iter(["1"]))
        sim.stream_input("in0_V", iter(["1"]))
        with pytest.raises(SimError, match="still active"):
            sim.stream_input("in0_V", iter(["1"]))
    finally:
        sim.close()


@pytest.mark.slow
def test_stitched_flow_drives_clk2x_of_a_pumped_mvu(verilator_xsi, tmp_path):
    """finn_build's own stitched flow (stitch.py): the pumped MVAU's ap_clk2x is a top port
    driven at 2x (a plain MVAU's stays tied to ap_clk); two images with 30% random stalls are
    bit-exact vs the python golden. pumpedMemory is refused up front."""
    from onnx import helper

    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import RTLSimError, generate_hdl
    from finn_build.rtlsim.stitch import stitched_top

    for pumped in (1, 0):
        model, x, _ = _mvau(pumped)
        design = generate_hdl(model, tmp_path / f"hdl{pumped}", FPGAPART, CLK_NS)
        ctxs = flow.golden_context(model, [x, x[..., ::-1].copy()])
        with flow.Stitched(model, design, verilator_xsi) as st:
            assert ("input  wire ap_clk2x" in st.text) == bool(pumped)
            r = st.run([{"x": c["x"]} for c in ctxs], stall=0.3, seed=1)
        for o, c in zip(r["outputs"], ctxs):
            assert np.array_equal(o["y"], c["y"])
    model.graph.node[0].attribute.append(helper.make_attribute("pumpedMemory", 1))
    with pytest.raises(RTLSimError, match="pumpedMemory=1 cannot be simulated"):
        stitched_top(design, model)
