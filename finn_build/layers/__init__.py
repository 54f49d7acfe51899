"""Hardware layers: everything the build knows about one FINN HW op family, one module each.

Each module here declares its layer(s) in ``LAYERS`` (``HWLayer`` below): how the layer is
inferred, which folding it offers, how its resource estimate is corrected, whether the RTL
simulation supports it, extra HDL around its core, extra report columns. The build's central
places (``steps.step_convert_to_hw``, ``folding``, ``estimates``, ``transforms``,
``rtlsim.hdl``, ``report``) read this registry and know no layer by name, so a new layer is
one module here + its SystemVerilog (``finn_build/rtl/``) + one line in ``LAYER_MODULES``.

Our own RTL layers (``duplicatestreams``, ``addstreams``, ``globalaccpool``, ``vvau``) also
define a class ``<Op>_rtl(<FINN's HW op>, RTLBackend)`` decorated with FINN's own
``finn.custom_op.fpgadataflow.rtl.register_custom_op``, so ``getCustomOp``,
``SpecializeLayers``, ``PrepareIP`` and the Vivado stitching find it as they find FINN's own
RTL layers. ``register_all()`` (called by ``finn_env.ensure_finn_env``) imports the modules
listed in ``LAYER_MODULES``; site-packages is never edited. The declarations of FINN's own
layers (``mvau``, ``thresholding``, ...) import FINN lazily, inside their functions.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

RTL_DIR = Path(__file__).resolve().parent.parent / "rtl"  # our SystemVerilog

# one entry per layer module (finn_build.layers.<name>); the order is that of
# rtlsim.hdl.SUPPORTED and of the registry (ties in infer_order never happen: tested)
LAYER_MODULES: tuple[str, ...] = (
    "mvau", "thresholding", "swg", "fmpadding", "dwc", "fifo",  # FINN's own RTL layers
    "duplicatestreams", "addstreams", "globalaccpool",  # stream fork, residual add, global pool
    "vvau",  # depthwise convolution (replaces finn-plus' Versal-only VVAU_rtl)
    "hls_only",  # inferred by FINN, no RTL on 7-series: the all-RTL check reports them
)


@dataclass(frozen=True)
class HWLayer:
    """What the build needs to know about one FINN HW op family.

    ``family`` matches every op type starting with it ("MVAU": MVAU, MVAU_rtl, MVAU_hls;
    "Elementwise": ElementwiseAdd, ElementwiseMul_hls, ...); the longest match wins."""

    family: str
    # model -> the Transformations creating its nodes, run by step_convert_to_hw in
    # infer_order (a model argument: a filter may depend on the graph); None: inserted by
    # a later step (DWC, FIFO) or created by another layer's inference
    infer: Optional[Callable] = None
    infer_order: int = 0
    # (model, node, inst) -> [(attrs, {other node name: attrs})]: the legal folding
    # configurations; the second item folds another node together with this one
    fold_space: Optional[Callable] = None
    fold_attrs: tuple = ()  # the attributes fold_space may set (saved and restored)
    # (model, node, inst, finn_res, dsp_block) -> (est, notes): correct FINN's estimate
    correct_estimate: Optional[Callable] = None
    layout_only: bool = False  # passes values through unchanged (SWG, padding, DWC, FIFO)
    rtlsim: bool = False  # its *_rtl op is supported by finn_build.rtlsim
    # (inst, node, gen_dir, src_dir, module, ports, copy_lib) -> (module, ports, files):
    # extra HDL around the generated core (MVAU: memstream weight streamer hierarchy)
    hdl_hook: Optional[Callable] = None
    report_columns: Optional[Callable] = None  # inst -> {column: value} for node_table


def register_all() -> None:
    """Import every layer module (their decorators register our classes with FINN)."""
    for name in LAYER_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def hw_layers() -> tuple[HWLayer, ...]:
    """Every declared layer, in ``LAYER_MODULES`` order (FINN must be importable)."""
    return tuple(layer for name in LAYER_MODULES
                 for layer in importlib.import_module(f"{__name__}.{name}").LAYERS)


def layer_of(op_type: str) -> HWLayer | None:
    """The declaration of an op type (longest matching family), None for a non-HW op."""
    hits = [layer for layer in hw_layers() if op_type.startswith(layer.family)]
    return max(hits, key=lambda layer: len(layer.family), default=None)


def divisors(n: int) -> list[int]:
    """Folding factors of a dimension (PE / SIMD must divide it)."""
    return [d for d in range(1, int(n) + 1) if n % d == 0]
