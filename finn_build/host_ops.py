"""Host-side operations: what stays on the CPU around the dataflow accelerator.

The dataflow partition consumes the raw UINT8 pixels (in its own layout) and produces the
integer accumulators of the last layer (all tasks' logits before scale/bias). The float ops
around it are recorded in the build metadata as a JSON list with the exact float32 values,
so a runtime (numpy only, no FINN) can apply them::

    {"pre":  [{"op": "transpose", "perm": [0, 2, 3, 1]}],          # NCHW -> NHWC
     "post": [{"op": "mul", "value": [[...12 floats...]]},
              {"op": "add", "value": [...12 floats...]}]}

``apply_pre(ops, x_nchw)`` / ``apply_post(ops, acc)`` implement them with float32 numpy
semantics (the same as ONNX execution). This module has no FINN dependency.
"""
from __future__ import annotations

import numpy as np

SUPPORTED = ("reshape", "transpose", "flatten", "mul", "add", "sub", "div", "identity",
             "argmax")


class HostOpError(ValueError):
    pass


def _f32(v):
    return np.asarray(v, dtype=np.float32)


def apply_op(op: dict, x: np.ndarray) -> np.ndarray:
    kind = op["op"]
    if kind == "identity":
        return x
    if kind == "reshape":
        return x.reshape(op["shape"])
    if kind == "flatten":
        ax = op.get("axis", 1)
        return x.reshape(int(np.prod(x.shape[:ax])), -1)
    if kind == "transpose":
        return np.transpose(x, op["perm"])
    x = x.astype(np.float32)
    if kind == "mul":
        return (x * _f32(op["value"])).astype(np.float32)
    if kind == "add":
        return (x + _f32(op["value"])).astype(np.float32)
    if kind == "sub":
        return (x - _f32(op["value"])).astype(np.float32)
    if kind == "div":
        return (x / _f32(op["value"])).astype(np.float32)
    if kind == "argmax":
        return np.argmax(x, axis=op.get("axis", -1))
    raise HostOpError(f"unsupported host op {kind!r}; supported: {SUPPORTED}")


def apply_ops(ops: list, x: np.ndarray) -> np.ndarray:
    for op in ops:
        x = apply_op(op, x)
    return x


def apply_pre(host_ops: dict, x_nchw: np.ndarray) -> np.ndarray:
    return apply_ops(host_ops.get("pre", []), x_nchw)


def apply_post(host_ops: dict, acc: np.ndarray) -> np.ndarray:
    return apply_ops(host_ops.get("post", []), acc)


def affine_of(host_ops: dict, n_out: int):
    """(scale[n_out], bias[n_out]) such that post(acc) == acc * scale + bias, when the post
    ops are an elementwise affine map (mul/add/sub/div with broadcastable constants)."""
    scale = np.ones(n_out, np.float64)
    bias = np.zeros(n_out, np.float64)
    for op in host_ops.get("post", []):
        k = op["op"]
        if k in ("identity", "reshape", "flatten"):
            continue
        v = np.broadcast_to(np.asarray(op.get("value", 0), np.float64).reshape(-1)
                            if np.size(op.get("value", 0)) > 1
                            else np.asarray(op.get("value", 0), np.float64).reshape(()), (n_out,))
        if k == "mul":
            scale, bias = scale * v, bias * v
        elif k == "div":
            scale, bias = scale / v, bias / v
        elif k == "add":
            bias = bias + v
        elif k == "sub":
            bias = bias - v
        else:
            return None
    return scale, bias


def invert_post(host_ops: dict, logits: np.ndarray) -> np.ndarray | None:
    """Recover the (real-valued) accumulators from float logits; None if not affine."""
    n = logits.shape[-1]
    ab = affine_of(host_ops, n)
    if ab is None:
        return None
    scale, bias = ab
    return (logits.astype(np.float64) - bias) / scale
