"""FMPadding: FINN's feature-map padding (finn-rtllib/fmpadding) in front of a padded
convolution. Layout only (inserts zeros, passes every value through)."""
from __future__ import annotations

from . import HWLayer, divisors


def _infer(model):
    from finn.transformation.fpgadataflow.convert_to_hw.fm_padding import InferFMPadding

    return [InferFMPadding()]


def _fold_space(model, node, inst) -> list:
    return [({"SIMD": s}, {}) for s in divisors(inst.get_nodeattr("NumChannels"))]


LAYERS = (HWLayer(family="FMPadding", infer=_infer, infer_order=50,
                  fold_space=_fold_space, fold_attrs=("SIMD",), layout_only=True,
                  rtlsim=True),)
