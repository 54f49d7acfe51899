"""Multi-task quantized medical image classifiers (Brevitas QAT -> QONNX)."""
from . import _compat  # noqa: F401  (must run before any Brevitas layer is used)
