"""Our own graph transformations and analyses (on top of finn-plus / qonnx).

- ``split_host_ops``: which leading/trailing nodes stay on the host (layout ops in front,
  float scale/bias behind), and the integer accumulator tensor between them.
- ``LowerToRTLDatatypes``: make every MVAU fit finn-plus' RTL MVU on the target DSP:
  weights must be signed, >= 2 bit and narrow-range on DSP48E1 (e.g. INT4 in [-7, 7]);
  activations >= 2 bit. Bipolar weights {-1,+1} become narrow INT2, 1-bit unsigned
  activations {0,1} become UINT2 (the producing threshold node gets unreachable extra
  thresholds, so values are unchanged). Widening a datatype never changes a value.
- ``hw_backend_table`` / ``non_rtl_nodes``: the all-RTL check.
"""
from __future__ import annotations

import numpy as np
from onnx import NodeProto
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation

HW_DOMAIN = "finn.custom_op.fpgadataflow"

PRE_HOST_OPS = {"Reshape", "Transpose", "Flatten", "Identity"}
POST_HOST_OPS = {"Mul", "Add", "Sub", "Div", "Identity", "Reshape", "Flatten", "ArgMax"}


class HostOpsError(ValueError):
    pass


def _const(model: ModelWrapper, name: str):
    v = model.get_initializer(name)
    return None if v is None else np.asarray(v)


def node_to_host_op(model: ModelWrapper, node: NodeProto, data_input: str) -> dict:
    """One ONNX node -> host op record (exact float32 values for constants)."""
    op = node.op_type
    if op == "Identity":
        return {"op": "identity"}
    if op == "Reshape":
        shape = _const(model, node.input[1])
        if shape is None:
            raise HostOpsError(f"{node.name}: Reshape with a dynamic shape cannot go to the host")
        # resolve -1/0 against the actual output shape
        oshape = model.get_tensor_shape(node.output[0])
        return {"op": "reshape", "shape": [int(s) for s in (oshape or shape)]}
    if op == "Flatten":
        ax = 1
        for a in node.attribute:
            if a.name == "axis":
                ax = a.i
        return {"op": "flatten", "axis": ax}
    if op == "Transpose":
        perm = [list(a.ints) for a in node.attribute if a.name == "perm"][0]
        return {"op": "transpose", "perm": [int(p) for p in perm]}
    if op == "ArgMax":
        ax = [a.i for a in node.attribute if a.name == "axis"]
        return {"op": "argmax", "axis": ax[0] if ax else 0}
    if op in ("Mul", "Add", "Sub", "Div"):
        other = [i for i in node.input if i != data_input]
        if len(other) != 1 or node.input[0] != data_input:
            raise HostOpsError(f"{node.name}: {op} must be (data, constant) to go to the host")
        c = _const(model, other[0])
        if c is None:
            raise HostOpsError(f"{node.name}: {op} with a non-constant operand")
        c = c.astype(np.float32)
        return {"op": op.lower(), "value": c.tolist(), "shape": list(c.shape)}
    raise HostOpsError(f"{node.name}: op {op} is not a supported host op")


def split_host_ops(model: ModelWrapper, stop_at=None) -> dict:
    """Walk in from the global input / output over host-able ops.

    Returns {"pre": [op...], "pre_nodes": [...], "post": [...], "post_nodes": [...],
    "acc_tensor": name of the tensor the post ops consume, "dataflow_input": name of the
    tensor the pre ops produce}. ``stop_at(node) -> bool`` ends a walk (e.g. at the
    StreamingDataflowPartition node)."""
    stop_at = stop_at or (lambda n: False)
    pre, pre_nodes = [], []
    t = model.graph.input[0].name
    while True:
        consumers = model.find_consumers(t) or []
        if len(consumers) != 1:
            break
        n = consumers[0]
        if stop_at(n) or n.op_type not in PRE_HOST_OPS:
            break
        pre.append(node_to_host_op(model, n, t))
        pre_nodes.append(n.name)
        t = n.output[0]
    df_in = t
    post, post_nodes = [], []
    t = model.graph.output[0].name
    while True:
        n = model.find_producer(t)
        if n is None or stop_at(n) or n.op_type not in POST_HOST_OPS:
            break
        data_in = n.input[0]
        try:
            rec = node_to_host_op(model, n, data_in)
        except HostOpsError:
            break
        post.insert(0, rec)
        post_nodes.insert(0, n.name)
        t = data_in
    return {"pre": pre, "pre_nodes": pre_nodes, "post": post, "post_nodes": post_nodes,
            "acc_tensor": t, "dataflow_input": df_in}


# ---------------------------------------------------------------------------- RTL datatypes

def _is_mvau(node) -> bool:
    from .layers.mvau import FAMILY

    return node.op_type in (FAMILY, FAMILY + "_rtl", FAMILY + "_hls")


def _layout_only(node) -> bool:
    """Passes values through unchanged (``HWLayer.layout_only``: SWG, padding, DWC, FIFO)."""
    from .layers import layer_of

    layer = layer_of(node.op_type)
    return layer is not None and layer.layout_only


