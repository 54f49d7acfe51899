"""StreamingDataWidthConverter: FINN's stream width converter (finn-rtllib/dwc), inserted
between layers of different stream widths by the ``insert_dwc_fifo`` step (not inferred, not
folded). Layout only.
LUT estimate: ``lut_fits.dwc_lut`` (finn-plus' was -98% .. +580% off yosys)."""
from __future__ import annotations

from . import HWLayer
from .lut_fits import dwc_lut, replacing_lut


correct_estimate = replacing_lut("StreamingDataWidthConverter_rtl", dwc_lut, "RTL width converter")


LAYERS = (HWLayer(family="StreamingDataWidthConverter", correct_estimate=correct_estimate,
                  layout_only=True, rtlsim=True),)
