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
Exit codes: 0 ok, 1 selftest mismatch or classify inputs that could not be read, 2 error (one
line saying what and how to fix).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from medimage import IMAGE_EXTS, ImageError

from .inputs import RAW_EXTS
from .packing import value_range
from .runtime import Classifier, DeployError, load_metadata, package_root


def _expand(paths, recursive: bool) -> tuple[list, list]:
    """-> (input files, skipped files): a folder gives its image and .npy files; other files in
    it are skipped (listed, unless hidden), explicit file paths are always taken."""
    out, skipped = [], []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            files = sorted(f for f in it if f.is_file())
            found = [f for f in files if f.suffix.lower() in IMAGE_EXTS + RAW_EXTS]
            skipped += [f for f in files if f not in found
                        and not any(q.startswith(".") for q in f.relative_to(p).parts)]
            if not found:
                raise DeployError(f"{p}: no image files ({', '.join(IMAGE_EXTS + RAW_EXTS)})"
                                  f"{'' if recursive else ' (use --recursive for subfolders)'}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise DeployError(f"{p}: no such file or folder")
    return out, skipped


def _check_out(dest):
    """--out must name a file in an existing folder; checked before any work is done."""
    if dest in (None, "-"):
        return
    p = Path(dest)
    if p.is_dir():
        raise DeployError(f"--out {dest} is a folder; give a file name, e.g. "
                          f"--out {p / 'results.json'}")
    if not p.parent.is_dir():
        raise DeployError(f"--out {dest}: folder {p.parent} does not exist; create it first")


def _write(text: str, dest):
    if dest in (None, "-"):
        sys.stdout.write(text)
        return
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:  # temp file + rename: a reader never sees half a file, a failure leaves none
        tmp.write_text(text)
        os.replace(tmp, dest)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise DeployError(f"cannot write {dest}: {e.strerror or e}; choose another --out "
                              "path") from None
        raise


def classify_files(files, load, run, chunk: int, strict: bool = False) -> list:
    """One result dict per file, in order, ``chunk`` files decoded at a time.

    ``load(path)`` -> the model input (raises DeployError / ImageError naming the file);
    ``run(inputs, names)`` -> one result dict per input. A file that cannot be read gets
    ``{"input", "status": "error", "error"}`` and the others are still classified; with
    ``strict`` the first such file raises (all or nothing). Readable files get status "ok"."""
    rows = []
    for s in range(0, len(files), chunk):
        part = [str(f) for f in files[s:s + chunk]]
        got: list = [None] * len(part)
        ok, xs = [], []
        for i, f in enumerate(part):
            try:
                xs.append(load(f))
                ok.append(i)
            except (DeployError, ImageError) as e:
                if strict:
                    raise DeployError(f"{e} (--strict: nothing classified)") from None
                got[i] = {"input": f, "status": "error", "error": str(e)}
        if xs:
            for i, r in zip(ok, run(np.stack(xs), [part[i] for i in ok])):
                got[i] = {**r, "status": "ok"}
        rows += got
    return rows


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
    _write(json.dumps({k: meta.get(k) for k in keep}, indent=1) + "\n", None)
    return 0


def render(res: list, classes, fmt: str, head: dict) -> str:
    """classify rows -> CSV (one line per input; status, error, then the threshold that
    decided the label, empty: argmax) or JSON (``head`` + rows)."""
    if fmt == "json":
        return json.dumps({**head, "results": res}, indent=1) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf)
    # threshold last: the earlier columns keep their places for existing readers
    w.writerow(["input", "task", "label", "label_index"] + [f"p_{c}" for c in classes]
               + ["status", "error", "threshold"])
    for r in res:
        if r["status"] == "ok":
            thr = "" if r.get("threshold") is None else repr(r["threshold"])  # "": argmax
            w.writerow([r["input"], r["task"], r["label"], r["label_index"]]
                       + [f"{r['probabilities'][c]:.6f}" for c in classes] + ["ok", "", thr])
        else:
            w.writerow([r["input"], r["task"], "", ""] + [""] * len(classes)
                       + [r["status"], r["error"], ""])
    return buf.getvalue()


