"""Host-side operations around the dataflow accelerator (numpy only; runs on the board).

The dataflow partition consumes the raw UINT8 pixels (in its own layout) and produces the
integer accumulators of the last layer (all tasks' logits before scale/bias). The float ops
around it are recorded by the build (``host_ops.json``, carried in the deploy metadata) as a
JSON list with the exact float32 values::

    {"pre":  [{"op": "transpose", "perm": [0, 2, 3, 1]}],          # NCHW -> NHWC
     "post": [{"op": "mul", "value": [[...12 floats...]]},
              {"op": "add", "value": [...12 floats...]}]}

``apply_pre(ops, x_nchw)`` / ``apply_post(ops, acc)`` implement them with float32 numpy
semantics (the same as ONNX execution). This is the one implementation: ``finn_build.host_ops``
(the build and its verification) imports it from here.
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


def check_supported(host_ops: dict) -> None:
    """Raise ``HostOpError`` naming the first op this runtime cannot apply."""
    for where in ("pre", "post"):
        for op in host_ops.get(where, []):
            if op.get("op") not in SUPPORTED:
                raise HostOpError(f"unsupported {where} host op {op.get('op')!r}; "
                                  f"supported: {SUPPORTED}")
