"""CLI: ``python -m finn_build --config build_configs/X.yaml [--from-step NAME]``.

Exit codes (Make-friendly): 0 ok, 1 bad config (also a --from-step that cannot resume: an
input of an earlier step changed, its artifact is missing or damaged), 2 build error (also an
output_dir that is a file, read-only or full), 3 verification mismatch,
4 not all-RTL (HLS or unmapped nodes, allow_hls=false), 5 does not fit the part,
6 --bitstream on a machine without Vivado / Vitis HLS (what was built is listed; re-run resumes).
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m finn_build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="build config YAML (build_configs/*.yaml)")
    ap.add_argument("--from-step", help="resume from this step (uses the previous step's "
                    "artifact in the build dir)")
    ap.add_argument("--stop-step", help="stop after this step")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set folding.target_fps=20000")
    ap.add_argument("--list-steps", action="store_true", help="print the step names and exit")
    ap.add_argument("--list-boards", action="store_true", help="print the boards and exit")
    ap.add_argument("--check-config", action="store_true", help="validate the config and exit")
    ap.add_argument("--bitstream", action="store_true",
                    help="then FINN's Zynq flow (IODMA, stitched IP, Vivado project, .bit/.hwh, "
                    "PYNQ driver; finn_build/bitstream.py); resumes where an earlier run of "
                    "the same config stopped")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also show FINN / qonnx / Brevitas log records and warnings on the "
                    "terminal (they always go to <output_dir>/build.log)")
    args = ap.parse_args(argv)
    from .progress import setup_terminal

    setup_terminal(show_third_party=args.verbose)
    from .boards import BOARDS
    from .config import BuildConfigError, load_build_config, merge, parse_override

    if args.list_boards:
        for b in BOARDS.values():
            print(json.dumps(b.to_dict()))
        return 0
    if args.list_steps:
        if args.bitstream:
            from .bitstream import bitstream_steps

            names = [n for n, _ in bitstream_steps()]
        else:
            from .steps import STEP_NAMES as names
        print("\n".join(names))
        return 0
    if not args.config:
        ap.error("--config is required")
    try:
        over = {}
        for s in args.set:
            over = merge(over, parse_override(s))
        cfg = load_build_config(args.config, over)
    except BuildConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 1
    if args.check_config:
        print(f"{args.config}: OK")
        return 0
    from .errors import OutputDirError, ResumeError, exit_code_for
    from .pipeline import run_build

    steps = None
    if args.bitstream:
        from .bitstream import bitstream_steps, resume_step

        steps = bitstream_steps()
        if args.from_step is None:
            args.from_step = resume_step(cfg, [n for n, _ in steps])
            if args.from_step:
                print(f"[finn_build] resuming at step {args.from_step}: the steps before it are "
                      f"done for this config in {cfg.out_dir} (--from-step load_model redoes all)")
    try:
        rep = run_build(cfg, from_step=args.from_step, stop_step=args.stop_step, steps=steps)
    except (ResumeError, OutputDirError) as e:  # refused before any step ran: no report
        code = exit_code_for(e)
        print(f"BUILD FAILED (exit {code}): {e}", file=sys.stderr)
        return code
    except Exception as e:  # noqa: BLE001
        code = exit_code_for(e)
        print(f"BUILD FAILED (exit {code}): {type(e).__name__}: {e}", file=sys.stderr)
        print(f"see {cfg.out_dir}/build_report.md and verification.json", file=sys.stderr)
        return code
    e = rep.get("estimates") or {}
    v = rep.get("verification", {})
    print(f"BUILD OK: {cfg.name} on {cfg.board} @ {cfg.clock_mhz:g} MHz: all_rtl={rep['all_rtl']}"
          f" est_fps={e.get('est_fps', 0):.0f} latency_us={e.get('est_latency_us', 0):.2f}"
          + (f" measured_fps={e['measured_fps']:.0f} (FIFOs sized by simulation)"
             if e.get("measured_fps") else f" (FIFOs: {e.get('fifo_depths')}, not measured)")
          + f" LUT={e.get('est_lut', 0):.0f} BRAM18={e.get('est_bram18', 0):.0f}"
          f" DSP={e.get('est_dsp', 0):.0f}; verified {v.get('verified_stages')} "
          f"({v.get('mismatches')} mismatches); {rep.get('total_seconds')}s -> {cfg.out_dir}")
    if rep.get("phase_seconds"):
        print("  phases: " + ", ".join(f"{k} {s:.1f}s" for k, s in rep["phase_seconds"].items())
              + f"; third-party log: {cfg.out_dir}/build.log")
    if args.bitstream:
        print(f"BITSTREAM: {cfg.out_dir}/bitstream/bitfile/finn-accel.bit (+ .hwh); PYNQ "
              f"deployment package: {cfg.out_dir}/bitstream/deploy/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
