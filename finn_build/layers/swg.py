"""ConvolutionInputGenerator: FINN's sliding window (finn-rtllib/swg) in front of every
convolution. Layout only: it reorders values, never changes one. Folding: SIMD dividing the
channels, and the RTL window's parallel mode (all k*k taps per cycle, SIMD = channels) unless
it is depthwise; a depthwise window feeding a VVAU is folded together with it (``vvau.py``).
LUT estimate: ``lut_fits.swg_lut`` (finn-plus' 300 + buffer was +19% .. +129% off yosys)."""
from __future__ import annotations

from . import HWLayer, divisors
from .lut_fits import swg_lut, replacing_lut


def _infer(model):
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen

    return [InferConvInpGen()]


def parallel_window_ok(node, inst) -> bool:
    """The RTL window's parallel mode can be generated: finn-plus' generator sizes its
    counters by log2(max(out_h - 1, out_w - 1, ...)), a math domain error for a 1x1 output
    map (measured: the tiny CNN's last conv, 3x3 -> 1x1)."""
    oh, ow = inst.get_nodeattr("OFMDim")
    return node.op_type.endswith("_rtl") and oh * ow > 1


def depthwise_stream_order(model, ctxs) -> None:
    """A depthwise sliding window with SIMD < channels streams its windows channel-fold
    first, (OH, OW, C/SIMD, KH, KW, SIMD), the order the VVAU reads (FINN's
    ConvolutionInputGenerator_rtl documents it); FINN's python execution (Im2Col) gives
    (OH, OW, KH, KW, C). In golden contexts (``rtlsim.flow.golden_context``) reorder that
    window's output, and the FIFOs' / width converters' behind it (the same stream), to the
    layout the RTL is specified for, so node-by-node and gate-level simulations of these
    nodes compare like with like. Graph outputs never are such a stream."""
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if not node.op_type.startswith("ConvolutionInputGenerator"):
            continue
        inst = getCustomOp(node)
        simd, ch = inst.get_nodeattr("SIMD"), inst.get_nodeattr("IFMChannels")
        if not (inst.get_nodeattr("depthwise") and simd < ch):
            continue
        kh, kw = inst.get_nodeattr("ConvKernelDim")
        tensors = [node.output[0]]
        nxt = model.find_consumer(tensors[-1])
        while nxt is not None and nxt.op_type.split("_")[0] in ("StreamingFIFO",
                                                               "StreamingDataWidthConverter"):
            tensors.append(nxt.output[0])
            nxt = model.find_consumer(tensors[-1])
        for ctx in ctxs:
            for t in tensors:
                y = ctx[t]
                n, oh, ow, _ = y.shape
                ctx[t] = (y.reshape(n, oh, ow, kh, kw, ch // simd, simd)
                          .transpose(0, 1, 2, 5, 3, 4, 6).reshape(y.shape))


def _fold_space(model, node, inst) -> list:
    ch = inst.get_nodeattr("IFMChannels")
    out = [({"SIMD": s, "parallel_window": 0}, {}) for s in divisors(ch)]
    if parallel_window_ok(node, inst) and not inst.get_nodeattr("depthwise"):
        out.append(({"SIMD": ch, "parallel_window": 1}, {}))
    return out


correct_estimate = replacing_lut("ConvolutionInputGenerator_rtl", swg_lut, "RTL sliding window")


LAYERS = (HWLayer(family="ConvolutionInputGenerator", infer=_infer, infer_order=70,
                  fold_space=_fold_space, fold_attrs=("SIMD", "parallel_window"),
                  correct_estimate=correct_estimate, layout_only=True, rtlsim=True),)
