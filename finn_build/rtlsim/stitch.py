"""Top-level Verilog for simulation/synthesis from an ``HDLDesign``.

``stitched_top``: the whole dataflow partition as one AXI-Stream chain (what FINN's
``CreateStitchedIP`` builds in Vivado IPI): every node instance, one wire bundle per
internal tensor, graph inputs as ``s_axis_<k>`` and graph outputs as ``m_axis_<k>``
(several of each where the partition has them). The FIFOs are the partition's own
``StreamingFIFO_rtl`` nodes.

``nodes_top``: every node instance side by side with all of its streams exposed
(``n<i>_in0_V``...), so that ONE compiled library serves node-by-node simulation.

Both return ``(verilog_text, [TopStream])``; a ``TopStream`` is one AXI-Stream port bundle
``<name>_tdata/_tvalid/_tready`` of the top module.
"""
from __future__ import annotations

from dataclasses import dataclass

from .hdl import HDLDesign, RTLSimError, Stream, instantiate


@dataclass
class TopStream:
    name: str          # port prefix on the top module
    direction: str     # "in" (we drive data) | "out" (we collect)
    width: int
    stream: Stream     # the instance stream (tensor, dtype, folded shape)
    node: str          # instance that consumes (in) / produces (out) it


def _decl(streams, clk2x: bool = False) -> list:
    out = ["  input  wire ap_clk", "  input  wire ap_rst_n"]
    if clk2x:  # the driver runs it at twice the rate of ap_clk (verilator.driver_cpp)
        out.append("  input  wire ap_clk2x")
    for s in streams:
        if s.direction == "in":
            out += [f"  input  wire [{s.width - 1}:0] {s.name}_tdata",
                    f"  input  wire {s.name}_tvalid", f"  output wire {s.name}_tready"]
        else:
            out += [f"  output wire [{s.width - 1}:0] {s.name}_tdata",
                    f"  output wire {s.name}_tvalid", f"  input  wire {s.name}_tready"]
    return out


def _conn(stream: Stream, wire: str) -> dict:
    return {f"{stream.port}_TDATA": f"{wire}_tdata", f"{stream.port}_TVALID": f"{wire}_tvalid",
            f"{stream.port}_TREADY": f"{wire}_tready"}


