"""VVAU models for tests/test_layers_vvau.py: N independent VVAU nodes side by side (one
input, weights and output each; random integer weights and inputs of the given FINN
datatypes) and the numpy depthwise-convolution reference."""
from __future__ import annotations

import math

import numpy as np


def vvau_cfg(ch=6, k=3, dim=(5, 5), pe=2, simd=1, idt="UINT4", wdt="INT4", ram_style="auto",
             seed=0, narrow=True, res="lut"):
    """``narrow``: signed weights without the type minimum (as the build's MVAU weights);
    False: the full range, the minimum included. ``res``: resType, the multipliers (lut or
    dsp)."""
    return dict(ch=ch, k=k, dim=dim, pe=pe, simd=simd, idt=idt, wdt=wdt, ram_style=ram_style,
                seed=seed, narrow=narrow, res=res)


def exact_acc_type(weights, idt):
    """The accumulator type FINN's minimize_accumulator_width chooses for a node that is
    not the last of a graph (no rounding up to a byte multiple): odd widths like INT11."""
    from qonnx.core.datatype import DataType
    from qonnx.util.basic import calculate_matvec_accumulator_range

    ch = weights.shape[0]
    lo, hi = calculate_matvec_accumulator_range(weights.reshape(ch, -1).T, idt)
    if lo >= 0:
        return DataType[f"UINT{max(1, math.ceil(math.log2(hi + 1)))}"]
    return DataType[f"INT{math.ceil(math.log2(max(-lo, 1 + hi))) + 1}"]


def vvau_model(cfgs, op_type="VVAU_rtl", **attrs):
    """One model, node i = cfgs[i]: tensors inp_i [1, H, W, k*k*C], weights_i [C, 1, k, k]
    (random over the weight type, see ``vvau_cfg``), out_i [1, H, W, C]."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    from finn_build.finn_env import ensure_finn_env

    ensure_finn_env()
    import finn_build.layers.vvau  # noqa: F401  (registers our VVAU_rtl)

    domain = "finn.custom_op.fpgadataflow" + (".rtl" if op_type.endswith("_rtl") else "")
    nodes, ins, outs, types, inits = [], [], [], {}, {}
    for i, c in enumerate(cfgs):
        h, w = c["dim"]
        ch, k = c["ch"], c["k"]
        idt, wdt = DataType[c["idt"]], DataType[c["wdt"]]
        rng = np.random.default_rng(c["seed"] + 100 * i)
        lo = wdt.min() + (1 if wdt.signed() and c["narrow"] else 0)
        weights = rng.integers(lo, wdt.max() + 1, (ch, 1, k, k)).astype(np.float32)
        if not c["narrow"]:
            weights.flat[0] = wdt.min()
        odt = exact_acc_type(weights, idt)
        ins.append(helper.make_tensor_value_info(f"inp_{i}", TensorProto.FLOAT,
                                                 [1, h, w, k * k * ch]))
        outs.append(helper.make_tensor_value_info(f"out_{i}", TensorProto.FLOAT, [1, h, w, ch]))
        nodes.append(helper.make_node(
            op_type, [f"inp_{i}", f"weights_{i}"], [f"out_{i}"], name=f"{op_type}_{i}",
            domain=domain, backend="fpgadataflow", PE=c["pe"], SIMD=c["simd"], Dim=[h, w],
            Channels=ch, Kernel=[k, k], inputDataType=idt.name, weightDataType=wdt.name,
            outputDataType=odt.name, accDataType=odt.name, noActivation=1,
            mem_mode="internal_embedded", ram_style=c["ram_style"],
            resType=c.get("res", "lut"), **attrs))
        types.update({f"inp_{i}": idt, f"weights_{i}": wdt, f"out_{i}": odt})
        inits[f"weights_{i}"] = weights
    model = ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "vvau", ins, outs),
                                          producer_name="vvau-test"))
    for t, v in inits.items():
        model.set_initializer(t, v)
    for t, dt in types.items():
        model.set_tensor_datatype(t, dt)
    return model


def random_inputs(model, n=1, seed=1):
    """[{inp_i: array}] * n, uniformly random over each input's datatype."""
    rng = np.random.default_rng(seed)
    names = [i.name for i in model.graph.input]
    out = []
    for _ in range(n):
        d = {}
        for t in names:
            dt = model.get_tensor_datatype(t)
            d[t] = rng.integers(dt.min(), dt.max() + 1,
                                model.get_tensor_shape(t)).astype(np.float32)
        out.append(d)
    return out


