"""FIFO sizing by simulation (Verilator), no Vivado.

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

The depths are written as ``{fifo node: depth}`` JSON, the format of the build config's
``fifo_depths: <file>``. With ``verify=True`` the design is regenerated with those depths,
re-compiled and simulated again: the measured interval with sized FIFOs.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from .flow import Stitched
from .hdl import generate_hdl


def size_fifos(model, design, xs, cache_dir, out_json, clock_mhz: float,
               est_cycles: int | None = None, verify: bool = True, fpgapart: str = "",
               clk_ns: float = 10.0) -> dict:
    t0 = time.time()
    graph_in = {i.name for i in model.graph.input}
    fifo_in = {n.name: n.input[0] for n in model.graph.node
               if n.op_type.startswith("StreamingFIFO")}
    from qonnx.custom_op.registry import getCustomOp

    current = {n.name: int(getCustomOp(n).get_nodeattr("depth")) for n in model.graph.node
               if n.op_type.startswith("StreamingFIFO")}
    with Stitched(model, design, cache_dir, fifo_gauge=True) as st:
        free = st.run(xs)
        free_max = st.fifo_maxcounts()
        pace = int(max(free["interval_cycles"] or 0, est_cycles or 0)) or None
        paced = st.run(xs, pace=pace)
        maxc = st.fifo_maxcounts()
        compile_s = st.build["seconds"]
    depths = {}
    for name, c in maxc.items():
        if fifo_in.get(name) in graph_in:
            depths[name] = current[name]
        else:
            depths[name] = max(2, int(c))
    out_json = Path(out_json)
    out_json.write_text(json.dumps(depths, indent=1))
    res = {"method": "FINN_SIMULATION fifo_gauge (unbounded), paced input",
           "interval_cycles": free["interval_cycles"], "latency_cycles": free["latency_cycles"],
           "pace_cycles": pace, "paced_interval_cycles": paced["interval_cycles"],
           "maxcount_paced": maxc, "maxcount_unpaced": free_max,
           "depths": depths, "previous_depths": current, "depths_file": str(out_json),
           "compile_seconds": round(compile_s, 2)}
    if verify:
        m2 = copy.deepcopy(model)
        for n in m2.graph.node:
            if n.name in depths:
                getCustomOp(n).set_nodeattr("depth", int(depths[n.name]))
        d2 = generate_hdl(m2, Path(design.src_dir).parent / "sized", fpgapart, clk_ns)
        with Stitched(m2, d2, cache_dir) as st2:
            r2 = st2.run(xs)
            res["sized"] = {"interval_cycles": r2["interval_cycles"],
                            "latency_cycles": r2["latency_cycles"],
                            "fps": clock_mhz * 1e6 / r2["interval_cycles"]
                            if r2["interval_cycles"] else None,
                            "compile_seconds": round(st2.build["seconds"], 2),
                            "outputs": r2["outputs"]}
    res["seconds"] = round(time.time() - t0, 2)
    return res
