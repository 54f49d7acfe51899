"""Host-side operations: what stays on the CPU around the dataflow accelerator.

The dataflow partition consumes the raw UINT8 pixels (in its own layout) and produces the
integer accumulators of the last layer (all tasks' logits before scale/bias). The float ops
around it are recorded in the build metadata (``host_ops.json``) with the exact float32 values.

``apply_pre`` / ``apply_post`` / ``apply_op(s)`` are the board runtime's own implementation
(``deploy/pynq/host_ops.py``, numpy only), re-exported here so that the build, its
verification and the board apply the very same code. ``affine_of`` / ``invert_post`` (used by
the verification only) live here. This module has no FINN dependency.
"""
from __future__ import annotations

import numpy as np

from deploy.pynq.host_ops import (  # noqa: F401  (re-exported)
    SUPPORTED,
    HostOpError,
    apply_op,
    apply_ops,
    apply_post,
    apply_pre,
)


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