def cmd_classify(args):
    meta, _ = load_metadata(args.package or package_root())
    names = [t["name"] for t in meta["tasks"]]
    if args.task is None and len(names) > 1:
        raise DeployError(f"--task is required: this model has tasks {', '.join(names)}")
    if args.task is not None and args.task not in names:
        raise DeployError(f"unknown task {args.task!r}; this model's tasks are: "
                          f"{', '.join(names)}")
    files, skipped = _expand(args.inputs, args.recursive)
    if skipped:
        print(f"note: skipped {len(skipped)} files that are not images ({', '.join(IMAGE_EXTS)}"
              f", .npy): {', '.join(str(f) for f in skipped[:5])}"
              f"{', ...' if len(skipped) > 5 else ''}", file=sys.stderr)
    clf = _open(args)
    t = clf.task(args.task)
    t0 = time.time()
    res = classify_files(files, lambda f: clf.load([f], t["name"])[0],
                         lambda x, names: clf.classify(x, t["name"], names=names),
                         args.chunk, args.strict)
    dt = time.time() - t0
    for r in res:
        r.setdefault("task", t["name"])
        if not args.with_acc:
            r.pop("acc", None)
    bad = [r for r in res if r["status"] != "ok"]
    head = {"package": clf.meta["name"], "task": t["name"], "decision": t.get("decision"),
            "overlay": _overlay_kind(clf),
            "runtime": str(Path(__file__).resolve().parent), "images": len(res),
            "failed": len(bad), "skipped": [str(f) for f in skipped], "seconds": round(dt, 4)}
    _write(render(res, t["classes"], args.format, head), args.out)
    if bad:
        print(f"error: {len(bad)} of {len(res)} inputs could not be read (status 'error' in "
              f"the output; the others were classified), first: {bad[0]['error']}; fix or "
              "remove them, or pass --strict to stop at the first", file=sys.stderr)
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
    _write(json.dumps(out, indent=1) + "\n", args.out)
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
    _write(json.dumps(res, indent=1) + "\n", args.out)
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other error of this CLI
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    """argparse type: a whole number >= 1 (0 or negative chunks/batches/repeats mean nothing)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def main(argv=None) -> int:
    ap = _Parser(prog="python3 -m deploy.pynq.cli", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--package", help="unpacked deploy package (default: the one this "
                        "runtime is in)")
    common.add_argument("--simulate-build", metavar="BUILD_DIR", help="HOST ONLY: run against "
                        "the Verilator simulation of this FINN build (board and Vivado faked)")
    common.add_argument("--batch-size", type=_count, default=16, help="images per DMA transfer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", parents=[common])
    c = sub.add_parser("classify", parents=[common])
    c.add_argument("inputs", nargs="+", help="image files, .npy arrays or folders")
    c.add_argument("--task", help="the task (head) to read; required with several tasks")
    c.add_argument("--format", choices=("json", "csv"), default="json")
    c.add_argument("--out", help="output file (default: stdout)")
    c.add_argument("--recursive", action="store_true", help="also images in subfolders")
    c.add_argument("--chunk", type=_count, default=256, help="images decoded at a time")
    c.add_argument("--strict", action="store_true", help="stop at the first unreadable input "
                   "(exit 2, no output) instead of reporting it in its row")
    c.add_argument("--with-acc", action="store_true", help="include the raw accumulators")
    s = sub.add_parser("selftest", parents=[common])
    s.add_argument("--out")
    t = sub.add_parser("throughput", parents=[common])
    t.add_argument("--repeats", type=_count, default=3)
    t.add_argument("--out")
    args = ap.parse_args(argv)
    fn = {"info": cmd_info, "classify": cmd_classify, "selftest": cmd_selftest,
          "throughput": cmd_throughput}[args.cmd]
    try:
        _check_out(getattr(args, "out", None))
        return fn(args)
    except (DeployError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the simulated overlay's errors (host only)
        if type(e).__name__ in ("SimulatedDMAError", "SimError", "MissingToolError"):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
