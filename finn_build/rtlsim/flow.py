"""High-level RTL simulation flows on a folded dataflow partition (FINN ONNX model):

- ``prepare``: HDL of every node (``hdl.generate_hdl``) into ``<workdir>/``;
- ``golden_context``: the python golden for every tensor (despecialized model, FINN's own
  ``execute_node`` of the abstraction-layer ops) for a list of partition inputs;
- ``simulate_nodes``: node-by-node Verilator simulation (ONE library with all nodes side
  by side) of each node on its golden input, compared bit for bit with its golden output;
- ``simulate_stitched``: the stitched partition on a batch of inputs streamed back to back,
  outputs of every graph output, cycle counts per image (latency, steady-state interval).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import packing
from .hdl import HDLDesign, generate_hdl
from .stitch import nodes_top, pumped_nodes, stitched_top
from .verilator import NETLIST_CXX_OPT, Sim, build_library


def prepare(model, workdir, fpgapart: str, clk_ns: float) -> HDLDesign:
    return generate_hdl(model, Path(workdir), fpgapart, clk_ns)


def golden_context(model, inputs: list) -> list:
    """[{tensor: array}] per input (``inputs``: [{graph input name: array}] or [array]);
    depthwise window streams in the RTL's order (``layers.swg.depthwise_stream_order``)."""
    from finn.core.onnx_exec import execute_onnx
    from finn.util.verification import despecialize_model

    from ..layers.swg import depthwise_stream_order
    from ..layers.vvau import golden_vvau_inputs

    # depthwise layers behind a FIFO / DWC: FINN's VVAU golden needs its sliding window as
    # the direct producer (golden_vvau_inputs; every tensor is still computed)
    ref = golden_vvau_inputs(despecialize_model(model))
    ctxs = []
    for x in inputs:
        if not isinstance(x, dict):
            iname = model.graph.input[0].name
            x = {iname: np.asarray(x, np.float32).reshape(model.get_tensor_shape(iname))}
        ctxs.append(execute_onnx(ref, x, True))
    depthwise_stream_order(model, ctxs)  # the streams as the RTL orders them
    return ctxs


# ----------------------------------------------------------------------------- nodes

def simulate_nodes(model, design: HDLDesign, ctxs: list, cache_dir=None, nodes=None,
                   stall: float = 0.0, seed: int = 0, log=None, netlist=None,
                   top: str = "finn_nodes") -> dict:
    """Each node (or the listed ones) simulated alone on the golden inputs of ``ctxs``
    (all images back to back), compared with the golden outputs. ``netlist``: (directory,
    [files]) of a synthesized netlist of ``nodes_top(design, top, nodes)`` to simulate
    instead of the RTL (gate-level).
    -> {"build": {...}, "nodes": [{node, op_type, status, mismatches, cycles, ...}]}"""
    t0 = time.time()
    text, streams = nodes_top(design, top, nodes, pumped_nodes(model))
    if netlist is not None:
        wd, files = netlist
        b = build_library(wd, files, top, None, streams, cache_dir, log=log,
                          key_extra="gate-level", opt=NETLIST_CXX_OPT)
    else:
        wd = design.src_dir
        b = build_library(wd, design.files, top, text, streams, cache_dir, log=log)
    recs = []
    with Sim(b["lib"], wd) as sim:
        for inst in design.instances:
            if nodes is not None and inst.node not in nodes:
                continue
            ins = [s for s in streams if s.node == inst.node and s.direction == "in"]
            outs = [s for s in streams if s.node == inst.node and s.direction == "out"]
            feed = {s.name: packing.pack_many([c[s.stream.tensor] for c in ctxs], s.stream.dtype,
                                        s.stream.folded_shape, s.width) for s in ins}
            want = {s.name: s.stream.beats * len(ctxs) for s in outs}
            sim.reset()
            exp = max(inst.exp_cycles, 1) * len(ctxs)
            r = sim.run(feed, want, stall_in=stall, stall_out=stall, seed=seed,
                        max_idle=max(10_000, 4 * max(inst.exp_cycles, 1)))
            rec = {"node": inst.node, "op_type": inst.op_type, "cycles": r["cycles"],
                   "cycles_per_image": r["cycles"] / len(ctxs),
                   "est_cycles_per_image": inst.exp_cycles, "mismatches": 0,
                   "n_values": 0, "cycles_per_second": r["cycles_per_second"]}
            for s in outs:
                got = r["outputs"][s.name].reshape(len(ctxs), s.stream.beats, -1)
                for k, c in enumerate(ctxs):
                    y = packing.unpack(got[k], s.stream.dtype, s.stream.folded_shape, s.width)
                    g = np.asarray(c[s.stream.tensor], np.float32).reshape(y.shape)
                    rec["mismatches"] += int((y != g).sum())
                    rec["n_values"] += int(g.size)
            for s in ins:
                if r["consumed"][s.name] != s.stream.beats * len(ctxs):
                    rec["unconsumed_input"] = {s.name: r["consumed"][s.name]}
            rec["status"] = "pass" if rec["mismatches"] == 0 and "unconsumed_input" not in rec \
                else "fail"
            del exp
            recs.append(rec)
            if log:
                log(f"  {inst.node}: {rec['status']} ({rec['mismatches']} of {rec['n_values']}"
                    f" values differ, {rec['cycles_per_image']:.0f} cycles/image)")
    return {"build": b, "nodes": recs, "seconds": time.time() - t0}