def stitched_top(design: HDLDesign, model, top: str = "finn_stitched",
                 fifo_probes: bool = False):
    """The dataflow partition ``model`` (whose nodes ``design`` holds) as one top module.
    ``fifo_probes``: every StreamingFIFO's ``maxcount`` (and ``count``) as a 32-bit top
    output ``p_<node>_maxcount`` (FIFO sizing with ``FINN_SIMULATION``'s fifo_gauge)."""
    producers, consumers = {}, {}
    for inst in design.instances:
        for s in inst.outputs:
            if s.tensor in producers:
                raise RTLSimError(f"tensor {s.tensor} produced twice")
            producers[s.tensor] = (inst, s)
        for s in inst.inputs:
            if s.tensor in consumers:
                raise RTLSimError(f"tensor {s.tensor} feeds {consumers[s.tensor][0].node} and "
                                  f"{inst.node}: an AXI stream has one consumer (FINN inserts "
                                  "DuplicateStreams for fan-out)")
            consumers[s.tensor] = (inst, s)
    streams, body, conns = [], [], {i.node: {} for i in design.instances}
    for k, t in enumerate(x.name for x in model.graph.input):
        if t not in consumers:
            raise RTLSimError(f"graph input {t} feeds no HW node")
        inst, s = consumers[t]
        ts = TopStream(f"s_axis_{k}", "in", s.width, s, inst.node)
        streams.append(ts)
        conns[inst.node].update(_conn(s, ts.name))
    for k, t in enumerate(x.name for x in model.graph.output):
        if t not in producers:
            raise RTLSimError(f"graph output {t} is produced by no HW node")
        inst, s = producers[t]
        ts = TopStream(f"m_axis_{k}", "out", s.width, s, inst.node)
        streams.append(ts)
        conns[inst.node].update(_conn(s, ts.name))
    graph_io = {x.name for x in model.graph.input} | {x.name for x in model.graph.output}
    for t, (pinst, ps) in producers.items():
        if t in graph_io:
            continue
        if t not in consumers:
            raise RTLSimError(f"tensor {t} from {pinst.node} has no consumer")
        cinst, cs = consumers[t]
        if ps.width != cs.width:
            raise RTLSimError(f"width mismatch on {t}: {pinst.node} {ps.width} bits -> "
                              f"{cinst.node} {cs.width} bits")
        w = f"w_{_ident(t)}"
        body += [f"  wire [{ps.width - 1}:0] {w}_tdata;", f"  wire {w}_tvalid, {w}_tready;"]
        conns[pinst.node].update(_conn(ps, w))
        conns[cinst.node].update(_conn(cs, w))
    for t, (cinst, _) in consumers.items():
        if t not in producers and t not in graph_io:
            raise RTLSimError(f"tensor {t} into {cinst.node} has no producer")
    probes = []
    pumped = pumped_nodes(model)
    for inst in design.instances:
        c = {"ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n", **conns[inst.node]}
        if inst.node in pumped:
            c["ap_clk2x"] = "ap_clk2x"
        if fifo_probes and inst.op_type.startswith("StreamingFIFO"):
            for p in ("maxcount", "count"):
                if p in inst.ports:
                    c[p] = f"p_{inst.node}_{p}"
                    probes.append(f"p_{inst.node}_{p}")
        body.append(instantiate(inst.module, f"u_{inst.node}", inst.ports, c))
    decl = _decl(streams, bool(pumped)) + [f"  output wire [31:0] {p}" for p in probes]
    text = (f"// generated by finn_build.rtlsim.stitch: dataflow partition as one AXI-Stream "
            f"chain\nmodule {top} (\n" + ",\n".join(decl) + "\n);\n"
            + "\n".join(body) + f"endmodule // {top}\n")
    if fifo_probes:
        return text, streams, probes
    return text, streams


def nodes_top(design: HDLDesign, top: str = "finn_nodes", nodes=None, pumped=frozenset()):
    """Every (or the listed) node instance with all its streams on the top module.
    ``pumped``: ``pumped_nodes(model)`` (the design has no model), their ap_clk2x at 2x."""
    streams, body = [], []
    clk2x = False
    for i, inst in enumerate(design.instances):
        if nodes is not None and inst.node not in nodes:
            continue
        c = {"ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n"}
        if inst.node in pumped:
            c["ap_clk2x"], clk2x = "ap_clk2x", True
        for s in inst.inputs + inst.outputs:
            ts = TopStream(f"n{i}_{s.port}", "in" if s in inst.inputs else "out", s.width, s,
                           inst.node)
            streams.append(ts)
            c.update(_conn(s, ts.name))
        body.append(instantiate(inst.module, f"u_{inst.node}", inst.ports, c))
    text = (f"// generated by finn_build.rtlsim.stitch: nodes side by side\nmodule {top} (\n"
            + ",\n".join(_decl(streams, clk2x)) + "\n);\n" + "\n".join(body)
            + f"endmodule // {top}\n")
    return text, streams


def pumped_nodes(model) -> set:
    """Names of the clock-pumped nodes (``pumpedCompute=1``): their ``ap_clk2x`` is the top's
    ``ap_clk2x`` (else ``hdl.instantiate`` ties it to ``ap_clk``, and a pumped MVU hangs).
    ``pumpedMemory=1`` is refused: the weight streamer's ``ap_clk2x`` inside the generated
    ``<node>_hier`` (``layers.mvau.memstream_hier``) is still tied to ``ap_clk``."""
    from onnx import helper

    out = set()
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("pumpedMemory", 0):
            raise RTLSimError(f"{n.name}: pumpedMemory=1 cannot be simulated here yet (its "
                              "weight streamer would run on ap_clk instead of ap_clk2x)")
        if attrs.get("pumpedCompute", 0):
            out.add(n.name)
    return out


def _ident(t: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in t)
