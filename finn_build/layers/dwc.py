"""StreamingDataWidthConverter: FINN's stream width converter (finn-rtllib/dwc), inserted
between layers of different stream widths by the ``insert_dwc_fifo`` step (not inferred, not
folded). Layout only."""
from __future__ import annotations

from . import HWLayer

LAYERS = (HWLayer(family="StreamingDataWidthConverter", layout_only=True, rtlsim=True),)