# ----------------------------------------------------------------------------- stitched

class Stitched:
    """The stitched partition compiled and loaded (reuse it for several runs)."""

    def __init__(self, model, design: HDLDesign, cache_dir=None, log=None,
                 fifo_gauge: bool = False, top: str = "finn_stitched", netlist=None):
        """``fifo_gauge``: FINN's simulation FIFOs (``FINN_SIMULATION``: unbounded
        ``fifo_gauge`` instead of ``fifo``), their ``maxcount`` readable as probes.
        ``netlist``: (directory, [files]) of a synthesized netlist of the same top (same
        ports) to simulate instead of the RTL (gate-level)."""
        self.model = model
        self.design = design
        self.probes = []
        if fifo_gauge:
            top = top + "_gauge"
            self.text, self.streams, self.probes = stitched_top(design, model, top, True)
        else:
            self.text, self.streams = stitched_top(design, model, top)
        if netlist is not None:
            ndir, nfiles = netlist
            self.build = build_library(ndir, nfiles, top, None, self.streams, cache_dir,
                                       log=log, key_extra="gate-level", opt=NETLIST_CXX_OPT)
            self.sim = Sim(self.build["lib"], ndir)
        else:
            self.build = build_library(design.src_dir, design.files, top, self.text,
                                       self.streams, cache_dir, log=log, probes=self.probes,
                                       defines=("FINN_SIMULATION",) if fifo_gauge else ())
            self.sim = Sim(self.build["lib"], design.src_dir)
        self.ins = [s for s in self.streams if s.direction == "in"]
        self.outs = [s for s in self.streams if s.direction == "out"]

    def close(self):
        self.sim.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def fifo_maxcounts(self) -> dict:
        """{FIFO node: max occupancy since reset} (only with ``fifo_gauge``)."""
        return {p[2:-len("_maxcount")]: self.sim.probe(p) for p in self.probes
                if p.endswith("_maxcount")}

    def run(self, inputs: list, stall: float = 0.0, seed: int = 0, reset: bool = True,
            max_idle: int = 200_000, pace: int | None = None) -> dict:
        """``inputs``: per image {graph input tensor: array} (or an array for a single
        input). All images streamed back to back. -> {"outputs": [{tensor: array}],
        "cycles", "latency_cycles" (first input beat of image 0 .. last output beat),
        "interval_cycles" (mean steady-state cycles between consecutive images' last
        output beats), "per_image_done": [...], ...}. ``pace``: offer image k's input no
        earlier than cycle k * pace (a source at a fixed frame rate)."""
        n = len(inputs)
        norm = []
        for x in inputs:
            if not isinstance(x, dict):
                x = {self.ins[0].stream.tensor: x}
            norm.append(x)
        feed = {s.name: packing.pack_many([x[s.stream.tensor] for x in norm], s.stream.dtype,
                                    s.stream.folded_shape, s.width) for s in self.ins}
        want = {s.name: s.stream.beats * n for s in self.outs}
        release = None
        if pace:
            release = {s.name: np.repeat(np.arange(n, dtype=np.int64) * int(pace),
                                         s.stream.beats) for s in self.ins}
        if reset:
            self.sim.reset()
        r = self.sim.run(feed, want, stall_in=stall, stall_out=stall, seed=seed,
                         max_idle=max_idle, timestamps=True, release=release)
        outs = [dict() for _ in range(n)]
        done = np.zeros(n, np.int64)
        start = None
        for s in self.outs:
            got = r["outputs"][s.name].reshape(n, s.stream.beats, -1)
            ts = r["out_ts"][s.name].reshape(n, s.stream.beats)
            done = np.maximum(done, ts[:, -1])
            shape = self.model.get_tensor_shape(s.stream.tensor)
            for k in range(n):
                y = packing.unpack(got[k], s.stream.dtype, s.stream.folded_shape, s.width)
                outs[k][s.stream.tensor] = y.reshape(shape)
        for s in self.ins:
            ts = r["in_ts"][s.name].reshape(n, s.stream.beats)
            first = int(ts[0, 0])
            start = first if start is None else min(start, first)
        interval = float(np.diff(done).mean()) if n > 1 else None
        return {"outputs": outs, "cycles": r["cycles"], "wall_seconds": r["wall_seconds"],
                "cycles_per_second": r["cycles_per_second"],
                "latency_cycles": int(done[0] - (start or 0) + 1),
                "interval_cycles": interval, "per_image_done": done.tolist(),
                "consumed": r["consumed"]}
