"""StreamingFIFO: FINN's stream FIFO (finn-rtllib/fifo), inserted between layers by the
``insert_dwc_fifo`` step and sized by ``set_fifo_depths`` (not inferred, not folded).
Layout only."""
from __future__ import annotations

from . import HWLayer

LAYERS = (HWLayer(family="StreamingFIFO", layout_only=True, rtlsim=True),)
