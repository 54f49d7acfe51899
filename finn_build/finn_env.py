"""The ONE place where finn-plus 1.6.1 is made importable/usable without Vivado.

Import this module before anything from ``finn`` (``finn_build/__init__.py`` does it).
Every workaround for a finn-plus environment defect lives here, documented:

1. FINN settings. finn-plus keeps a global ``FINNSettings`` object that normally only
   ``run_finn.py`` (the ``finn`` CLI, which needs Vivado) creates. Without it, code
   generation paths and ``finn.xsi`` raise "Could not find global settings".
   ``finn.util.settings.get_settings()`` rebuilds the settings from the environment
   when ``FINN_BUILD_DIR`` is set, and that also works in spawned worker processes
   (the environment is inherited), so we export ``FINN_BUILD_DIR`` (an absolute
   path) and then call ``get_settings()`` once.

2. ``finn.xsi``. ``finn.builder.build_dataflow_steps`` does ``from finn.xsi import
   SimEngine`` at import time; the lazy ``finn.xsi.__getattr__`` then checks
   ``XILINX_VIVADO`` and raises ``OSError`` when Vivado is absent. We bind
   placeholder objects for the lazily exported names on the ``finn.xsi`` module
   (only if they are not already bound, i.e. only when real XSI is not loaded),
   which raise a clear error if anybody actually tries to run an RTL simulation.
   Python execution ("python" exec mode) never touches them.

3. Thread counts. The builds target 2-core machines; we cap BLAS/OpenMP threads at
   the number of cores unless the user set them.

4. With ``FINN_BUILD_XSI_BACKEND=verilator`` the placeholders of (2) are replaced by
   ``finn_build.rtlsim.xsi_backend`` (FINN's rtlsim interface served by Verilator; its
   ``SimEngine`` has finn-plus' streaming methods: ``stream_input``, ``collect_output``,
   ``create_watchdog``, ``run``...).

Nothing here edits site-packages. ``ensure_finn_env()`` is idempotent.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_DONE = False

XSI_LAZY_NAMES = (
    "SimEngine",
    "locate_glbl",
    "compile_sim_obj",
    "get_simkernel_so",
    "load_sim_obj",
    "reset_rtlsim",
    "close_rtlsim",
    "rtlsim_multi_io",
)
# finn.xsi's own availability checks (they need XILINX_VIVADO): install_verilator_xsi answers
# them for Verilator and uninstall_verilator_xsi puts FINN's back
XSI_CHECK_NAMES = ("is_available", "ensure_available")


class VivadoUnavailableError(RuntimeError):
    """Raised when a code path needs Vivado/XSI (RTL simulation, synthesis)."""


class _NoXSI:
    """Placeholder bound on ``finn.xsi`` for the names that need Vivado's XSI."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise VivadoUnavailableError(
            f"finn.xsi.{self._name} needs Vivado's XSI (RTL simulation); this build "
            "environment has no Vivado (XILINX_VIVADO unset). finn_build only uses "
            "python execution of the dataflow graph."
        )

    def __repr__(self) -> str:  # pragma: no cover
        return f"<finn_build placeholder for finn.xsi.{self._name}>"


def default_finn_build_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"finn_build_tmp_{os.getuid()}"


def ensure_finn_env(finn_build_dir: str | os.PathLike | None = None) -> Path:
    """Prepare the process so that finn-plus can be imported and used without Vivado.

    Returns the FINN_BUILD_DIR in use (where FINN puts generated code/tmp files).
    """
    global _DONE
    if finn_build_dir is not None:
        os.environ["FINN_BUILD_DIR"] = str(Path(finn_build_dir).absolute())
    elif not os.environ.get("FINN_BUILD_DIR"):
        os.environ["FINN_BUILD_DIR"] = str(default_finn_build_dir())
    elif not Path(os.environ["FINN_BUILD_DIR"]).is_absolute():
        os.environ["FINN_BUILD_DIR"] = str(Path(os.environ["FINN_BUILD_DIR"]).absolute())
    bdir = Path(os.environ["FINN_BUILD_DIR"])
    bdir.mkdir(parents=True, exist_ok=True)
    if _DONE:
        return bdir

    ncores = str(os.cpu_count() or 1)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, ncores)
    os.environ.setdefault("NUM_DEFAULT_WORKERS", ncores)

    # (1) settings: rebuilt from FINN_BUILD_DIR by get_settings()
    import finn.util.settings as fsettings

    if fsettings._SETTINGS is None:  # noqa: SLF001
        fsettings.get_settings()

    # (2) finn.xsi placeholders (only if the real XSI is not loaded)
    import finn.xsi as fxsi

    if getattr(fxsi, "_adapter_module", None) is None:
        mod = sys.modules["finn.xsi"]
        for name in XSI_LAZY_NAMES:
            if name not in mod.__dict__:
                setattr(mod, name, _NoXSI(name))
    _DONE = True
    # (3) our RTL layers (finn_build/layers/), registered with FINN's own custom-op registry
    from .layers import register_all

    register_all()
    # (4) optional: FINN's rtlsim interface on Verilator (finn_build.rtlsim.xsi_backend)
    if os.environ.get("FINN_BUILD_XSI_BACKEND", "").lower() == "verilator":
        install_verilator_xsi()
    return bdir


def install_verilator_xsi(force: bool = False) -> bool:
    """(4) Bind ``finn_build.rtlsim.xsi_backend`` (FINN's rtlsim interface on Verilator:
    ``SimEngine`` with finn-plus' streaming methods, ``compile_sim_obj``, ``load_sim_obj``,
    ``reset_rtlsim``, ``rtlsim_multi_io``, ``close_rtlsim``) on ``finn.xsi``. Returns False (and leaves it alone) when the real XSI (Vivado) is loaded,
    unless ``force``."""
    ensure_finn_env()
    import finn.xsi as fxsi

    if getattr(fxsi, "_adapter_module", None) is not None and not force:
        return False
    from .rtlsim import xsi_backend

    mod = sys.modules["finn.xsi"]
    for name in XSI_LAZY_NAMES:
        setattr(mod, name, getattr(xsi_backend, name))
    # FINN's availability checks want Vivado: answered by the backend, FINN's kept aside
    for name in XSI_CHECK_NAMES:
        mod.__dict__.setdefault(f"_finn_{name}", getattr(mod, name, None))
        setattr(mod, name, getattr(xsi_backend, name))
    mod._finn_build_backend = "verilator"  # noqa: SLF001
    return True


def uninstall_verilator_xsi():
    """Back to the "needs Vivado" placeholders of (2)."""
    mod = sys.modules["finn.xsi"]
    for name in XSI_LAZY_NAMES:
        setattr(mod, name, _NoXSI(name))
    for name in XSI_CHECK_NAMES:  # FINN's own checks back
        if mod.__dict__.get(f"_finn_{name}") is not None:
            setattr(mod, name, mod.__dict__.pop(f"_finn_{name}"))
    mod.__dict__.pop("_finn_build_backend", None)


def vivado_available() -> bool:
    return bool(os.environ.get("XILINX_VIVADO"))
