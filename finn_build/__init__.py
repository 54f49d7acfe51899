"""FINN compile pipeline: Brevitas/QONNX multi-task classifiers -> all-RTL FINN dataflow
for Zynq (Pynq-Z1/Z2 first; ZCU104, KV260), with all-output verification and estimates.

Public API::

    from finn_build import load_build_config, run_build
    cfg = load_build_config("build_configs/mlp_w4a4_pynqz1.yaml")
    report = run_build(cfg)            # or run_build(cfg, from_step="set_folding")

CLI: ``python -m finn_build --config build_configs/X.yaml [--from-step NAME]``.
``finn_build.finn_env`` (imported first, here) holds every finn-plus workaround.
"""
from .finn_env import ensure_finn_env  # noqa: F401  (must come before any finn import)
from .config import BuildConfig, BuildConfigError, load_build_config, config_from_dict  # noqa: F401,E501
from .boards import BOARDS, get_board  # noqa: F401


def run_build(cfg, **kw):
    from .pipeline import run_build as _run

    return _run(cfg, **kw)


def step_names():
    from .steps import STEP_NAMES

    return list(STEP_NAMES)
