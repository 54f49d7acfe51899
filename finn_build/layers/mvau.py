"""MVAU: FINN's matrix-vector unit (dense layers and lowered convolutions), on finn-plus'
RTL MVU (finn-rtllib/mvu). What the build knows about it:

- inference: ``InferQuantizedMatrixVectorActivation`` (after the thresholds and the VVAUs,
  so its thresholds stay standalone Thresholding nodes);
- folding: every SIMD dividing MW x every PE dividing MH, weights in BRAM or LUTRAM;
- estimate corrections (``correct_estimate``): finn-plus 1.6.1 under-reports the RTL MVU:

  1. DSPs. ``MVAU_rtl.dsp_estimation`` returns ``ceil(PE/4) * SIMD`` on DSP48E1/E2, i.e. it
     assumes four PEs share one DSP whatever the operand widths. The RTL core
     (finn-rtllib/mvu/mvu.sv) packs ``NUM_LANES = 1 + (A_WIDTH - !NARROW - W) / (W + A - 1)``
     PEs per DSP (A_WIDTH = 25 on DSP48E1, 27 on DSP48E2): 4 lanes for INT4 weights x 4-bit
     activations, but only 2 for INT4 x UINT8 (the first layer, fed raw pixels). We use the
     lane count of the RTL source.
  2. LUTs. ``MVAU_rtl.lut_estimation`` counts only LUTRAM parameters (0 for the datapath,
     which dominates: the demo MLP / CNN were estimated ~2.8x below yosys). On DSP48E1/E2
     without clock pumping we use ``lut_fits.mvau_lut``, a model of the RTL MVU's structure
     fitted to yosys (weights in LUTRAM included); otherwise (DSP58, pumped) weights in
     LUTRAM (``ram_style=distributed``, which finn-plus counts as free) add
     ``ceil(depth / 64) * width`` LUTs (one 64x1 LUTRAM per bit).

  Both the uncorrected finn-plus numbers (``finn``) and the corrected ones (``est``) are kept
  in the reports; budget fitting uses the corrected ones;
- RTL simulation (``memstream_hier``): with ``mem_mode=internal_decoupled`` the weights come
  from a memstream streamer, connected to the MVU's ``in1_V`` the way FINN's IP-integrator
  TCL (``code_generation_ipi``) does;
- report: weight datatype and matrix size.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from . import HWLayer, divisors
from .lut_fits import mvau_lut, mvu_lanes, narrow_weights

FAMILY = "MVAU"


def _infer(model):
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (  # noqa: E501
        InferQuantizedMatrixVectorActivation,
    )

    return [InferQuantizedMatrixVectorActivation()]


def _fold_space(model, node, inst) -> list:
    return [({"SIMD": s, "PE": p, "ram_style": r}, {})
            for s in divisors(inst.get_nodeattr("MW"))
            for p in divisors(inst.get_nodeattr("MH")) for r in ("block", "distributed")]


def correct_estimate(model, node, inst, finn: dict, dsp_block: str):
    """The corrections of the module docstring (MVAU_rtl only)."""
    est, notes = dict(finn), []
    if node.op_type != "MVAU_rtl":
        return est, notes
    pe, simd = inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")
    wdt, idt = inst.get_input_datatype(1), inst.get_input_datatype(0)
    lanes = mvu_lanes(wdt.bitwidth(), idt.bitwidth(), narrow_weights(model, node, wdt),
                      dsp_block)  # 0: DSP58, finn-plus' own DSP estimate is kept
    pumped = inst.get_nodeattr("pumpedCompute")
    if lanes:
        simd_eff = math.ceil(simd / 2) if pumped else simd
        dsp = math.ceil(pe / lanes) * simd_eff
        if dsp != finn["dsp"]:
            notes.append(f"dsp: {lanes} lanes/DSP for {wdt.name}x{idt.name}")
        est["dsp"] = float(dsp)
    if lanes and not pumped:  # the datapath + memories model (weights' LUTRAM included)
        est["lut"] = float(round(mvau_lut(model, node, inst, dsp_block)))
        notes.append(f"lut: {est['lut']:.0f} from the RTL MVU's structure (lut_fits; "
                     f"finn-plus: {finn['lut']:.0f})")
    elif (inst.get_nodeattr("ram_style") == "distributed"
            and inst.get_nodeattr("mem_mode") in ("internal_decoupled", "internal_embedded")):
        depth = (inst.get_nodeattr("MW") * inst.get_nodeattr("MH")) // (pe * simd)
        width = pe * simd * wdt.bitwidth()
        lutram = math.ceil(depth / 64) * width
        est["lut"] += lutram
        notes.append(f"lut: +{lutram} LUTRAM for weights")
    return est, notes


def memstream_hier(inst, node, gen_dir: Path, src: Path, core_module: str, core_ports: dict,
                   copy_lib):
    """rtlsim hook: the weight streamer (memstream) -> MVU in1_V, as FINN's IPI TCL connects
    them (``internal_decoupled``); ``internal_embedded`` needs nothing around the core."""
    from finn.util.settings import get_settings

    from ..rtlsim.hdl import RTLSimError, instantiate, parse_ports

    mm = inst.get_nodeattr("mem_mode")
    if mm == "internal_embedded":
        return core_module, core_ports, []
    if mm != "internal_decoupled":
        raise RTLSimError(f"{node.name}: MVAU mem_mode {mm} is not supported "
                          "(internal_decoupled / internal_embedded are)")
    rtllib = Path(get_settings().finn_rtllib)
    wrap = gen_dir / f"{node.name}_memstream_wrapper.v"
    if not wrap.exists():
        raise RTLSimError(f"{node.name}: {wrap.name} was not generated")
    text = wrap.read_text()
    init_abs = str(gen_dir / "memblock.dat")
    if init_abs not in text:
        raise RTLSimError(f"{node.name}: memstream INIT_FILE is not {init_abs}")
    text = text.replace(init_abs, f"./{node.name}_memblock.dat")
    (src / wrap.name).write_text(text)
    files = [wrap.name]
    for f in (rtllib / "axi/hdl/axilite.sv", rtllib / "memstream/hdl/memstream_axi.sv",
              rtllib / "memstream/hdl/memstream.sv"):
        files.append(copy_lib(f))
    ms_module = f"{node.name}_memstream_wrapper"
    ms_ports = parse_ports(text, ms_module)
    wbits = int(inst.get_instream_width_padded(1))
    hier = f"{node.name}_hier"
    # the hier module exposes the core's ports minus the weight stream
    hports = {p: d for p, d in core_ports.items() if not p.startswith("in1_V")}
    decl = []
    for p, d in hports.items():
        if p.endswith("_TDATA"):
            m = re.fullmatch(r"(in|out)(\d+)_V_TDATA", p)
            if not m:
                raise RTLSimError(f"unexpected data port {p}")
            i = int(m.group(2))
            width = (inst.get_instream_width_padded(i) if m.group(1) == "in"
                     else inst.get_outstream_width_padded(i))
            decl.append(f"  {d} wire [{int(width)}-1:0] {p}")
        else:
            decl.append(f"  {d} wire {p}")
    body = [f"module {hier} (", ",\n".join(decl), ");",
            f"  wire [{wbits}-1:0] w_tdata;", "  wire w_tvalid, w_tready;",
            instantiate(ms_module, "wstrm", ms_ports, {
                "ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n", "m_axis_0_tdata": "w_tdata",
                "m_axis_0_tvalid": "w_tvalid", "m_axis_0_tready": "w_tready"}),
            instantiate(core_module, "core", core_ports, {
                **{p: p for p in hports},
                "in1_V_TDATA": "w_tdata", "in1_V_TVALID": "w_tvalid",
                "in1_V_TREADY": "w_tready"}),
            "endmodule", ""]
    (src / f"{hier}.v").write_text("// generated by finn_build.rtlsim.hdl: memstream -> MVU "
                                   "weight stream (FINN IPI hierarchy)\n" + "\n".join(body))
    files.append(f"{hier}.v")
    return hier, hports, files


def _report_columns(inst) -> dict:
    return {"w_dtype": inst.get_input_datatype(1).name,
            "MW": inst.get_nodeattr("MW"), "MH": inst.get_nodeattr("MH")}


LAYERS = (HWLayer(
    family=FAMILY, infer=_infer, infer_order=30,
    fold_space=_fold_space, fold_attrs=("PE", "SIMD", "ram_style"),
    correct_estimate=correct_estimate, rtlsim=True, hdl_hook=memstream_hier,
    report_columns=_report_columns),)