def _smallest_signed_int(lo: float, hi: float, narrow: bool) -> DataType:
    for b in range(2, 33):
        dt = DataType[f"INT{b}"]
        dmin = dt.min() + (1 if narrow else 0)
        if lo >= dmin and hi <= dt.max():
            return dt
    raise ValueError(f"weights [{lo}, {hi}] do not fit 32 bit")


class LowerToRTLDatatypes(Transformation):
    """See module docstring. ``narrow_weights``: require narrow-range weights (DSP48E1).

    Records every change in ``self.changes`` (list of dicts) for the build report."""

    def __init__(self, narrow_weights: bool = True):
        super().__init__()
        self.narrow_weights = narrow_weights
        self.changes: list[dict] = []

    def apply(self, model: ModelWrapper):
        changed = False
        for node in model.graph.node:
            if not _is_mvau(node):
                continue
            inst = getCustomOp(node)
            # --- weights
            w = model.get_initializer(node.input[1])
            if w is not None and not inst.get_nodeattr("binaryXnorMode"):
                wdt = model.get_tensor_datatype(node.input[1])
                wmin, wmax = float(np.min(w)), float(np.max(w))
                if wdt == DataType["BIPOLAR"]:
                    vals = set(np.unique(w).tolist())
                    if not vals <= {-1.0, 1.0}:
                        raise ValueError(f"{node.name}: BIPOLAR weights hold {sorted(vals)}")
                    new = DataType["INT2"]
                else:
                    need_new = (not wdt.signed() or wdt.bitwidth() < 2
                                or (self.narrow_weights and wmin == wdt.min()))
                    new = (_smallest_signed_int(min(wmin, -1), max(wmax, 1), self.narrow_weights)
                           if need_new else None)
                    if new is not None and new.bitwidth() < wdt.bitwidth() and wdt.signed():
                        new = DataType[f"INT{wdt.bitwidth() + 1}"]
                if new is not None and new != wdt:
                    model.set_tensor_datatype(node.input[1], new)
                    inst.set_nodeattr("weightDataType", new.name)
                    self.changes.append({"node": node.name, "what": "weights",
                                         "from": wdt.name, "to": new.name,
                                         "range": [wmin, wmax]})
                    changed = True
            # --- activations (input 0)
            idt = model.get_tensor_datatype(node.input[0])
            if idt.bitwidth() < 2 and idt.is_integer():
                if idt.signed():
                    raise ValueError(
                        f"{node.name}: {idt.name} (bipolar) activations have no RTL lowering "
                        "on this target: the RTL MVU needs >= 2-bit activations and a "
                        "bipolar {-1,+1} stream would have to be re-encoded upstream")
                self._widen_unsigned_1bit(model, node)
                changed = True
        return model, changed

    def _widen_unsigned_1bit(self, model: ModelWrapper, mvau: NodeProto):
        """{0,1} -> UINT2: widen the producing threshold node (walking back over
        layout-only nodes: SWG, padding, DWC, FIFO)."""
        t = mvau.input[0]
        path = []
        prod = model.find_producer(t)
        while prod is not None and _layout_only(prod):
            path.append(prod)
            prod = model.find_producer(prod.input[0])
        if prod is None or prod.op_type.split("_")[0] not in ("Thresholding", "MultiThreshold"):
            raise ValueError(f"{mvau.name}: 1-bit input not produced by a threshold node")
        inst = getCustomOp(prod)
        thr = model.get_initializer(prod.input[1])
        in_dt = model.get_tensor_datatype(prod.input[0])
        steps = thr.shape[1]
        if steps < 3:
            unreachable = float(in_dt.max()) + 1 if in_dt.is_integer() else np.finfo(np.float32).max
            pad = np.full((thr.shape[0], 3 - steps), unreachable, dtype=np.float32)
            model.set_initializer(prod.input[1], np.concatenate([thr, pad], axis=1))
        if prod.op_type == "MultiThreshold":
            inst.set_nodeattr("out_dtype", "UINT2")
        else:
            inst.set_nodeattr("outputDataType", "UINT2")
            inst.set_nodeattr("numSteps", 3)
        model.set_tensor_datatype(prod.output[0], DataType["UINT2"])
        for n in path:
            model.set_tensor_datatype(n.output[0], DataType["UINT2"])
            ni = getCustomOp(n)
            for a in ("inputDataType", "outputDataType", "dataType"):
                if a in ni.get_nodeattr_types():
                    ni.set_nodeattr(a, "UINT2")
        getCustomOp(mvau).set_nodeattr("inputDataType", "UINT2")
        self.changes.append({"node": prod.name, "what": "activations", "from": "BINARY/UINT1",
                             "to": "UINT2", "thresholds_padded_to": 3})


# ---------------------------------------------------------------------------- backends

