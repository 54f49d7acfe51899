"""Where a result came from: git commit (with ``+dirty``), command, date, package versions.
Every build report and every benchmark record carries it."""
from __future__ import annotations

import datetime as _dt
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("finn-plus", "qonnx", "brevitas", "onnx", "onnxruntime", "torch", "numpy")


def git_commit() -> str | None:
    """HEAD, with "+dirty" when tracked files differ from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=REPO, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO, timeout=10)
        return f"{head}+dirty" if head and dirty.returncode == 1 else head
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    out["python"] = sys.version.split()[0]
    return out


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def command() -> str:
    return " ".join(sys.argv)


def provenance() -> dict:
    """{git_commit, command, date, packages} of this process, now."""
    return {"git_commit": git_commit(), "command": command(), "date": now(),
            "packages": package_versions()}
