"""Resource / performance estimates: finn-plus' analytical models plus two documented
corrections for the RTL MVU, which finn-plus 1.6.1 under-reports:

1. DSPs. ``MVAU_rtl.dsp_estimation`` returns ``ceil(PE/4) * SIMD`` on DSP48E1/E2, i.e. it
   assumes four PEs share one DSP whatever the operand widths. The RTL core
   (finn-rtllib/mvu/mvu.sv) packs ``NUM_LANES = 1 + (A_WIDTH - !NARROW - W) / (W + A - 1)``
   PEs per DSP (A_WIDTH = 25 on DSP48E1, 27 on DSP48E2): 4 lanes for INT4 weights x 4-bit
   activations, but only 2 for INT4 x UINT8 (the first layer, fed raw pixels). We use the
   lane count of the RTL source.
2. LUTRAM weights. ``MVAU_rtl.lut_estimation`` returns 0 and ``bram_estimation`` returns 0
   for ``ram_style=distributed``, so weights in LUTRAM would look free. We add
   ``ceil(depth / 64) * width`` LUTs (one 64x1 LUTRAM per bit) for them.

Both the uncorrected finn-plus numbers (``finn``) and the corrected ones (``est``) are kept in
the reports; budget fitting uses the corrected ones.
"""
from __future__ import annotations

import math

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from .transforms import backend_of

RES_KEYS = ("lut", "bram18", "uram", "dsp")
_A_WIDTH = {"DSP48E1": 25, "DSP48E2": 27}


def mvu_lanes(w_bits: int, a_bits: int, a_signed: bool, narrow: bool, dsp_block: str) -> int:
    a_width = _A_WIDTH.get(dsp_block)
    if a_width is None:
        return 0  # DSP58: finn-plus' own estimate is used
    if a_width == w_bits:
        return 1
    # mvu.sv: MIN_LANE_WIDTH = WEIGHT_WIDTH + ACTIVATION_WIDTH - 1
    min_lane = w_bits + a_bits - 1
    return 1 + (a_width - (0 if narrow else 1) - w_bits) // min_lane


def node_resources(model: ModelWrapper, node, fpgapart: str, dsp_block: str) -> dict:
    """{"finn": {...}, "est": {...}} resource dicts (lut, bram18, uram, dsp) for one node."""
    inst = getCustomOp(node)
    r = inst.node_res_estimation(fpgapart)
    finn = {"lut": float(r.get("LUT", 0)), "bram18": float(r.get("BRAM_18K", 0)),
            "uram": float(r.get("URAM", 0)), "dsp": float(r.get("DSP", 0))}
    est = dict(finn)
    notes = []
    if node.op_type == "MVAU_rtl":
        pe, simd = inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")
        wdt, idt = inst.get_input_datatype(1), inst.get_input_datatype(0)
        w = model.get_initializer(node.input[1])
        narrow = w is not None and float(w.min()) > wdt.min()
        lanes = mvu_lanes(wdt.bitwidth(), idt.bitwidth(), idt.signed(), narrow, dsp_block)
        if lanes:
            simd_eff = simd
            if inst.get_nodeattr("pumpedCompute"):
                simd_eff = math.ceil(simd / 2)
            dsp = math.ceil(pe / lanes) * simd_eff
            if dsp != finn["dsp"]:
                notes.append(f"dsp: {lanes} lanes/DSP for {wdt.name}x{idt.name}")
            est["dsp"] = float(dsp)
        if (inst.get_nodeattr("ram_style") == "distributed"
                and inst.get_nodeattr("mem_mode") in ("internal_decoupled", "internal_embedded")):
            depth = (inst.get_nodeattr("MW") * inst.get_nodeattr("MH")) // (pe * simd)
            width = pe * simd * wdt.bitwidth()
            lutram = math.ceil(depth / 64) * width
            est["lut"] += lutram
            notes.append(f"lut: +{lutram} LUTRAM for weights")
    return {"finn": finn, "est": est, "notes": notes}


def model_resources(model: ModelWrapper, fpgapart: str, dsp_block: str) -> dict:
    per_node, tot_finn, tot_est = {}, dict.fromkeys(RES_KEYS, 0.0), dict.fromkeys(RES_KEYS, 0.0)
    for node in model.graph.node:
        if backend_of(node) == "none":
            continue
        r = node_resources(model, node, fpgapart, dsp_block)
        per_node[node.name] = r
        for k in RES_KEYS:
            tot_finn[k] += r["finn"][k]
            tot_est[k] += r["est"][k]
    return {"per_node": per_node, "total_finn": tot_finn, "total": tot_est}


def fits(total: dict, budget: dict, util) -> tuple[bool, dict]:
    """-> (fits, {res: fraction of the allowed budget used})."""
    frac = {}
    ok = True
    for k in RES_KEYS:
        cap = budget.get(k, 0) * getattr(util, k)
        if total.get(k, 0) <= 0:
            frac[k] = 0.0
            continue
        if cap <= 0:
            frac[k] = math.inf
            ok = False
            continue
        frac[k] = total[k] / cap
        ok = ok and total[k] <= cap
    return ok, frac


def performance(model: ModelWrapper, clock_mhz: float) -> dict:
    """Cycles per layer, bottleneck, FPS and latency from finn-plus' analyses."""
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    model = model.transform(AnnotateCycles())
    cycles = model.analysis(exp_cycles_per_layer)
    perf = dict(model.analysis(dataflow_performance))
    max_cycles = max(1, int(perf["max_cycles"]))
    fps = clock_mhz * 1e6 / max_cycles
    latency_us = int(perf["critical_path_cycles"]) / clock_mhz
    return {"cycles_per_layer": {k: int(v) for k, v in cycles.items()},
            "max_cycles": max_cycles, "bottleneck": perf.get("max_cycles_node_name"),
            "critical_path_cycles": int(perf["critical_path_cycles"]),
            "est_fps": fps, "est_latency_us": latency_us, "clock_mhz": clock_mhz}
