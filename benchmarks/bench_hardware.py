"""Hardware benchmark: estimated FPS / latency / resources of the all-RTL builds, one record
per model x bits x board, written to benchmarks/results/hardware.json.

    python -m benchmarks.bench_hardware                       # defaults below
    python -m benchmarks.bench_hardware --models mlp cnn --bits 4x4 2x2 \
        --boards Pynq-Z1 Pynq-Z2 ZCU104 KV260 --clock 100 --images-per-task 32

Each model x bits is built and verified once in full (all stages, real test images) on the
first board; the other boards reuse that build up to the dataflow partition (board
independent) and re-run specialization, folding ("max that fits"), the folded-model
verification and the estimates (``--from-step minimize_datatypes``).

Models are the zoo architectures (brevitas_models.build_model) with BatchNorm calibrated on
real training images (no trained checkpoint needed for hardware figures); --checkpoint-dir
may point at trained runs instead (<dir>/<model>_mt_w<W>a<A>/best.pt, the runs of
`make bench-accuracy`; `make bench-hardware` uses them).

    python -m benchmarks.bench_hardware --builds build/bench_rtlsim/mnv2_w4a4_pynqz1 --update

collects the records of finished builds made as their build configs say (e.g. bench-rtlsim's
MobileNetV2-lite builds, whose folding is the config's own target) instead of building.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from benchmarks import harness
from finn_build.provenance import git_commit

TASKS = ["pneumoniamnist", "breastmnist", "bloodmnist"]
MODELS = {
    # the lead's zoo defaults (brevitas_models.config.ModelSection)
    "mlp": {"arch": "mlp", "in_channels": 1, "hidden": [64, 64], "head_hidden": 16},
    "cnn": {"arch": "cnn", "in_channels": 3, "head_hidden": 16,
            "convs": [[16, 3, 1, 1], [32, 3, 2, 1], [32, 3, 2, 1], [64, 3, 1, 0], [64, 3, 1, 0],
                      [128, 3, 1, 0]]},
}
TARGETS = {("mlp", "Pynq-Z1"): 500_000, ("cnn", "Pynq-Z1"): 20_000,
           ("mobilenetv2_lite", "Pynq-Z1"): 1_000, ("mobilenetv2_lite", "Pynq-Z2"): 1_000}


HW_COLUMNS = ["model", "w_bits", "a_bits", "board", "est_fps", "est_latency_us", "est_lut",
              "est_bram18", "est_dsp", "part_lut", "part_bram18", "part_dsp", "fits", "all_rtl",
              "mismatches", "meets_target", "build_seconds"]


def _record(rep, model, w, a, board, secs):
    from finn_build.boards import get_board

    b = get_board(board)
    e = rep.get("estimates") or {}
    v = rep.get("verification") or {}
    return {"model": model, "w_bits": w, "a_bits": a, "board": board,
            "clock_mhz": rep.get("clock_mhz"),
            "est_fps": round(e.get("est_fps", 0), 1) if e else None,
            "est_latency_us": round(e.get("est_latency_us", 0), 3) if e else None,
            "est_lut": e.get("est_lut"), "est_bram18": e.get("est_bram18"),
            "est_dsp": e.get("est_dsp"),
            "finn_lut": e.get("finn_lut"), "finn_dsp": e.get("finn_dsp"),
            "part_lut": b.lut, "part_bram18": b.bram18, "part_dsp": b.dsp,
            "all_rtl": rep.get("all_rtl"), "fits": e.get("fits"),
            "verified_stages": v.get("verified_stages"), "mismatches": v.get("mismatches"),
            "bottleneck": e.get("bottleneck"),
            "target_fps": TARGETS.get((model, board)),
            "meets_target": (None if (model, board) not in TARGETS or not e
                             else e.get("est_fps", 0) >= TARGETS[(model, board)]),
            "status": rep.get("status"), "error": rep.get("error"),
            "build_seconds": round(secs, 1)}


def main(argv=None) -> int:
    ap = harness.argument_parser(__doc__, out="benchmarks/results/hardware.json",
                                 update="models x bits x boards")
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn"],
                    choices=sorted(MODELS))
    ap.add_argument("--bits", nargs="+", default=["8x8", "4x4", "2x2", "1x1"], help="WxA, e.g. 4x4 1x1")
    ap.add_argument("--boards", nargs="+", default=["Pynq-Z1", "Pynq-Z2", "ZCU104", "KV260"])
    ap.add_argument("--clock", type=float, default=100.0)
    ap.add_argument("--images-per-task", type=int, default=32)
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--work-dir", default="build/bench_hardware")
    ap.add_argument("--builds", nargs="+", metavar="BUILD_DIR",
                    help="do not build: collect the records of these finished builds")
    args = ap.parse_args(argv)
    if args.builds:
        args.models = []  # the grid is skipped

    from finn_build.config import config_from_dict
    from finn_build.pipeline import run_build

    work = Path(args.work_dir)
    records = []
    t_all = time.time()
    for mname in args.models:
        for bits in args.bits:
            w, a = (int(x) for x in bits.lower().split("x"))
            first_dir = None
            for bi, board in enumerate(args.boards):
                name = f"{mname}_w{w}a{a}_{board.lower().replace('-', '')}"
                out_dir = work / name
                ck = (Path(args.checkpoint_dir) / f"{mname}_mt_w{w}a{a}" / "best.pt"
                      if args.checkpoint_dir else None)
                if ck is not None and not ck.is_file():
                    raise SystemExit(f"bench_hardware: {ck} not found; train it first "
                                     "(make bench-accuracy) or drop --checkpoint-dir")
                src = ({"checkpoint": str(ck)} if ck else
                       {"untrained": {"model": {**MODELS[mname], "w_bits": w, "a_bits": a},
                                      "tasks": TASKS, "input_size": 28, "seed": 0}})
                cfg = config_from_dict({
                    "name": name, "model": src, "board": board, "clock_mhz": args.clock,
                    "folding": {"target_fps": "max"},
                    "verify": {"images_per_task": args.images_per_task},
                    # estimates only: FIFO sizing and measured throughput are bench-rtlsim's
                    "fifo_depths": "minimal",
                    "output_dir": str(out_dir)})
                t = time.time()
                from_step = None
                if first_dir is not None:
                    if out_dir.exists():
                        shutil.rmtree(out_dir)
                    shutil.copytree(first_dir, out_dir)
                    # the first board's report must not stand in for a failed resume
                    (out_dir / "build_report.json").unlink(missing_ok=True)
                    # the RTL weight datatypes depend on the board's DSP block
                    from_step = "minimize_datatypes"
                print(f"[bench] {name} ({'from ' + from_step if from_step else 'full build'})",
                      flush=True)
                try:
                    rep = run_build(cfg, from_step=from_step, echo=lambda *a, **k: None)
                except Exception as e:  # record the failure, keep going
                    rp = out_dir / "build_report.json"
                    rep = json.loads(rp.read_text()) if rp.exists() else {
                        "status": "failed", "error": str(e)}
                secs = time.time() - t
                if from_step is not None and first_dir is not None:
                    # the reused steps cost the first board's time for them
                    st = json.loads((first_dir / "state.json").read_text())["step_times"]
                    idx = rep.get("config") and list(st).index(from_step)
                    secs += sum(list(st.values())[:idx or 0])
                if bi == 0 and rep.get("host_ops"):
                    first_dir = out_dir
                r = _record(rep, mname, w, a, board, secs)
                r["git_commit"] = git_commit()
                records.append(r)
                print(f"[bench]   fps={r['est_fps']} lut={r['est_lut']} bram18={r['est_bram18']}"
                      f" dsp={r['est_dsp']} all_rtl={r['all_rtl']} mismatches={r['mismatches']}"
                      f" ({r['build_seconds']}s)", flush=True)
    for d in args.builds or []:
        rep = json.loads((Path(d) / "build_report.json").read_text())
        if rep.get("status") != "ok":
            raise SystemExit(f"bench_hardware: {d} is not a finished build "
                             f"(status {rep.get('status')!r}); run it first")
        m = rep["meta"]
        r = _record(rep, m["arch"], m["w_bits"], m["a_bits"], rep["board"],
                    rep["total_seconds"])
        r["build"] = rep["name"]
        r["git_commit"] = (rep.get("provenance") or {}).get("git_commit")
        records.append(r)
        print(f"[bench] {d}: fps={r['est_fps']} lut={r['est_lut']} all_rtl={r['all_rtl']}")
    command = harness.command_line("benchmarks.bench_hardware", argv)
    if args.update:
        records, command = harness.keep_other_records(
            args.out, records, lambda r: (r["model"], r["w_bits"], r["a_bits"], r["board"]),
            command)
        order = {m: i for i, m in enumerate(MODELS)}
        records.sort(key=lambda r: (order.get(r["model"], len(order)), -r["w_bits"],
                                    args.boards.index(r["board"]) if r["board"] in args.boards
                                    else 9))
    notes = ("est_* are finn-plus analytical estimates with finn_build's corrections "
             "(RTL MVU DSP lanes, LUTRAM weights; finn_* are the uncorrected values); "
             "folding = fastest that fits max_utilization (lut 0.85, bram18 0.9, "
             "dsp 0.95); models: "
             + (f"trained checkpoints {args.checkpoint_dir}/<model>_mt_w<W>a<A>/best.pt"
                if args.checkpoint_dir else "untrained, BatchNorm calibrated on real "
                "training images") + ("; records with `build` were collected from that "
                "finished build as its config made it (folding, FIFO depths)"
                if args.builds else ""))
    out = harness.record_set(records, command, clock_mhz=args.clock,
                             total_seconds=round(time.time() - t_all, 1), notes=notes)
    harness.publish(
        out, args.out, "Hardware estimates", harness.render_generic_table(records, HW_COLUMNS),
        harness.provenance_text(out) + f", {args.clock:g} MHz. {notes}. Every build is "
        f"all-RTL and verified on {args.images_per_task} real test images per task at every "
        "stage (`verified_stages`); `mismatches` counts differing outputs over all stages.")
    print(f"[bench] wrote {args.out} ({len(records)} records)")
    bad = [r for r in records if not r["all_rtl"] or r["mismatches"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
