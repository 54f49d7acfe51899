"""How fast can the stitched simulation of a build get without changing FINN's MVU RTL?

A measurement, not a verification: the build's dataflow partition is compiled twice with
Verilator, exactly as the ``rtlsim`` step compiles it,

- ``as_is``: the RTL the rtlsim step simulates (finn-rtllib with our fix-ups);
- ``mvu_core_free``: the same, but the MVU compute core (finn-rtllib ``mvu.sv``, module
  ``mvu``: DSP lanes, SIMD adder trees) replaced by a stub with the same ports and the same
  pipeline depth that outputs zeros. Everything else (weight streamers, AXI wrappers, width
  converters, thresholds, FIFOs, our C++ clock loop) is unchanged and the stream timing is
  the same (the benchmark checks that both take the same number of cycles).

The second figure is an upper bound on the simulation speed of this design with any MVU
model, however cheap. Both libraries run the same random input stream, alternating, several
rounds (this VM's speed drifts between runs; the ratio within one run is what counts).

    python -m benchmarks.bench_rtlsim_ceiling                  # both demo configs
    python -m benchmarks.bench_rtlsim_ceiling --configs build_configs/mlp_w4a4_pynqz1.yaml

Needs a finished build of the config (``make bench-rtlsim`` or ``make build``): it reads
``intermediate/11_estimates.onnx`` (the folded partition the rtlsim step gets).
-> benchmarks/results/rtlsim_ceiling.json (one record per config; other configs' records
are kept with the commit they ran at).
"""
from __future__ import annotations

import re
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

from benchmarks import harness
from finn_build.provenance import git_commit, now

CONFIGS = ["build_configs/mlp_w4a4_pynqz1.yaml", "build_configs/cnn_w4a4_pynqz1.yaml"]
PARTITION = "intermediate/11_estimates.onnx"

# Same parameters and ports as finn-rtllib's ``mvu`` (mvu.sv), same valid pipeline
# (PIPELINE_DEPTH there), no arithmetic: the cheapest core the MVU's AXI wrapper can run.
MVU_CORE_FREE = """module mvu #(
	int unsigned  VERSION = 1, int unsigned  PE, int unsigned  SIMD,
	int unsigned  WEIGHT_WIDTH, int unsigned  ACTIVATION_WIDTH, int unsigned  ACCU_WIDTH,
	bit  SIGNED_ACTIVATIONS = 0, bit  NARROW_WEIGHTS = 0, bit  FORCE_BEHAVIORAL = 0
)(
	input	logic  clk, input	logic  rst, input	logic  en,
	input	logic  last, input	logic  zero,
	input	logic signed [PE-1:0][SIMD-1:0][WEIGHT_WIDTH-1:0]  w,
	input	logic        [SIMD-1:0][ACTIVATION_WIDTH-1:0]  a,
	output	logic  vld,
	output	logic signed [PE-1:0][ACCU_WIDTH-1:0]  p
);
	localparam int unsigned  PIPELINE_DEPTH = 3 + $clog2(SIMD) + (SIMD == 1) + 1;
	logic [PIPELINE_DEPTH-1:0]  L = '0;
	always_ff @(posedge clk) begin
		if(rst)      L <= '0;
		else if(en)  L <= { L[PIPELINE_DEPTH-2:0], last };
	end
	assign	vld = L[PIPELINE_DEPTH-1];
	assign	p = '0;
endmodule : mvu
"""


def free_mvu_core(src_dir: Path) -> None:
    """Replace module ``mvu`` in ``src_dir/mvu.sv`` by ``MVU_CORE_FREE``."""
    f = src_dir / "mvu.sv"
    text = f.read_text()
    m = re.search(r"^module\s+mvu\s*#.*?^endmodule\s*:\s*mvu\b", text, re.S | re.M)
    if not m:
        raise RuntimeError(f"{f}: no 'module mvu ... endmodule : mvu' (finn-rtllib changed?)")
    f.write_text(text[:m.start()] + MVU_CORE_FREE + text[m.end():])


