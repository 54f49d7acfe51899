"""Train several benchmark runs side by side on one machine that does not hold the data (a
lent GPU machine), then let the benchmark evaluate them where the data is.

  python -m benchmarks.sweep pack OUT.pkl.gz bench_mnv2:xray_mri_mnv2
  python -m benchmarks.sweep train PACK SPEC... [--out-dir runs/bench] [--deadline SECONDS]

A SPEC is ``module:entry:seed``, e.g. ``bench_mnv2:mnv2_mt_w4a4_e60:1`` or
``bench_generalization:new:2``: the run is exactly the one ``benchmarks.<module>`` trains for
that entry and seed (its ``run_config``), so the benchmark, run afterwards where the data is,
finds it finished and only evaluates it (or resumes it from ``last.pt`` if the deadline cut
it). ``pack`` stores the train and validation pools of one entry's data section (never the
test split); ``train`` refuses a run whose data section differs from the pack's.

Each run is its own process with one CPU thread (as the benchmarks run them); on CUDA they
share the GPU. At ``--deadline`` seconds the runs still going are stopped; their last finished
epoch is in ``last.pt`` (written atomically), and the summary says which runs finished.
"""
from __future__ import annotations

import argparse
import gzip
import importlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path


def run_config(spec: str, out_dir: str):
    try:
        module, entry, seed = spec.split(":")
        seed = int(seed)
    except ValueError:
        raise SystemExit(f"run spec {spec!r}: write module:entry:seed, "
                         "e.g. bench_mnv2:mnv2_mt_w4a4_e60:1")
    return importlib.import_module(f"benchmarks.{module}").run_config(entry, seed, out_dir)


def data_key(cfg) -> str:
    """What decides a run's data: its data section (minus augmentation) and input channels."""
    d = cfg.to_dict()["data"]
    d.pop("augment", None)
    return json.dumps({"data": d, "channels": cfg.model.in_channels}, sort_keys=True)


def pack(out: Path, spec: str) -> None:
    from brevitas_models.files import write_atomic
    from brevitas_models.train import load_data
    cfg = run_config(spec + ":0", "runs/bench")
    data = load_data(cfg)
    blob = {"key": data_key(cfg), "train": data["train"], "val": data["val"]}
    write_atomic(out, lambda tmp: gzip.open(tmp, "wb", compresslevel=6).write(
        pickle.dumps(blob, protocol=5)))
    print(f"{out}: train {len(data['train'])} val {len(data['val'])} images, "
          f"{out.stat().st_size / 2**20:.1f} MiB")


def train_one(pack_path: Path, spec: str, out_dir: str) -> None:
    from brevitas_models.train import train
    cfg = run_config(spec, out_dir)
    with gzip.open(pack_path, "rb") as f:
        blob = pickle.load(f)
    if blob["key"] != data_key(cfg):
        raise SystemExit(f"{spec}: its data section differs from the pack's ({pack_path}); "
                         "pack the data of this entry")
    print(json.dumps(train(cfg, data={"train": blob["train"], "val": blob["val"]},
                           progress=False)), flush=True)


def train_many(pack_path: Path, specs: list[str], out_dir: str, deadline: float) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUBLAS_WORKSPACE_CONFIG=":4096:8")
    logs = Path(out_dir) / "sweep_logs"
    logs.mkdir(parents=True, exist_ok=True)
    t0, procs = time.time(), {}
    for spec in specs:
        log = open(logs / (spec.replace(":", "_") + ".log"), "w")
        procs[spec] = (subprocess.Popen([sys.executable, "-m", "benchmarks.sweep", "one",
                                         str(pack_path), spec, "--out-dir", out_dir],
                                        stdout=log, stderr=subprocess.STDOUT, env=env), log)
    while any(p.poll() is None for p, _ in procs.values()) and time.time() - t0 < deadline:
        time.sleep(2)
    summary = {}
    for spec, (p, log) in procs.items():
        if p.poll() is None:
            p.kill()
            p.wait()
            summary[spec] = "stopped at the deadline (resume from last.pt)"
        else:
            summary[spec] = "finished" if p.returncode == 0 else f"failed (exit {p.returncode})"
        log.close()
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out", type=Path)
    p.add_argument("entry", help="module:entry whose data to pack")
    for name in ("train", "one"):
        p = sub.add_parser(name)
        p.add_argument("pack", type=Path)
        p.add_argument("specs", nargs="+")
        p.add_argument("--out-dir", default="runs/bench")
        p.add_argument("--deadline", type=float, default=float("inf"))
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.out, args.entry)
    elif args.cmd == "one":
        train_one(args.pack, args.specs[0], args.out_dir)
    else:
        summary = train_many(args.pack, args.specs, args.out_dir, args.deadline)
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