def backend_of(node) -> str:
    if not node.domain.startswith(HW_DOMAIN):
        return "none"
    if node.op_type.endswith("_rtl") or node.domain.endswith(".rtl"):
        return "rtl"
    if node.op_type.endswith("_hls") or node.domain.endswith(".hls"):
        return "hls"
    return "unspecialized"


def hw_backend_table(model: ModelWrapper) -> list[dict]:
    return [{"name": n.name, "op_type": n.op_type, "backend": backend_of(n)}
            for n in model.graph.node]


def non_rtl_nodes(model: ModelWrapper) -> list[dict]:
    return [r for r in hw_backend_table(model) if r["backend"] != "rtl"]


# ---------------------------------------------------------------------------- export fix-ups




# ---------------------------------------------------------------------------- branches

def has_branches(model: ModelWrapper) -> bool:
    """A graph the linear streamlining does not finish: a tensor read by more than one node
    (a fork), an Add of two computed tensors (a join), or a GlobalAveragePool. The MLP / CNN
    of the model zoo have none of these (a chain ending in a flatten), so their builds never
    run ``StreamlineBranches`` and stay as they were."""
    seen = set()
    for n in model.graph.node:
        if n.op_type == "GlobalAveragePool":
            return True
        if (n.op_type == "Add" and len(n.input) == 2
                and all(model.get_initializer(i) is None for i in n.input)):
            return True
        for i in n.input:
            if model.get_initializer(i) is not None:
                continue
            if i in seen:
                return True
            seen.add(i)
    return False


class StreamlineBranches(Transformation):
    """Streamlining of forks and residual joins, after finn-plus' ``Streamline`` and the
    conv lowering (what finn-examples' MobileNet-v1 / ResNet-50 custom steps do, for our
    graphs), repeated until the graph no longer changes (at most ``rounds`` times):

    - scale / bias and layout ops in front of a fork are copied into every branch
      (``MoveLinearPastFork``, ``MoveTransposePastFork``), where the branch absorbs them;
    - equal scales on both inputs of an Add move behind it (``MoveLinearPastEltwiseAdd``:
      the two inputs must share ONE quantizer in Brevitas, then the add is integer), as do
      equal transposes (``MoveTransposePastJoinAdd``);
    - transposes are absorbed into thresholds / cancelled (NHWC everywhere);
    - ``GlobalAveragePool`` on an integer tensor becomes finn-plus' ``GlobalAccPool`` (an
      integer sum) and a scalar Mul(1/(H*W)), which ``Streamline`` then moves past the flatten
      and the next MatMul into its thresholds (or, at the end, into the host's float scale);
    - ``Streamline`` again (absorbs what the moves exposed);
    - finally ``RoundAndClipThresholds`` (exact on integer inputs; see ``apply``)."""

    def __init__(self, rounds: int = 4):
        super().__init__()
        self.rounds = rounds

    def apply(self, model: ModelWrapper):
        import finn.transformation.streamline.absorb as absorb
        import finn.transformation.streamline.reorder as reorder
        from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import (
            InferGlobalAccPoolLayer,
        )
        from finn.transformation.streamline import Streamline
        from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
        from qonnx.transformation.infer_data_layouts import InferDataLayouts
        from qonnx.transformation.infer_datatypes import InferDataTypes

        passes = [reorder.MoveLinearPastFork(), reorder.MoveTransposePastFork(),
                  absorb.AbsorbConsecutiveTransposes(),
                  absorb.AbsorbTransposeIntoMultiThreshold(),
                  reorder.MoveLinearPastEltwiseAdd(), _SamePermTransposePastJoinAdd(),
                  absorb.AbsorbTransposeIntoMultiThreshold(),
                  absorb.AbsorbConsecutiveTransposes(), InferDataLayouts(),
                  InferGlobalAccPoolLayer(), absorb.AbsorbConsecutiveTransposes(),
                  Streamline()]
        for _ in range(self.rounds):
            before = model.model.graph.SerializeToString()
            for t in passes:
                model = model.transform(t)
                model = model.transform(InferDataLayouts())
            if model.model.graph.SerializeToString() == before:
                break
        # thresholds of a signed requantizer on an unsigned tensor (the skip path) lie below
        # the input's range; on an integer input rounding them up and clipping them to the
        # input range changes no output, and FINN's Thresholding needs them >= 0 there
        model = model.transform(RoundAndClipThresholds())
        model = model.transform(InferDataTypes())
        return model, False


def _SamePermTransposePastJoinAdd():  # noqa: N802  (a transformation instance)
    """finn-plus' ``MoveTransposePastJoinAdd`` with the permutation check it means to make
    (its ``are_producers_identical`` evaluates ``False`` without returning it, so two
    different transposes would be merged)."""
    from finn.transformation.streamline.reorder import MoveTransposePastJoinAdd
    from qonnx.util.basic import get_by_name

    class _Move(MoveTransposePastJoinAdd):
        def are_producers_identical(self, model, producers):
            if not super().are_producers_identical(model, producers):
                return False
            perms = {tuple(get_by_name(p.attribute, "perm").ints) for p in producers}
            return len(perms) == 1

    return _Move()
