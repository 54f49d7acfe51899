"""Ops FINN infers but that have no RTL on 7-series (FINN offers them as HLS only). They
are still inferred, in the build's order, so that the all-RTL check reports them as HLS
layers (not as unmapped ONNX ops); none is folded, estimated differently or simulated."""
from __future__ import annotations

from . import HWLayer


def _label_select(model):
    from finn.transformation.fpgadataflow.convert_to_hw.label_select import (
        InferLabelSelectLayer,
    )

    return [InferLabelSelectLayer()]


def _pool(model):
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool

    return [InferPool()]


def _concat(model):
    from finn.transformation.fpgadataflow.convert_to_hw.concat import InferConcatLayer

    return [InferConcatLayer()]


LAYERS = (
    HWLayer(family="LabelSelect", infer=_label_select, infer_order=40),  # top-k output
    HWLayer(family="Pool", infer=_pool, infer_order=60),  # max / average pooling
    HWLayer(family="StreamingConcat", infer=_concat, infer_order=80),
    # ElementwiseAdd, ElementwiseMul, ...: inferred by addstreams' inference; the residual
    # adds of two streams become our AddStreams, the other elementwise ops stay FINN's
    HWLayer(family="Elementwise"),
)
