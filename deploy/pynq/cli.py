"""medfpga board CLI: ``python3 -m deploy.pynq.cli CMD [--package DIR] [--batch-size N]``.

Commands:
  info                       the package: tasks, classes, input, DMA tensors, bitfile
  classify PATH... --task T  image files / .npy arrays / folders -> JSON (default) or CSV
  selftest                   the packaged test images (every class of every task) vs their
                             expected outputs (exit 1 on any difference)
  throughput                 FINN-style DMA throughput test + host-side costs per stage

Run from the unpacked deploy package (its ``metadata.json`` is found next to ``deploy/``) or
pass ``--package``. ``--simulate-build BUILD_DIR`` (host only: the board and Vivado are faked)
runs the same runtime against the Verilator simulation of the build's RTL.
``classify`` reads every input it can: an unreadable file gets its own row with status
``error`` and the reason (the other files are classified), and the exit code is 1; ``--strict``
stops at the first unreadable file instead, with exit 2 and no output.
Outputs (``--out``) are written to a temp file and renamed: never half a file, no leftovers.
``classify``'s inputs, rows and JSON/CSV are ``medimage.results``, which the host's ``medzoo
predict`` (the run's PyTorch model or its QONNX export, no board) writes too: same columns.
Exit codes: 0 ok, 1 selftest mismatch or classify inputs that could not be read, 2 error (one
line saying what and how to fix).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from medimage import ImageError
from medimage import results
from medimage.results import classify_files, render  # noqa: F401  (this CLI's API)

from .packing import value_range
from .runtime import Classifier, DeployError, load_metadata, package_root


def _open(args) -> Classifier:
    meta, pdir = load_metadata(args.package or package_root())
    if args.simulate_build:
        # host only, not in the package: found in the medfpga project installed on the host
        try:
            from deploy.host.sim_overlay import SimulatedOverlay
        except ImportError as e:
            raise DeployError(f"--simulate-build needs the medfpga project (deploy.host, "
                              f"finn_build: {e}); run this CLI with the project's venv, "
                              "/path/to/medfpga/.venv/bin/python") from None

        ov = SimulatedOverlay(args.simulate_build, meta)
        return Classifier(pdir, ov, ov.allocate, args.batch_size)
    return Classifier(pdir, batch_size=args.batch_size)


def _overlay_kind(clf) -> str:
    return "simulated (Verilator RTL; board and Vivado faked)" if hasattr(
        clf.accel.overlay, "runs") else "pynq"


def cmd_info(args):
    meta, pdir = load_metadata(args.package or package_root())
    keep = ("name", "board", "fpga_part", "clock_mhz", "bitfile", "bitfile_note", "input",
            "tasks", "dma", "performance")
    results.write(json.dumps({k: meta.get(k) for k in keep}, indent=1) + "\n", None)
    return 0


def cmd_classify(args):
    meta, _ = load_metadata(args.package or package_root())
    t = results.pick_task(meta["tasks"], args.task)
    files, skipped = results.expand(args.inputs, args.recursive)
    if skipped:
        print(f"note: {results.skipped_note(skipped)}", file=sys.stderr)
    clf = _open(args)
    t = clf.task(t["name"])

    def run(x, names):  # uint8 NHWC inputs -> the accelerator -> rows (medimage.results)
        acc = clf.accumulators(x)
        return results.result_rows(t, clf.logits(acc), names, acc if args.with_acc else None)

    t0 = time.time()
    res = classify_files(files, lambda f: clf.load([f], t["name"])[0], run, args.chunk,
                         args.strict, t["name"], (DeployError, ImageError))
    dt = time.time() - t0
    head = {"package": clf.meta["name"], **results.header(t, res, skipped, dt),
            "overlay": _overlay_kind(clf), "runtime": str(Path(__file__).resolve().parent)}
    results.write(render(res, t["classes"], args.format, head), args.out)
    bad = results.failed_note(res)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 1
    return 0


def cmd_selftest(args):
    meta, pdir = load_metadata(args.package or package_root())
    f = pdir / "samples" / "expected.json"
    if not f.is_file():
        raise DeployError(f"{f} not found: this package has no test images; make it again "
                          "with `make deploy-package`")
    exp = json.loads(f.read_text())["images"]
    clf = _open(args)
    bad, by_task, checked = [], {}, []
    for e in exp:
        by_task.setdefault(e["task"], []).append(e)
    for task, items in by_task.items():
        res = clf.classify([pdir / e["file"] for e in items], task)
        for e, r in zip(items, res):
            x = e["expected"]
            lg = np.asarray(x["logits"], np.float32)
            a, b = clf.task(task)["slice"]
            diffs = [k for k, ok in (
                ("acc", r["acc"] == x["acc"]), ("label", r["label_index"] == x["label_index"]),
                ("logits", np.array_equal(np.asarray(r["logits"], np.float32), lg[a:b])))
                if not ok]
            if diffs:
                bad.append({"file": e["file"], "differs": diffs, "got": r["acc"],
                            "expected": x["acc"]})
            checked.append({"file": e["file"], "task": task, "true_label": e.get("true_label"),
                            "expected_label": x["label"], "label": r["label"],
                            "status": "fail" if diffs else "pass"})
    # which classes of every task the packaged images show (packages made since the samples
    # cover every class have none without an image)
    coverage = {}
    for t in meta["tasks"]:
        seen = {c["true_label"] for c in checked if c["task"] == t["name"]}
        coverage[t["name"]] = {
            "images": sum(1 for c in checked if c["task"] == t["name"]),
            "classes": [c for c in t["classes"] if c in seen],
            "classes_without_image": [c for c in t["classes"] if c not in seen]}
    out = {"package": meta["name"], "overlay": _overlay_kind(clf),
           "runtime": str(Path(__file__).resolve().parent), "images": len(exp),
           "passed": len(exp) - len(bad), "mismatches": bad,
           "status": "pass" if not bad else "fail", "coverage": coverage, "results": checked}
    results.write(json.dumps(out, indent=1) + "\n", args.out)
    return 0 if not bad else 1


def cmd_throughput(args):
    clf = _open(args)
    acc = clf.accel
    n, din = acc.batch_size, acc.din
    lo, hi = value_range(din["dtype"])
    rng = np.random.default_rng(0)
    x = rng.integers(lo, hi + 1, size=[n] + list(din["shape_normal"][1:]))
    packed = acc.pack_input(x)
    acc.ibuf[:] = packed
    acc.ibuf.flush()
    runs = []
    for _ in range(args.repeats):
        t0 = time.time()
        acc.execute_on_buffers()
        runs.append(time.time() - t0)
    best = min(runs)
    res = {"package": clf.meta["name"], "overlay": _overlay_kind(clf), "batch_size": n,
           "repeats": args.repeats, "runtime_ms": round(best * 1e3, 3),
           "throughput_images_per_s": round(n / best, 1),
           "dram_in_MB_per_s": round(din["bytes_per_image"] * n / best / 1e6, 3),
           "dram_out_MB_per_s": round(acc.dout["bytes_per_image"] * n / best / 1e6, 3),
           "clock_mhz": clf.meta.get("clock_mhz")}
    # host-side costs per stage (ms for the whole batch)
    host = {}
    t0 = time.time()
    acc.pack_input(x)
    host["pack_input_ms"] = (time.time() - t0) * 1e3
    acc.obuf.invalidate()
    ob = np.array(acc.obuf)
    t0 = time.time()
    y = acc.unpack_output(ob)
    host["unpack_output_ms"] = (time.time() - t0) * 1e3
    t0 = time.time()
    clf.logits(y.reshape(n, -1))
    host["post_ops_ms"] = (time.time() - t0) * 1e3
    t0 = time.time()
    clf.dataflow_input(rng.integers(0, 256, size=(n, clf.size, clf.size, clf.channels),
                                    dtype=np.uint8))
    host["pre_ops_ms"] = (time.time() - t0) * 1e3
    res["host_ms_per_batch"] = {k: round(v, 3) for k, v in host.items()}
    runs_sim = getattr(acc.overlay, "runs", None)
    if runs_sim:
        r = runs_sim[-1]
        clk = float(clf.meta["clock_mhz"])
        iv = r["interval_cycles"]
        res["simulated"] = {
            "note": "wall-clock figures above are the Verilator simulation's speed, not the "
                    "board's; these are the RTL's cycle counts at clock_mhz (dataflow only: "
                    "no DMA/DRAM limits, no host costs)",
            "cycles": r["cycles"], "interval_cycles_per_image": iv,
            "latency_cycles": r["latency_cycles"],
            "fps_at_clock": round(clk * 1e6 / iv, 1) if iv else None,
            "latency_us_at_clock": round(r["latency_cycles"] / clk, 3),
            "batch_us_at_clock": round(r["cycles"] / clk, 3)}
    results.write(json.dumps(res, indent=1) + "\n", args.out)
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other error of this CLI
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    ap = _Parser(prog="python3 -m deploy.pynq.cli", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--package", help="unpacked deploy package (default: the one this "
                        "runtime is in)")
    common.add_argument("--simulate-build", metavar="BUILD_DIR", help="HOST ONLY: run against "
                        "the Verilator simulation of this FINN build (board and Vivado faked)")
    common.add_argument("--batch-size", type=results.positive_int, default=16,
                        help="images per DMA transfer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", parents=[common])
    c = sub.add_parser("classify", parents=[common])
    c.add_argument("inputs", nargs="+", help="image files, .npy arrays or folders")
    c.add_argument("--task", help="the task (head) to read; required with several tasks")
    c.add_argument("--format", choices=("json", "csv"), default="json")
    c.add_argument("--out", help="output file (default: stdout)")
    c.add_argument("--recursive", action="store_true", help="also images in subfolders")
    c.add_argument("--chunk", type=results.positive_int, default=256,
                   help="images decoded at a time")
    c.add_argument("--strict", action="store_true", help="stop at the first unreadable input "
                   "(exit 2, no output) instead of reporting it in its row")
    c.add_argument("--with-acc", action="store_true", help="include the raw accumulators")
    s = sub.add_parser("selftest", parents=[common])
    s.add_argument("--out")
    t = sub.add_parser("throughput", parents=[common])
    t.add_argument("--repeats", type=results.positive_int, default=3)
    t.add_argument("--out")
    args = ap.parse_args(argv)
    fn = {"info": cmd_info, "classify": cmd_classify, "selftest": cmd_selftest,
          "throughput": cmd_throughput}[args.cmd]
    try:
        results.check_out(getattr(args, "out", None))
        return fn(args)
    except (DeployError, results.UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the simulated overlay's errors (host only)
        if type(e).__name__ in ("SimulatedDMAError", "SimError", "MissingToolError"):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
