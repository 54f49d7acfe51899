"""Thresholding: FINN's multi-threshold activation (finn-rtllib/thresholding), the standalone
requantizer behind every MVAU / VVAU of our builds. Inferred first, so that the MVAU / VVAU
inference finds no MultiThreshold to absorb (noActivation=1, what our VVAU_rtl implements).
LUT estimate: ``lut_fits.thresholding_lut`` (finn-plus' was -45% .. +77% off yosys)."""
from __future__ import annotations

from . import HWLayer, divisors
from .lut_fits import thresholding_lut, replacing_lut


def _infer(model):
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )

    return [InferThresholdingLayer()]


def _fold_space(model, node, inst) -> list:
    return [({"PE": p}, {}) for p in divisors(inst.get_nodeattr("NumChannels"))]


correct_estimate = replacing_lut("Thresholding_rtl", thresholding_lut, "RTL thresholding")


LAYERS = (HWLayer(family="Thresholding", infer=_infer, infer_order=10,
                  fold_space=_fold_space, fold_attrs=("PE",),
                  correct_estimate=correct_estimate, rtlsim=True),)
