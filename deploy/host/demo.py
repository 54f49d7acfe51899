"""HOST ONLY — the end of ``make demo``: each build's deploy package, unpacked, diagnoses its
real test images through the simulated accelerator, as a user would run it on the board.

``python -m deploy.host.demo build_configs/X.yaml [...]``: per build config, the package
(``deploy.host.package``: one real test image per class of every task, with the build's
python-golden outputs) is unpacked into ``build/deploy/<name>/`` and its own CLI runs
``selftest --simulate-build <the build>`` in a subprocess: every image decoded and
preprocessed by the packaged runtime, packed, streamed through the Verilator simulation of the
build's stitched RTL and decided by the packaged host ops. Prints one line per image (task,
file, true class, the board's diagnosis, equal to the python golden or not); exits 1 if any
image differs from the golden.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from deploy.pynq.runtime import DeployError

from .package import build_package


def unpack(archive: Path, dest_dir: Path) -> Path:
    """archive -> dest_dir/<name>/ (unpacked beside it, then renamed over the old copy)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = archive.name.removesuffix(".tar.gz")
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        final = dest_dir / name
        if final.exists():
            shutil.rmtree(final)
        (Path(tmp) / name).rename(final)
    return final


def run_selftest(pkg: Path, build_dir: Path) -> dict:
    """The package's own CLI (its copy of the runtime) against the simulated overlay."""
    out = pkg / "selftest.json"
    r = subprocess.run([sys.executable, "-m", "deploy.pynq.cli", "selftest", "--simulate-build",
                        str(build_dir.resolve()), "--out", out.name], cwd=pkg,
                       capture_output=True, text=True)
    if not out.is_file():
        raise DeployError(f"selftest of {pkg} gave no result (exit {r.returncode}): "
                          f"{(r.stderr or r.stdout).strip()[-2000:]}")
    return json.loads(out.read_text())


def report(st: dict) -> list[str]:
    rows = [("task", "image", "true class", "board says", "golden")] + [
        (r["task"], Path(r["file"]).name, str(r["true_label"]), r["label"],
         "equal" if r["status"] == "pass" else "DIFFERS") for r in st["results"]]
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, width + [0])).rstrip() for row in rows]
    right = sum(r["label"] == r["true_label"] for r in st["results"])
    lines.append(f"{st['passed']}/{st['images']} images equal to the build's python golden "
                 f"(accumulators, logits, label); {right}/{st['images']} diagnosed correctly "
                 f"(overlay: {st['overlay']})")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.host.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", help="build configs whose builds are done")
    ap.add_argument("--out-dir", default="build/deploy")
    a = ap.parse_args(argv)
    from finn_build.config import BuildConfigError, load_build_config

    ok = True
    for path in a.configs:
        try:
            st = demo_build(load_build_config(path), Path(a.out_dir))
        except (DeployError, BuildConfigError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("\n".join(report(st)), flush=True)
        ok &= st["status"] == "pass"
    return 0 if ok else 1


def demo_build(cfg, out_dir: Path, log=print) -> dict:
    """One finished build: package (a test image per class), unpack, the package's selftest
    on the simulated accelerator -> the selftest's result."""
    archive = build_package(cfg.out_dir, cfg, out_dir, per_class=1)
    pkg = unpack(archive, out_dir)
    log(f"\n== {cfg.name}: package {archive}, unpacked in {pkg}; its runtime on the "
        "simulated accelerator (Verilator RTL of the build)", flush=True)
    return run_selftest(pkg, Path(cfg.out_dir))


if __name__ == "__main__":
    sys.exit(main())
