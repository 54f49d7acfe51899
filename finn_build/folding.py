"""Folding (PE/SIMD/ram_style per layer) for a cycle target or "max that fits".

For every folded node we enumerate its legal configurations (its layer's
``HWLayer.fold_space`` in ``finn_build/layers/``: divisors of the folded dimensions; the RTL
sliding window's parallel mode; weight memory in BRAM or LUTRAM; a depthwise VVAU together
with its sliding window, whose SIMD must be the VVAU's PE) with
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
from .layers import layer_of


@dataclass
class Candidate:
    attrs: dict
    cycles: int
    res: dict = field(default_factory=dict)
    # attributes of OTHER nodes that go with this choice: {node name: {attr: value}} (the
    # depthwise sliding window in front of a VVAU, see ``layers.vvau.fold_space``)
    extra: dict = field(default_factory=dict)


def _space(model, node, inst) -> list:
    """[(attrs, {other node: attrs})]: the node's legal foldings (its ``HWLayer.fold_space``)."""
    layer = layer_of(node.op_type)
    return layer.fold_space(model, node, inst) if layer and layer.fold_space else []


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
    spaces = {}
    for node in model.graph.node:
        try:
            inst = getCustomOp(node)
        except Exception:
            continue
        space = _space(model, node, inst)
        if space:
            spaces[node.name] = (node, inst, space)
    # a node folded together with another one (a depthwise sliding window with its VVAU)
    # gets no candidates of its own
    joint = {other for _, _, space in spaces.values() for _, extra in space for other in extra}
    return {name: _pareto(_candidates(model, node, inst, space, fpgapart, dsp_block))
            for name, (node, inst, space) in spaces.items() if name not in joint}


def _saved_attrs(node, inst) -> dict:
    types = inst.get_nodeattr_types()
    return {a: inst.get_nodeattr(a) for a in layer_of(node.op_type).fold_attrs if a in types}


def _candidates(model, node, inst, space, fpgapart, dsp_block) -> list:
    """Cycles and resources of every configuration of ``space``; one that folds other nodes
    too counts the slowest of them and the sum of their resources. Attributes are restored."""
    by_name = {n.name: n for n in model.graph.node}
    touched = {node.name: (node, inst)}
    for _, extra in space:
        for name in extra:
            touched.setdefault(name, (by_name[name], getCustomOp(by_name[name])))
    saved = {name: _saved_attrs(n, i) for name, (n, i) in touched.items()}
    cands = []
    for attrs, extra in space:
        try:
            for k, v in attrs.items():
                inst.set_nodeattr(k, v)
            for name, ea in extra.items():
                for k, v in ea.items():
                    touched[name][1].set_nodeattr(k, v)
            cyc = int(inst.get_exp_cycles())
            res = dict(node_resources(model, node, fpgapart, dsp_block)["est"])
            for name in extra:
                cyc = max(cyc, int(touched[name][1].get_exp_cycles()))
                r = node_resources(model, by_name[name], fpgapart, dsp_block)["est"]
                res = {k: res[k] + r[k] for k in RES_KEYS}
        except Exception:
            continue
        cands.append(Candidate(dict(attrs), cyc, res, {n: dict(a) for n, a in extra.items()}))
    for name, attrs in saved.items():
        for k, v in attrs.items():
            touched[name][1].set_nodeattr(k, v)
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
                                                 "mem_mode", "depth", "impl_style", "resType")
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
