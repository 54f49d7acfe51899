"""The exported QONNX model executed in float64: the arbiter that tells a float32 rounding
flip at a quantizer boundary from a real defect in a float verification stage.

Float stages (Brevitas, QONNX, FINN-ONNX before streamlining) compute in float32. An
activation whose value lies within float32 error of a rounding boundary (x/scale + zeropt
= k + 0.5) can round either way, so two float32 executions of the same model (or float32
and the integer graph) may differ by one quantization step there, and that step propagates
to the logits (measured: Brevitas vs QONNX on an 8-bit CNN, 8 of 96 images). Such an image
is accepted when a few activations next to a rounding boundary, rounded to their other
neighbour in a float64 execution of the model, reproduce the stage's result AND the
reference (``explain``): both are then roundings of the same exact computation. A defect
(a wrong weight, scale or op) is not reproduced that way.

Candidates: per activation quantizer the ``PER_NODE`` elements nearest to a boundary, no
farther than ``NEAR`` steps (float32 errors are small, but BatchNorm of a near-constant
channel amplifies them: measured 0.02 step on an untrained 8-bit CNN). Only ops a Brevitas
export uses are implemented (numpy, torch for Conv); an unknown op raises
``NotImplementedError`` naming it, which fails the verification (never a silent pass).
"""
from __future__ import annotations

import numpy as np

NEAR = 0.05
PER_NODE = 4
MAX_FLIPS = 4


def _quant(x, scale, zeropt, bits, attrs, flip=None):
    """Quant in float64; ``flip``: flat indices rounded to their other neighbour.
    -> (output, flat indices of the candidates, their distance to the boundary)."""
    from qonnx.custom_op.general.intquant import max_int, min_int

    signed, narrow = int(attrs.get("signed", 1)), int(attrs.get("narrow", 0))
    if attrs.get("rounding_mode", "ROUND").upper() not in ("ROUND", "HALF_EVEN"):
        raise NotImplementedError(f"float64 reference: rounding mode {attrs['rounding_mode']}")
    v = np.broadcast_to(x / scale + zeropt, np.broadcast_shapes(x.shape, np.shape(scale)))
    lo, hi = min_int(signed, narrow, int(bits)), max_int(signed, narrow, int(bits))
    v = np.clip(v, lo, hi).reshape(-1)
    r = np.round(v)
    if flip:
        r[flip] = 2 * np.floor(v[flip]) + 1 - r[flip]
    dist = np.abs(v - np.floor(v) - 0.5)
    near = np.argsort(dist, kind="stable")[:PER_NODE]
    near = near[dist[near] < NEAR]
    y = (np.clip(r, lo, hi) - zeropt) * scale if np.ndim(scale) == 0 else \
        (np.clip(r, lo, hi).reshape(np.shape(x / scale)) - zeropt) * scale
    return y.reshape(np.broadcast_shapes(x.shape, np.shape(scale))), near, dist[near]


def _conv(x, w, b, attrs):
    import torch

    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise NotImplementedError("float64 reference: Conv with asymmetric pads")
    y = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                   None if b is None else torch.from_numpy(b),
                                   stride=list(attrs.get("strides", [1, 1])),
                                   padding=pads[:2], dilation=list(attrs.get("dilations", [1, 1])),
                                   groups=attrs.get("group", 1))
    return y.numpy()


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def run(model, x: np.ndarray, flips=()):
    """Execute ``model`` (a cleaned QONNX ModelWrapper) on one input in float64, with the
    activation elements ``flips`` ((node index, flat index) pairs) rounded the other way.
    -> (graph output 0 flattened, [(distance, node index, flat index)]: the candidates)."""
    from onnx import helper, numpy_helper

    g = model.graph
    ctx = {}
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        ctx[t.name] = a.astype(np.float64) if a.dtype.kind == "f" else a
    consts = set(ctx)
    ctx[g.input[0].name] = np.asarray(x, np.float64)
    near = []
    for k, node in enumerate(g.node):
        attrs = {}
        for at in node.attribute:
            v = helper.get_attribute_value(at)
            attrs[at.name] = v.decode() if isinstance(v, bytes) else v
        ins = [ctx[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Quant":
            act = node.input[0] not in consts  # weights are fixed values: never flipped
            mine = [f for n, f in flips if n == k] if act else None
            y, idx, dist = _quant(*ins[:4], attrs, mine)
            if act:
                near += [(float(d), k, int(i)) for d, i in zip(dist, idx)]
        elif op == "BipolarQuant":
            y = np.where(ins[0] >= 0, 1.0, -1.0) * ins[1]
        elif op == "Relu":
            y = np.maximum(ins[0], 0.0)
        elif op == "Conv":
            y = _conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs)
        elif op == "BatchNormalization":
            xx, s, b, m, var = ins[:5]
            sh = (1, -1) + (1,) * (xx.ndim - 2)
            y = ((xx - m.reshape(sh)) / np.sqrt(var.reshape(sh) + attrs.get("epsilon", 1e-5))
                 * s.reshape(sh) + b.reshape(sh))
        elif op == "MatMul":
            y = np.matmul(ins[0], ins[1])
        elif op == "Gemm":
            aa = ins[0].T if attrs.get("transA") else ins[0]
            bb = ins[1].T if attrs.get("transB") else ins[1]
            y = attrs.get("alpha", 1.0) * (aa @ bb)
            if len(ins) > 2 and ins[2] is not None:
                y = y + attrs.get("beta", 1.0) * ins[2]
        elif op in _BINARY:
            y = _BINARY[op](ins[0], ins[1])
        elif op == "Transpose":
            y = np.transpose(ins[0], attrs.get("perm"))
        elif op == "Reshape":
            y = ins[0].reshape([d if d != 0 else ins[0].shape[j] for j, d in enumerate(ins[1])])
        elif op == "Flatten":
            ax = attrs.get("axis", 1)
            y = ins[0].reshape(int(np.prod(ins[0].shape[:ax])), -1)
        elif op == "Einsum":
            y = np.einsum(attrs["equation"], *ins)
        elif op == "GlobalAveragePool":  # MobileNetV2-lite's pooling before the heads
            y = ins[0].mean(axis=tuple(range(2, ins[0].ndim)), keepdims=True)
        elif op == "Identity":
            y = ins[0]
        else:
            raise NotImplementedError(
                f"float64 reference: op {op} ({node.name}) is not implemented in "
                "finn_build/float64_ref.py")
        ctx[node.output[0]] = y
    return ctx[g.output[0].name].reshape(-1), sorted(near)


def explain(model, x, distance, tol: float, max_flips: int = MAX_FLIPS) -> dict:
    """Search for a few boundary flips that make the float64 model give a target result.

    ``distance(logits64) -> float`` measures how far a float64 result is from the target.
    Each round tries every candidate (given the flips so far) and keeps the flip that brings
    the result closest; a round that finds none closer ends the search.
    -> {"explained", "flips": [[node index, flat index, distance to the boundary in steps]],
    "distance"}."""
    flips, info = [], []
    y, near = run(model, x)
    best = distance(y)
    while best > tol and len(flips) < max_flips:
        trial = None
        for d, k, i in near:
            if (k, i) in flips:
                continue
            yy, nn = run(model, x, flips + [(k, i)])
            dd = distance(yy)
            if trial is None or dd < trial[0]:
                trial = (dd, (k, i), d, nn)
        if trial is None or trial[0] >= best:
            break
        best, near = trial[0], trial[3]
        flips.append(trial[1])
        info.append([trial[1][0], trial[1][1], round(trial[2], 6)])
    return {"explained": bool(best <= tol), "flips": info, "distance": float(best)}
