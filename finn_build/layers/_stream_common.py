"""Shared pieces of our stream layers (``duplicatestreams``, ``addstreams``,
``globalaccpool``): the FINN-named Verilog top wrapper, the file list, FINN's IPI TCL,
the datatype / folding checks. Not a layer module itself (not in ``LAYER_MODULES``).

FINN's naming: ``ap_clk``, ``ap_rst_n``, then per node input ``in<i>_V_TDATA/TVALID/TREADY``
and per node output ``out<i>_V_...``, TDATA padded to a multiple of 8 bits
(``get_instream_width_padded`` / ``get_outstream_width_padded``), as FINN's
``get_verilog_top_module_intf_names`` reports them and as ``CreateStitchedIP`` and
``finn_build.rtlsim.hdl`` look them up. The wrapper is plain Verilog (a ``.v`` file; Vivado's
``create_bd_cell -type module -reference`` needs a Verilog top) around our SystemVerilog core.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import RTL_DIR, divisors


class FoldingError(ValueError):
    """PE does not divide the channel count (message names the node and the numbers)."""


def pe_space(model, node, inst) -> list:
    """Folding of a stream layer (``HWLayer.fold_space``): every PE dividing the channels."""
    return [({"PE": p}, {}) for p in divisors(inst.get_nodeattr("NumChannels"))]


def check_pe(inst) -> None:
    ch, pe = int(inst.get_nodeattr("NumChannels")), int(inst.get_nodeattr("PE"))
    if pe < 1 or ch % pe != 0:
        raise FoldingError(f"{inst.onnx_node.name} ({inst.onnx_node.op_type}): PE={pe} must "
                           f"divide NumChannels={ch} (channels are folded NumChannels/PE)")


def check_integer(inst, dt, what: str) -> None:
    if not dt.is_integer() or dt.name == "BIPOLAR":  # bipolar's bit 0 means -1
        raise TypeError(f"{inst.onnx_node.name} ({inst.onnx_node.op_type}): {what} datatype "
                        f"{dt.name} is not a two's-complement / unsigned integer type (the "
                        "RTL adds integers)")


def sources(names, abspath: bool) -> list:
    """Our SystemVerilog files (``finn_build/rtl``), absolute or bare names."""
    return [str(RTL_DIR / n) if abspath else n for n in names]


def file_list(inst, core_files, abspath: bool) -> list:
    """Our core sources, then the node's generated wrapper ``<gen_top_module>.v``
    (FINN's RTL ops list library files first, the wrapper last)."""
    top = inst.get_nodeattr("gen_top_module") or inst.onnx_node.name
    gen = inst.get_nodeattr("code_gen_dir_ipgen") if abspath else ""
    return sources(core_files, abspath) + [os.path.join(gen, top + ".v") if gen else top + ".v"]


def ipi_tcl(inst, core_files) -> list:
    """Vivado IP-integrator TCL, FINN's pattern for RTL ops (fmpadding_rtl, thresholding_rtl):
    add every source, then a module-reference cell named after the node."""
    cmd = [f"add_files -norecurse {f}" for f in file_list(inst, core_files, True)]
    cmd.append("create_bd_cell -type module -reference %s %s"
               % (inst.get_nodeattr("gen_top_module"), inst.onnx_node.name))
    return cmd


def write_wrapper(inst, core: str, params: dict, conn: dict, n_in: int, n_out: int,
                  body: str = "") -> Path:
    """Write ``<code_gen_dir_ipgen>/<node>.v``: FINN's port names, the core instance ``impl``.

    ``params``: core parameter -> value; ``conn``: core port -> expression over the wrapper's
    wires: ``in<i>_V_TDATA`` etc. and, for outputs, ``o<j>_data`` (a wire of the unpadded
    output width ``inst.get_outstream_width(j)``, padded with zeros onto ``out<j>_V_TDATA``).
    ``body``: extra declarations / assigns placed before the instance."""
    name = inst.onnx_node.name
    gen = Path(inst.get_nodeattr("code_gen_dir_ipgen"))
    gen.mkdir(parents=True, exist_ok=True)
    busif = ":".join([f"in{i}_V" for i in range(n_in)] + [f"out{j}_V" for j in range(n_out)])
    ports = [
        f'(* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF {busif}, ASSOCIATED_RESET ap_rst_n" *)',
        '(* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" *)',
        "input  ap_clk,",
        '(* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)',
        "input  ap_rst_n,",
    ]
    decl, assigns = [], []
    for i in range(n_in):
        w = int(inst.get_instream_width_padded(i))
        ports += [f"output in{i}_V_TREADY,", f"input  in{i}_V_TVALID,",
                  f"input  [{w - 1}:0] in{i}_V_TDATA,"]
    for j in range(n_out):
        w = int(inst.get_outstream_width_padded(j))
        wu = int(inst.get_outstream_width(j))
        ports += [f"input  out{j}_V_TREADY,", f"output out{j}_V_TVALID,",
                  f"output [{w - 1}:0] out{j}_V_TDATA,"]
        decl.append(f"wire [{wu - 1}:0] o{j}_data;")
        assigns.append(f"assign out{j}_V_TDATA = {{{w - wu}'b0, o{j}_data}};" if w > wu
                       else f"assign out{j}_V_TDATA = o{j}_data;")
    ports[-1] = ports[-1].rstrip(",")
    plist = ",\n".join(f"  .{k}({v})" for k, v in params.items())
    clist = ",\n".join(f"  .{k}({v})" for k, v in
                       {"clk": "ap_clk", "rst_n": "ap_rst_n", **conn}.items())
    text = (f"// generated by finn_build.layers ({type(inst).__name__}) for node {name}:\n"
            f"// FINN port names around our SystemVerilog core {core} (finn_build/rtl)\n"
            f"module {name} (\n" + "\n".join(ports) + "\n);\n\n"
            + "\n".join(decl) + ("\n" if decl else "") + body
            + "\n".join(assigns) + "\n\n"
            f"{core} #(\n{plist}\n) impl (\n{clist}\n);\n\nendmodule\n")
    out = gen / f"{name}.v"
    out.write_text(text)
    inst.set_nodeattr("gen_top_module", name)
    # FINN's HLS-synth / stitching transformations look for these (as for its RTL ops)
    inst.set_nodeattr("ipgen_path", str(gen))
    inst.set_nodeattr("ip_path", str(gen))
    return out
