"""Folding (PE/SIMD/ram_style per layer) for a cycle target or "max that fits".

For every folded node we enumerate its legal configurations (divisors of the folded
dimensions; the RTL sliding window's parallel mode; weight memory in BRAM or LUTRAM; a
depthwise VVAU together with its sliding window, whose SIMD must be the VVAU's PE) with
finn-plus' cycle model (``get_exp_cycles``) and our corrected resource estimates
(``estimates.node_resources``), and keep the Pareto front. For a target of T cycles per
frame each node gets its cheapest configuration with cycles <= T (cost = resources
normalised by the part's budget), so the slowest layer sets the pace and no layer is
folded less than it needs. "Max that fits" scans T upwards from the fastest achievable
bottleneck and takes the first T whose selection fits the budget (re-weighting the cost
towards the over-used resource before giving up on a T).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from .estimates import RES_KEYS, fits, node_resources


def divisors(n: int) -> list[int]:
    return [d for d in range(1, int(n) + 1) if n % d == 0]


@dataclass
class Candidate:
    attrs: dict
    cycles: int
    res: dict = field(default_factory=dict)
    # attributes of OTHER nodes that go with this choice: {node name: {attr: value}} (the
    # depthwise sliding window in front of a VVAU, see ``_vvau_space``)
    extra: dict = field(default_factory=dict)


FOLD_ATTRS = ("PE", "SIMD", "parallel_window", "ram_style")


def _attr_space(node, inst) -> list[dict]:
    op = node.op_type
    if op.startswith("MVAU"):
        styles = ["block", "distributed"]
        return [{"SIMD": s, "PE": p, "ram_style": r}
                for s in divisors(inst.get_nodeattr("MW"))
                for p in divisors(inst.get_nodeattr("MH")) for r in styles]
    if op.startswith("Thresholding"):
        return [{"PE": p} for p in divisors(inst.get_nodeattr("NumChannels"))]
    if op.startswith("ConvolutionInputGenerator"):
        ch = inst.get_nodeattr("IFMChannels")
        out = [{"SIMD": s, "parallel_window": 0} for s in divisors(ch)]
        if op.endswith("_rtl") and not inst.get_nodeattr("depthwise"):
            out.append({"SIMD": ch, "parallel_window": 1})
        return out
    if op.startswith("FMPadding"):
        return [{"SIMD": s} for s in divisors(inst.get_nodeattr("NumChannels"))]
    if op.split("_")[0] in ("DuplicateStreams", "AddStreams", "GlobalAccPool"):
        return [{"PE": p} for p in divisors(inst.get_nodeattr("NumChannels"))]
    return []


def _depthwise_swg(model, node):
    """The depthwise sliding window feeding a VVAU node directly, or None."""
    prod = model.find_producer(node.input[0])
    if prod is None or not prod.op_type.startswith("ConvolutionInputGenerator"):
        return None
    if not getCustomOp(prod).get_nodeattr("depthwise"):
        return None
    return prod


def _vvau_space(model, node, inst) -> list:
    """[(VVAU attrs, {SWG name: SWG attrs})]: the VVAU and its depthwise sliding window are
    folded together, as FINN's SetFolding does: the window's SIMD is the VVAU's PE (its
    depthwise stream holds PE channels per beat), and a VVAU taking all k*k taps per cycle
    (SIMD = k*k) needs the window's parallel mode. Offered: SIMD=1 with every PE dividing
    the channels (window SIMD = PE), and SIMD=k*k with PE = channels (parallel window, RTL
    only) -- the two stream layouts our VVAU_rtl is tested against FINN's sliding window
    with (tests/test_layers_vvau.py). A VVAU without a depthwise window in front keeps
    SIMD=1 and gets every PE."""
    import numpy as np

    ch = inst.get_nodeattr("Channels")
    kk = int(np.prod(inst.get_nodeattr("Kernel")))
    swg = _depthwise_swg(model, node)
    if swg is None:
        return [({"PE": p, "SIMD": 1}, {}) for p in divisors(ch)]
    out = [({"PE": p, "SIMD": 1}, {swg.name: {"SIMD": p, "parallel_window": 0}})
           for p in divisors(ch)]
    if swg.op_type.endswith("_rtl") and kk > 1:
        out.append(({"PE": ch, "SIMD": kk}, {swg.name: {"SIMD": ch, "parallel_window": 1}}))
    return out


def _pareto(cands: list[Candidate]) -> list[Candidate]:
    keep = []
    for c in cands:
        dominated = False
        for o in cands:
            if o is c:
                continue
            if (o.cycles <= c.cycles and all(o.res[k] <= c.res[k] for k in RES_KEYS)
                    and (o.cycles < c.cycles or any(o.res[k] < c.res[k] for k in RES_KEYS))):
                dominated = True
                break
        if not dominated:
            keep.append(c)
    return keep


def enumerate_candidates(model: ModelWrapper, fpgapart: str, dsp_block: str) -> dict:
    """{node_name: [Candidate...]} for every foldable node (Pareto-pruned)."""
    out = {}
    joint = {}  # depthwise sliding window -> its VVAU (folded together, see _vvau_space)
    for node in model.graph.node:
        if node.op_type.startswith("VVAU"):
            swg = _depthwise_swg(model, node)
            if swg is not None:
                joint[swg.name] = node.name
    for node in model.graph.node:
        if node.name in joint:
            continue
        try:
            inst = getCustomOp(node)
        except Exception:
            continue
        if node.op_type.startswith("VVAU"):
            out[node.name] = _pareto(_vvau_candidates(model, node, inst, fpgapart, dsp_block))
            continue
        space = _attr_space(node, inst)
        if not space:
            continue
        saved = {a: inst.get_nodeattr(a) for a in FOLD_ATTRS if a in inst.get_nodeattr_types()}
        cands = []
        for attrs in space:
            try:
                for k, v in attrs.items():
                    inst.set_nodeattr(k, v)
                cyc = int(inst.get_exp_cycles())
                res = node_resources(model, node, fpgapart, dsp_block)["est"]
            except Exception:
                continue
            cands.append(Candidate(dict(attrs), cyc, res))
        for k, v in saved.items():
            inst.set_nodeattr(k, v)
        out[node.name] = _pareto(cands)
    return out


def _vvau_candidates(model, node, inst, fpgapart, dsp_block) -> list:
    """A VVAU's candidates with its sliding window's matching folding: cycles the slower
    of the two, resources their sum."""
    by_name = {n.name: n for n in model.graph.node}
    touched = {node.name: inst}
    for _, extra in _vvau_space(model, node, inst)[:1]:
        for name in extra:
            touched[name] = getCustomOp(by_name[name])
    saved = {n: {a: i.get_nodeattr(a) for a in FOLD_ATTRS if a in i.get_nodeattr_types()}
             for n, i in touched.items()}
    cands = []
    for attrs, extra in _vvau_space(model, node, inst):
        try:
            for k, v in attrs.items():
                inst.set_nodeattr(k, v)
            for name, ea in extra.items():
                for k, v in ea.items():
                    touched[name].set_nodeattr(k, v)
            cyc = int(inst.get_exp_cycles())
            res = dict(node_resources(model, node, fpgapart, dsp_block)["est"])
            for name in extra:
                cyc = max(cyc, int(touched[name].get_exp_cycles()))
                r = node_resources(model, by_name[name], fpgapart, dsp_block)["est"]
                res = {k: res[k] + r[k] for k in RES_KEYS}
        except Exception:
            continue
        cands.append(Candidate(dict(attrs), cyc, res, {n: dict(a) for n, a in extra.items()}))
    for n, attrs in saved.items():
        for k, v in attrs.items():
            touched[n].set_nodeattr(k, v)
    return cands


def _cost(c: Candidate, weights: dict) -> float:
    return sum(c.res[k] * weights[k] for k in RES_KEYS)


def select(cands: dict, target_cycles: int, weights: dict) -> dict:
    """Cheapest candidate per node meeting target_cycles (fastest one if none does)."""
    sel = {}
    for name, cs in cands.items():
        ok = [c for c in cs if c.cycles <= target_cycles]
        if ok:
            sel[name] = min(ok, key=lambda c: (_cost(c, weights), c.cycles))
        else:
            sel[name] = min(cs, key=lambda c: (c.cycles, _cost(c, weights)))
    return sel


def apply_selection(model: ModelWrapper, sel: dict) -> ModelWrapper:
    attrs = {}
    for name, c in sel.items():
        attrs.setdefault(name, {}).update(c.attrs)
        for other, ea in c.extra.items():
            attrs.setdefault(other, {}).update(ea)
    for node in model.graph.node:
        if node.name in attrs:
            inst = getCustomOp(node)
            for k, v in attrs[node.name].items():
                inst.set_nodeattr(k, v)
    return model


def totals(sel: dict) -> dict:
    t = dict.fromkeys(RES_KEYS, 0.0)
    for c in sel.values():
        for k in RES_KEYS:
            t[k] += c.res[k]
    return t


def base_weights(budget: dict) -> dict:
    return {k: (1.0 / budget[k] if budget.get(k) else 1e3) for k in RES_KEYS}


def search(cands: dict, budget: dict, util, target_cycles: int | None,
           overhead: dict | None = None, start_cycles: int | None = None):
    """-> (target_cycles, selection, fits, frac). With target_cycles=None: the smallest
    cycle target whose selection (+ overhead) fits."""
    overhead = overhead or dict.fromkeys(RES_KEYS, 0.0)
    w0 = base_weights(budget)

    def try_t(t):
        weights = dict(w0)
        best = None
        for _ in range(6):  # re-weight towards the over-used resource
            sel = select(cands, t, weights)
            tot = {k: totals(sel)[k] + overhead.get(k, 0.0) for k in RES_KEYS}
            ok, frac = fits(tot, budget, util)
            if best is None or max(frac.values()) < max(best[2].values()):
                best = (sel, ok, frac)
            if ok:
                return sel, True, frac
            worst = max(frac, key=frac.get)
            weights[worst] *= 8.0
        return best

    if target_cycles is not None:
        sel, ok, frac = try_t(target_cycles)
        return target_cycles, sel, ok, frac
    floor = max(min(c.cycles for c in cs) for cs in cands.values()) if cands else 1
    floor = max(floor, start_cycles or 1)
    levels = sorted({c.cycles for cs in cands.values() for c in cs if c.cycles >= floor})
    if not levels:
        levels = [floor]
    for t in levels:
        sel, ok, frac = try_t(t)
        if ok:
            return t, sel, True, frac
    t = levels[-1]
    sel, ok, frac = try_t(t)
    return t, sel, ok, frac


def folding_config_dict(model: ModelWrapper) -> dict:
    """finn-plus style folding config ({"Defaults": {}, node: {attr: value}}) of a model."""
    out = {"Defaults": {}}
    for node in model.graph.node:
        try:
            inst = getCustomOp(node)
        except Exception:
            continue
        types = inst.get_nodeattr_types()
        d = {a: inst.get_nodeattr(a) for a in ("PE", "SIMD", "parallel_window", "ram_style",
                                                 "mem_mode", "depth", "impl_style")
             if a in types}
        if d:
            out[node.name] = d
    return out


def write_folding_config(model: ModelWrapper, path) -> dict:
    d = folding_config_dict(model)
    with open(path, "w") as f:
        json.dump(d, f, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return d


def candidates_report(cands: dict) -> dict:
    return {n: [{"attrs": c.attrs, "cycles": c.cycles, "res": c.res,
                 **({"with": c.extra} if c.extra else {})} for c in cs]
            for n, cs in cands.items()}


def cycles_to_fps(cycles: int, clock_mhz: float) -> float:
    return clock_mhz * 1e6 / max(1, cycles)


def fps_to_cycles(fps: float, clock_mhz: float) -> int:
    return max(1, math.floor(clock_mhz * 1e6 / fps))
