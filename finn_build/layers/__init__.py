"""Our hardware layers: FINN HW ops whose RTL is our own SystemVerilog (``finn_build/rtl/``),
for what FINN offers only as HLS (or only on Versal) on 7-series parts.

Each layer is one module here: a class ``<Op>_rtl(<FINN's HW op>, RTLBackend)`` (python
execution inherited from FINN's op, ``generate_hdl``, ``get_rtl_file_list``,
``code_generation_ipi``, expected cycles, resource estimate) decorated with FINN's own
``finn.custom_op.fpgadataflow.rtl.register_custom_op``, so ``getCustomOp``,
``SpecializeLayers``, ``PrepareIP`` and the Vivado stitching find it as they find FINN's own
RTL layers. ``register_all()`` (called by ``finn_env.ensure_finn_env``) imports the modules
listed in ``LAYER_MODULES``; site-packages is never edited.
"""
from __future__ import annotations

import importlib
from pathlib import Path

RTL_DIR = Path(__file__).resolve().parent.parent / "rtl"  # our SystemVerilog

# one entry per layer module (finn_build.layers.<name>)
LAYER_MODULES: tuple[str, ...] = (
    "duplicatestreams", "addstreams", "globalaccpool",  # stream fork, residual add, global pool
    "vvau",  # depthwise convolution (replaces finn-plus' Versal-only VVAU_rtl)
)

_REGISTERED = False


def register_all() -> None:
    """Import every layer module once (their decorators register the classes with FINN)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    for name in LAYER_MODULES:
        importlib.import_module(f"{__name__}.{name}")
