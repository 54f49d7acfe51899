"""Resource / performance estimates: finn-plus' analytical models, corrected per layer where
they are known to be wrong (``HWLayer.correct_estimate`` in ``finn_build/layers/``; today the
RTL MVU's DSP lanes and LUTRAM weights, ``layers/mvau.py``).

Both the uncorrected finn-plus numbers (``finn``) and the corrected ones (``est``, with the
reasons in ``notes``) are kept in the reports; budget fitting uses the corrected ones.
"""
from __future__ import annotations

import math

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from .layers import layer_of
from .transforms import backend_of

RES_KEYS = ("lut", "bram18", "uram", "dsp")


def node_resources(model: ModelWrapper, node, fpgapart: str, dsp_block: str) -> dict:
    """{"finn": {...}, "est": {...}} resource dicts (lut, bram18, uram, dsp) for one node."""
    inst = getCustomOp(node)
    r = inst.node_res_estimation(fpgapart)
    finn = {"lut": float(r.get("LUT", 0)), "bram18": float(r.get("BRAM_18K", 0)),
            "uram": float(r.get("URAM", 0)), "dsp": float(r.get("DSP", 0))}
    layer = layer_of(node.op_type)
    if layer and layer.correct_estimate:
        est, notes = layer.correct_estimate(model, node, inst, finn, dsp_block)
    else:
        est, notes = dict(finn), []
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
