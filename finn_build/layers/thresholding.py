"""Thresholding: FINN's multi-threshold activation (finn-rtllib/thresholding), the standalone
requantizer behind every MVAU / VVAU of our builds. Inferred first, so that the MVAU / VVAU
inference finds no MultiThreshold to absorb (noActivation=1, what our VVAU_rtl implements).
LUT estimate: ``lut_fits.thresholding_lut`` (finn-plus' was -45% .. +77% off yosys)."""
from __future__ import annotations

from . import HWLayer, divisors


def _infer(model):
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )

    return [InferThresholdingLayer()]


def _fold_space(model, node, inst) -> list:
    return [({"PE": p}, {}) for p in divisors(inst.get_nodeattr("NumChannels"))]


def correct_estimate(model, node, inst, finn: dict, dsp_block: str):
    from .lut_fits import thresholding_lut

    est = dict(finn)
    if node.op_type != "Thresholding_rtl":
        return est, []
    est["lut"] = float(round(thresholding_lut(model, node, inst)))
    return est, [f"lut: {est['lut']:.0f} from the RTL thresholding's structure (lut_fits; "
                 f"finn-plus: {finn['lut']:.0f})"]


LAYERS = (HWLayer(family="Thresholding", infer=_infer, infer_order=10,
                  fold_space=_fold_space, fold_attrs=("PE",),
                  correct_estimate=correct_estimate, rtlsim=True),)
