"""FMPadding: FINN's feature-map padding (finn-rtllib/fmpadding) in front of a padded
convolution. Layout only (inserts zeros, passes every value through).
LUT estimate: ``lut_fits.fmpadding_lut`` (finn-plus estimates 0)."""
from __future__ import annotations

from . import HWLayer, divisors
from .lut_fits import fmpadding_lut, replacing_lut


def _infer(model):
    from finn.transformation.fpgadataflow.convert_to_hw.fm_padding import InferFMPadding

    return [InferFMPadding()]


def _fold_space(model, node, inst) -> list:
    return [({"SIMD": s}, {}) for s in divisors(inst.get_nodeattr("NumChannels"))]


correct_estimate = replacing_lut("FMPadding_rtl", fmpadding_lut, "RTL padding")


LAYERS = (HWLayer(family="FMPadding", infer=_infer, infer_order=50,
                  fold_space=_fold_space, fold_attrs=("SIMD",),
                  correct_estimate=correct_estimate, layout_only=True, rtlsim=True),)