def depthwise_reference(x, weights, pe):
    """numpy depthwise conv on the im2col'd stream ``x`` [1, H, W, k*k*C] in the folded
    layout of the sliding window's depthwise mode (per fold of PE channels: every tap, the
    PE channels innermost): out[h, w, c] = sum_t x[h, w, tap t of c] * weights[c, 0, t]."""
    ch = weights.shape[0]
    kk = int(np.prod(weights.shape[2:]))
    _, h, w, _ = x.shape
    xs = x.reshape(h, w, ch // pe, kk, pe).transpose(0, 1, 2, 4, 3).reshape(h, w, ch, kk)
    wt = weights.reshape(ch, kk).astype(np.int64)
    return np.einsum("hwct,ct->hwc", xs.astype(np.int64), wt)[None].astype(np.float32)


def im2col_nhwc(img, k):
    """Standard im2col (tap-major, channels innermost) of an NHWC image, 'same' zero padding,
    stride 1 -> [1, H, W, k*k*C], and the same patches in the depthwise folded layout for
    ``pe``: see ``to_folded``."""
    _, h, w, c = img.shape
    p = k // 2
    pad = np.zeros((h + 2 * p, w + 2 * p, c), img.dtype)
    pad[p:p + h, p:p + w] = img[0]
    cols = np.stack([pad[i:i + h, j:j + w] for i in range(k) for j in range(k)], axis=2)
    return cols.reshape(1, h, w, k * k * c)


def to_folded(cols, ch, pe):
    """im2col order [tap][channel] -> depthwise stream order [channel fold][tap][PE]."""
    _, h, w, n = cols.shape
    kk = n // ch
    x = cols.reshape(h, w, kk, ch // pe, pe).transpose(0, 1, 3, 2, 4)
    return x.reshape(1, h, w, n)


def swg_vvau_model(ch=6, k=3, ifm=(7, 7), pe=2, simd=1, idt="UINT4", wdt="INT4", seed=0):
    """FINN's ConvolutionInputGenerator_rtl (depthwise, SIMD = PE; parallel_window when the
    VVAU takes all k*k taps at once) feeding our VVAU_rtl: the stream layout as in a build.
    Valid convolution, stride 1: [1, H, W, C] -> [1, H-k+1, W-k+1, C]."""
    from onnx import TensorProto, helper

    m = vvau_model([vvau_cfg(ch=ch, k=k, dim=(ifm[0] - k + 1, ifm[1] - k + 1), pe=pe,
                             simd=simd, idt=idt, wdt=wdt, seed=seed)])
    g = m.graph
    oh, ow = ifm[0] - k + 1, ifm[1] - k + 1
    parallel = int(simd == k * k)
    swg = helper.make_node(
        "ConvolutionInputGenerator_rtl", ["x"], ["inp_0"], name="ConvolutionInputGenerator_rtl_0",
        domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
        ConvKernelDim=[k, k], IFMChannels=ch, IFMDim=list(ifm), OFMDim=[oh, ow],
        SIMD=ch if parallel else pe, Stride=[1, 1], Dilation=[1, 1], inputDataType=idt,
        outputDataType=idt, depthwise=1, parallel_window=parallel)
    g.node.insert(0, swg)
    old_in = g.input[0]
    g.value_info.append(old_in)
    g.input.remove(old_in)
    g.input.insert(0, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *ifm, ch]))
    from qonnx.core.datatype import DataType

    m.set_tensor_datatype("x", DataType[idt])
    return m
