"""FIFO sizing by simulation (Verilator), no Vivado: what FINN's builder does by default
(``step_set_fifo_depths`` with ``InsertAndSetFIFODepths``), on our open simulator.

The stitched design is compiled with ``FINN_SIMULATION``: every ``StreamingFIFO_rtl`` then
is FINN's ``fifo_gauge`` (an unbounded queue that never back-pressures and tracks its
maximum fill, ``maxcount``), read through probes. Two runs on the images:

1. unpaced (input as fast as the design takes it): the intrinsic steady-state interval of
   the layers without any FIFO back-pressure;
2. paced at ``max(that interval, FINN's estimated bottleneck cycles)`` per image (a source
   at the design's real frame rate; an unpaced source would pile every image up in the
   FIFOs in front of the bottleneck): the max fill of every FIFO -> its depth
   (at least 2, fifo.sv's minimum). The FIFO on the graph input keeps its depth (the host
   DMA is back-pressured, not buffered).

Then the design with those depths (real ``fifo`` queues, as built) is generated, compiled
and simulated on the same images: its measured interval and latency are what the hardware
does, and its outputs are returned for a bit-exact check.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

from .flow import Stitched
from .hdl import generate_hdl


def fifo_nodes(model) -> dict:
    """{FIFO node name: its depth attribute}."""
    from qonnx.custom_op.registry import getCustomOp

    return {n.name: int(getCustomOp(n).get_nodeattr("depth")) for n in model.graph.node
            if n.op_type.startswith("StreamingFIFO")}


def apply_depths(model, depths: dict):
    """Set the depth of every FIFO named in ``depths`` (in place)."""
    from qonnx.custom_op.registry import getCustomOp

    for n in model.graph.node:
        if n.name in depths:
            getCustomOp(n).set_nodeattr("depth", int(depths[n.name]))
    return model


def measure(model, xs, work_dir, cache_dir, fpgapart: str, clk_ns: float) -> dict:
    """The design as built (its FIFO depths) streamed on ``xs`` back to back.
    -> {interval_cycles, latency_cycles, outputs, compile_seconds, compile_cached}"""
    design = generate_hdl(copy.deepcopy(model), Path(work_dir), fpgapart, clk_ns)
    with Stitched(model, design, cache_dir) as st:
        r = st.run(xs)
        return {"interval_cycles": r["interval_cycles"], "latency_cycles": r["latency_cycles"],
                "outputs": r["outputs"], "compile_seconds": round(st.build["seconds"], 2),
                "compile_cached": st.build["cached"]}


def size_fifos(model, xs, work_dir, cache_dir, fpgapart: str, clk_ns: float,
               est_cycles: int | None = None) -> dict:
    """Depths by simulation -> {"depths", "interval_cycles" (unbounded FIFOs),
    "pace_cycles", "maxcount_paced", ..., "compile_seconds"}. ``model`` is not changed."""
    t0 = time.time()
    work_dir = Path(work_dir)
    graph_in = {i.name for i in model.graph.input}
    fifo_in = {n.name: n.input[0] for n in model.graph.node
               if n.op_type.startswith("StreamingFIFO")}
    current = fifo_nodes(model)
    gauge = copy.deepcopy(model)  # code_gen_dir attributes stay off the caller's model
    design = generate_hdl(gauge, work_dir / "gauge", fpgapart, clk_ns)
    with Stitched(gauge, design, cache_dir, fifo_gauge=True) as st:
        free = st.run(xs)
        free_max = st.fifo_maxcounts()
        pace = int(max(free["interval_cycles"] or 0, est_cycles or 0)) or None
        paced = st.run(xs, pace=pace)
        maxc = st.fifo_maxcounts()
        compile_s, cached = st.build["seconds"], st.build["cached"]
    depths = {name: current[name] if fifo_in.get(name) in graph_in else max(2, int(c))
              for name, c in maxc.items()}
    return {"method": "FINN_SIMULATION fifo_gauge (unbounded), paced input",
            "interval_cycles": free["interval_cycles"], "latency_cycles": free["latency_cycles"],
            "pace_cycles": pace, "paced_interval_cycles": paced["interval_cycles"],
            "maxcount_paced": maxc, "maxcount_unpaced": free_max,
            "depths": depths, "previous_depths": current,
            "compile_seconds": round(compile_s, 2), "compile_cached": cached,
            "seconds": round(time.time() - t0, 2)}