def measure(partition, fpga_part: str, clk_ns: float, work, cycles: int, rounds: int,
            log=print) -> dict:
    """Both variants of the folded partition ``partition`` (.onnx) built under ``work`` and
    timed alternately, ``rounds`` runs each of about ``cycles`` cycles."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import gen_finn_dt_tensor

    from finn_build.finn_env import ensure_finn_env
    from finn_build.rtlsim.flow import Stitched
    from finn_build.rtlsim.hdl import HDLDesign, generate_hdl

    ensure_finn_env()
    model = ModelWrapper(str(partition))
    work = Path(work)
    design = generate_hdl(model, work / "as_is", fpga_part, clk_ns)
    free_src = work / "mvu_core_free" / "src"
    if free_src.parent.exists():
        shutil.rmtree(free_src.parent)
    shutil.copytree(design.src_dir, free_src)
    free_mvu_core(free_src)
    free = HDLDesign(free_src, design.instances, design.files, design.data_files,
                     design.fixups_applied)
    sims = {}
    try:
        for name, d in (("as_is", design), ("mvu_core_free", free)):
            sims[name] = Stitched(model, d)
            log(f"[ceiling] {name}: library built in {sims[name].build['build_seconds']} s")
        iname = model.graph.input[0].name
        np.random.seed(0)  # gen_finn_dt_tensor draws from numpy's global generator
        xs = [gen_finn_dt_tensor(model.get_tensor_datatype(iname), model.get_tensor_shape(iname))
              for _ in range(16)]
        per_pass = sims["as_is"].run(xs)["cycles"]
        xs = xs * max(1, -(-int(cycles) // per_pass))
        speed = {name: [] for name in sims}
        ran = {}
        for k in range(rounds):
            for name, st in sims.items():
                r = st.run(xs)
                ran.setdefault(name, set()).add(r["cycles"])
                speed[name].append(round(r["cycles"] / r["wall_seconds"]))
                log(f"[ceiling] round {k}: {name} {speed[name][-1]:,} cycles/s")
    finally:
        for st in sims.values():
            st.close()
    if len(ran["as_is"] | ran["mvu_core_free"]) != 1:
        raise RuntimeError(f"the variants took different cycle counts {ran}: the stub changed "
                           "the stream timing, the comparison is void")
    med = {name: statistics.median(v) for name, v in speed.items()}
    return {
        "partition": str(partition), "images": len(xs), "cycles_per_run": ran["as_is"].pop(),
        "sim_cycles_per_s": speed, "median_cycles_per_s": med,
        # the time per cycle the MVU cores take: 1 - t(free) / t(as is)
        "mvu_core_share_of_time": round(1 - med["as_is"] / med["mvu_core_free"], 3),
        "speedup_bound": round(med["mvu_core_free"] / med["as_is"], 2),
        "verilator_build_s": {name: st.build["build_seconds"] for name, st in sims.items()},
    }


def main(argv=None) -> int:
    ap = harness.argument_parser(__doc__, out="benchmarks/results/rtlsim_ceiling.json")
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--build", default=None,
                    help="with one config: its finished build (default: "
                         "build/bench_rtlsim/<name>, else the config's output_dir)")
    ap.add_argument("--cycles", type=int, default=2_000_000, help="cycles per timed run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work-dir", default="build/bench_rtlsim_ceiling")
    args = ap.parse_args(argv)

    from finn_build.config import BuildConfigError, load_build_config

    if args.build and len(args.configs) != 1:
        sys.exit("bench-rtlsim-ceiling: --build needs exactly one --configs entry")
    commit = git_commit()  # before this run writes its results
    date = now().split("T")[0]  # a day: these records have always carried one
    command = harness.command_line("benchmarks.bench_rtlsim_ceiling", argv)
    parts = []
    for path in args.configs:
        try:
            cfg = load_build_config(path)
        except BuildConfigError as e:
            sys.exit(f"bench-rtlsim-ceiling: {e}")
        builds = ([Path(args.build)] if args.build else
                  [harness.ROOT / "build/bench_rtlsim" / cfg.name, Path(cfg.out_dir)])
        part = next((b / PARTITION for b in builds if (b / PARTITION).exists()), None)
        if part is None:
            sys.exit(f"bench-rtlsim-ceiling: no {PARTITION} under "
                     f"{' or '.join(map(str, builds))}; build the config first "
                     f"(make bench-rtlsim, or make build CONFIG={path})")
        parts.append((cfg, part))
    new = []
    for cfg, part in parts:
        print(f"[ceiling] {cfg.name}", flush=True)
        new.append({"model": cfg.name, "board": cfg.board,
                    **measure(part, cfg.fpga_part, cfg.clk_period_ns,
                              Path(args.work_dir) / cfg.name, args.cycles, args.rounds,
                              log=lambda m: print(m, flush=True)),
                    "git_commit": commit, "date": date, "command": command})
    # one record per model: records of configs not run now are kept
    records, command = harness.keep_other_records(args.out, new, lambda r: r["model"],
                                                  command)
    results = harness.record_set(records, command, commit=commit, date=date)
    rows = [{"model": r["model"], "as_is_cycles_per_s": r["median_cycles_per_s"]["as_is"],
             "mvu_core_free_cycles_per_s": r["median_cycles_per_s"]["mvu_core_free"],
             "mvu_core_share_of_time": r["mvu_core_share_of_time"],
             "speedup_bound": r["speedup_bound"], "git_commit": r["git_commit"]}
            for r in records]
    harness.publish(
        results, args.out, "RTL simulation speed ceiling", harness.render_generic_table(rows),
        f"From `{command}` ({date}). Stitched Verilator simulation of each build's "
        "partition, as the rtlsim step builds it (`as_is`) and with finn-rtllib's MVU compute "
        "core replaced by a zero-output stub of the same ports and pipeline depth "
        "(`mvu_core_free`; same cycle count checked), median of alternating runs of >= 2M "
        "cycles each. `mvu_core_free` bounds what any MVU model could reach without changing "
        "the rest of finn-rtllib.")
    for r in new:
        print(f"[ceiling] {r['model']}: {r['median_cycles_per_s']} cycles/s, MVU cores "
              f"{r['mvu_core_share_of_time']:.0%} of the time", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
