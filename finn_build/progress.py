"""What a user sees while a build runs: our own lines on the terminal, everything else in the
build's ``build.log``.

- ``say``: one line of ours (stdout or run_build's ``echo``, and build.log).
- ``phase``: a long phase announces what it does, then its time (and records the time).
- ``ticker``: a tqdm bar while a blocking call runs (a simulation's cycles, files compiled,
  or just the elapsed time); only on a terminal, so CI logs get no carriage-return spam.
- ``BuildLog``: for the time of one build, third-party log records (FINN, qonnx, Brevitas)
  and Python warnings go to ``<output_dir>/build.log``; on the terminal only ours, unless
  ``show_third_party`` (``--verbose``). Records from before the build (imports) are kept
  and written there first.
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("finn_build")
PREFIX = "[finn_build]"


_echo = [print]  # where ``say`` writes: run_build's ``echo`` for the time of a build


def say(message: str) -> None:
    _echo[0](f"{PREFIX} {message}")
    log.info(message)


@contextmanager
def echo_to(echo):
    """``say`` writes with ``echo`` inside the block (run_build's ``echo`` argument)."""
    previous, _echo[0] = _echo[0], echo
    try:
        yield
    finally:
        _echo[0] = previous


@contextmanager
def phase(name: str, what: str, times: dict | None = None):
    """``say`` ``name: what ...``, run the block, then ``name done in S s`` (or ``failed``);
    the seconds go to ``times[name]``."""
    say(f"  {name}: {what} ...")
    start = time.time()
    try:
        yield
    except BaseException:
        say(f"  {name} failed after {time.time() - start:.1f} s")
        raise
    seconds = time.time() - start
    if times is not None:
        times[name] = round(seconds, 2)
    say(f"  {name} done in {seconds:.1f} s")


def bars_enabled() -> bool:
    """Progress bars only on a terminal (tqdm's ``disable=None`` rule): no CI log spam."""
    return sys.stderr.isatty()


@contextmanager
def ticker(desc: str, poll=None, total=None, unit: str = "s"):
    """A progress bar for a blocking call in this thread (a C++ simulation, a subprocess):
    every half second it shows ``poll()`` (cycles simulated, files compiled), or without
    ``poll`` the seconds elapsed; rate and, with ``total``, ETA. Off when stderr is not a
    terminal. ``poll`` runs on another thread: it may only read a counter."""
    bar = tqdm(total=total, desc=f"{PREFIX}   {desc}", unit=unit, disable=not bars_enabled(),
               leave=False,
               file=sys.stderr, unit_scale=True, dynamic_ncols=True)
    if bar.disable:
        yield
        return
    start = time.time()
    stop = threading.Event()

    def update():
        while not stop.wait(0.5):
            value = poll() if poll is not None else time.time() - start
            bar.update(max(0, value - bar.n))

    thread = threading.Thread(target=update, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


class _OursOrAll(logging.Filter):
    def __init__(self, show_third_party: bool):
        super().__init__()
        self.show_third_party = show_third_party

    def filter(self, record) -> bool:
        return self.show_third_party or record.name.split(".")[0] == "finn_build"


_EARLY = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)


def setup_terminal(show_third_party: bool = False) -> None:
    """For the CLI: warnings of ours on stderr (all records with ``show_third_party``);
    every record (Python warnings included) is kept until a ``BuildLog`` opens."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.INFO if show_third_party else logging.WARNING)
    terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    terminal.addFilter(_OursOrAll(show_third_party))
    root.addHandler(terminal)
    root.addHandler(_EARLY)
    logging.captureWarnings(True)


class BuildLog:
    """``with BuildLog(out_dir / "build.log"):`` every log record and Python warning of the
    build, appended with time and source; the file name is ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.handler = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root = logging.getLogger()
        self._root_level = root.level
        root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
        self._cli = _EARLY in root.handlers
        if self._cli:  # what came before the build (imports, config)
            _EARLY.setTarget(self.handler)
            _EARLY.flush()
            _EARLY.setTarget(None)
            root.removeHandler(_EARLY)
        root.addHandler(self.handler)
        logging.captureWarnings(True)
        return self

    def __exit__(self, *exc):
        root = logging.getLogger()
        root.removeHandler(self.handler)
        self.handler.close()
        if self._cli:
            root.addHandler(_EARLY)
        else:  # a build run from Python: leave logging as it was
            logging.captureWarnings(False)
            root.setLevel(self._root_level)
        return False
