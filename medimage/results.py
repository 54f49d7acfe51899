"""Classifying files: the one contract of the board's ``classify`` (``deploy.pynq.cli``) and
the host's ``medzoo predict`` (``brevitas_models.predict``), so both read the same files the
same way and write the same rows, line for line.

- inputs: ``expand`` (files and folders -> the input files, and the files skipped in the
  folders), ``load_input`` (an image file, a ``.npy`` array or an array -> the model's uint8
  HxWxC input; an image file through ``from_file``, exactly as training prepared the task's
  images), one ``ImageError`` naming the file per unreadable input;
- ``classify_files``: files, a chunk at a time -> one row each; an unreadable file gets its
  own ``status: "error"`` row and the others are classified (``strict``: the first one stops
  everything);
- rows: ``result_rows`` (the model's logits -> the task's slice -> ``medimage.decision`` ->
  ``input, task, label, label_index, threshold, probabilities, logits[, acc]``), ``header``
  (the keys every output has: task, decision, images, failed, skipped, seconds), ``render``
  (JSON: the header + ``results``; CSV: one line per input, the columns of ``CSV_COLUMNS``);
- ``check_out`` / ``write``: ``--out`` checked before any work, written to a temp file and
  renamed (never half a file, no leftovers).

A *task* here is a dict as in the deploy package's ``metadata.json``: ``name``, ``classes``,
``slice`` (its columns of the model output), ``native_channels``, ``source_format``,
``native_size``, ``preprocess`` (``medimage.Preprocess`` dict), optional ``decision``.

User errors (a path that does not exist, an unknown task, an unwritable ``--out``) are
``UsageError``: one line naming the problem and the fix. numpy only (Pillow when an image is
decoded); ships to the board.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import decision as rule
from .images import IMAGE_EXTS, ImageError
from .images import decode as _decode
from .preprocess import Preprocess, to_model_input

RAW_EXTS = (".npy",)
# CSV: the threshold last, so the earlier columns keep their places for existing readers
CSV_HEAD = ("input", "task", "label", "label_index")
CSV_TAIL = ("status", "error", "threshold")


class UsageError(ValueError):
    """A wrong path, task or option: the message names the problem and the fix."""


# ------------------------------------------------------------------------------- inputs

def decode(path, channels: int) -> np.ndarray:
    """Image file -> uint8 HxWxC in the given native channel count (ImageError naming the
    file for anything that does not decode)."""
    try:
        from PIL import Image  # noqa: F401  (optional on the board: raw .npy inputs need none)
    except ImportError:
        raise ImageError("decoding image files needs Pillow: `pip3 install pillow` (or pass "
                         "raw .npy arrays)") from None
    try:
        return _decode(path, channels, path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except ImageError:
        raise
    except Exception as e:  # PIL raises many types for bad data
        raise ImageError(f"{path}: cannot decode the image ({type(e).__name__}: {e}); pass a "
                         "valid PNG/JPEG/BMP/TIFF/DICOM file or a .npy uint8 array") from None


def from_file(path, task: dict, size: int, channels: int) -> np.ndarray:
    """An image file of ``task`` -> the model's uint8 HxWxC input: decoded to the task's
    native channels, then ``to_model_input`` with the task's preprocessing (training's path)."""
    native = decode(path, int(task.get("native_channels", channels)))
    try:
        pre = Preprocess.from_dict(task.get("preprocess"))
    except (ImageError, TypeError) as e:
        raise ImageError(f"task {task.get('name')!r}: its metadata's preprocess "
                         f"{task.get('preprocess')!r} cannot be applied ({e})") from None
    return to_model_input(native, task.get("source_format"), size, channels, pre,
                          task.get("native_size"))


def check_raw(a, name: str, size: int, channels: int) -> np.ndarray:
    """A raw pixel array must already be the model input: HxW (gray) or HxWxC uint8."""
    a = np.asarray(a)
    want = (size, size, channels)
    shape = a.shape
    if a.ndim == 2 and channels == 1:
        a = a[..., None]
    kind = "gray" if channels == 1 else "RGB"
    if a.shape != want:
        raise ImageError(
            f"{name}: raw array has shape {tuple(shape)}, expected {want} "
            f"({size}x{size} {kind}, uint8){' or ' + str(want[:2]) if channels == 1 else ''}; "
            "resize it to the model input or pass an image file (PNG/JPEG), which the runtime "
            "decodes and resizes as in training")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.integer) or a.size and (a.min() < 0 or a.max() > 255):
            raise ImageError(f"{name}: raw array has dtype {a.dtype}; expected uint8 pixels "
                             "0..255 (convert with .astype(np.uint8) after scaling to 0..255)")
        a = a.astype(np.uint8)
    return a


def load_input(item, task: dict, size: int, channels: int, name=None) -> np.ndarray:
    """A path (image file or .npy) or an array -> model input uint8 HxWxC."""
    if isinstance(item, np.ndarray):
        return check_raw(item, name or "array", size, channels)
    path = str(item)
    if path.lower().endswith(RAW_EXTS):
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except Exception as e:
            raise ImageError(f"{path}: cannot read the .npy array ({type(e).__name__}: {e}); "
                             "save it with numpy.save") from None
        return check_raw(arr, path, size, channels)
    return from_file(path, task, size, channels)


def expand(paths, recursive: bool) -> tuple[list, list]:
    """-> (input files, skipped files): a folder gives its image and .npy files; other files in
    it are skipped (listed, unless hidden), explicit file paths are always taken."""
    exts = tuple(IMAGE_EXTS) + RAW_EXTS
    out, skipped = [], []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            files = sorted(f for f in it if f.is_file())
            found = [f for f in files if f.suffix.lower() in exts]
            skipped += [f for f in files if f not in found
                        and not any(q.startswith(".") for q in f.relative_to(p).parts)]
            if not found:
                raise UsageError(f"{p}: no image files ({', '.join(exts)})"
                                 f"{'' if recursive else ' (use --recursive for subfolders)'}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return out, skipped


def skipped_note(skipped) -> str:
    """The one-line note on the files a folder held that are not inputs."""
    return (f"skipped {len(skipped)} files that are not images ({', '.join(IMAGE_EXTS)}, "
            f".npy): {', '.join(str(f) for f in skipped[:5])}{', ...' if len(skipped) > 5 else ''}")


def pick_task(tasks: list, name) -> dict:
    """The task ``--task`` names (the only one when it is omitted and there is one)."""
    names = [t["name"] for t in tasks]
    if name is None and len(names) > 1:
        raise UsageError(f"--task is required: this model has tasks {', '.join(names)}")
    if name is None:
        return tasks[0]
    if name not in names:
        raise UsageError(f"unknown task {name!r}; this model's tasks are: {', '.join(names)}")
    return tasks[names.index(name)]


# ------------------------------------------------------------------------------- rows

def classify_files(files, load, run, chunk: int, strict: bool = False, task=None,
                   errors=(ImageError,)) -> list:
    """One result dict per file, in order, ``chunk`` files decoded at a time.

    ``load(path)`` -> the model input (raises one of ``errors`` naming the file);
    ``run(inputs, names)`` -> one result dict per input. A file that cannot be read gets
    ``{"input", "task", "status": "error", "error"}`` and the others are still classified; with
    ``strict`` the first such file raises UsageError (all or nothing). Readable files get
    status "ok"."""
    rows = []
    for s in range(0, len(files), chunk):
        part = [str(f) for f in files[s:s + chunk]]
        got: list = [None] * len(part)
        ok, xs = [], []
        for i, f in enumerate(part):
            try:
                xs.append(load(f))
                ok.append(i)
            except errors as e:
                if strict:
                    raise UsageError(f"{e} (--strict: nothing classified)") from None
                got[i] = {"input": f, **({"task": task} if task is not None else {}),
                          "status": "error", "error": str(e)}
        if xs:
            for i, r in zip(ok, run(np.stack(xs), [part[i] for i in ok])):
                got[i] = {**r, "status": "ok"}
        rows += got
    return rows


def result_rows(task: dict, logits, names, acc=None) -> list:
    """The model's outputs for a batch -> one row per input: the task's logit slice,
    ``medimage.decision`` (temperature-scaled probabilities, a binary task's threshold; no
    decision: T = 1 and argmax). ``logits``: [n, all outputs] float32; ``acc``: the integer
    accumulators [n, all outputs] or None (then the rows have no "acc")."""
    lg = np.asarray(logits, np.float32)
    a, b = task["slice"]
    d = task.get("decision")
    probs, labels = rule.apply(lg[:, a:b], d)
    out = []
    for i in range(len(lg)):
        k = int(labels[i])
        r = {"input": str(names[i]), "task": task["name"], "label": task["classes"][k],
             "label_index": k, "threshold": (d or {}).get("threshold"),
             "probabilities": {c: float(p) for c, p in zip(task["classes"], probs[i])},
             "logits": [float(v) for v in lg[i, a:b]]}
        if acc is not None:
            r["acc"] = [int(v) for v in acc[i]]
        out.append(r)
    return out


def header(task: dict, rows: list, skipped, seconds: float) -> dict:
    """The output keys both CLIs share (each adds where its results come from)."""
    return {"task": task["name"], "decision": task.get("decision"), "images": len(rows),
            "failed": sum(r["status"] != "ok" for r in rows),
            "skipped": [str(f) for f in skipped], "seconds": round(seconds, 4)}


def failed_note(rows: list) -> str | None:
    """The one-line error for inputs that could not be read (exit 1), or None."""
    bad = [r for r in rows if r["status"] != "ok"]
    if not bad:
        return None
    return (f"{len(bad)} of {len(rows)} inputs could not be read (status 'error' in the "
            f"output; the others were classified), first: {bad[0]['error']}; fix or remove "
            "them, or pass --strict to stop at the first")


def render(res: list, classes, fmt: str, head: dict) -> str:
    """rows -> CSV (one line per input; label, probabilities, status, error, then the threshold
    that decided the label, empty: argmax) or JSON (``head`` + ``results``)."""
    if fmt == "json":
        return json.dumps({**head, "results": res}, indent=1) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(list(CSV_HEAD) + [f"p_{c}" for c in classes] + list(CSV_TAIL))
    for r in res:
        if r["status"] == "ok":
            thr = "" if r.get("threshold") is None else repr(r["threshold"])  # "": argmax
            w.writerow([r["input"], r["task"], r["label"], r["label_index"]]
                       + [f"{r['probabilities'][c]:.6f}" for c in classes] + ["ok", "", thr])
        else:
            w.writerow([r["input"], r["task"], "", ""] + [""] * len(classes)
                       + [r["status"], r["error"], ""])
    return buf.getvalue()


# ------------------------------------------------------------------------------- output

def positive_int(text: str) -> int:
    """argparse type of both CLIs: a whole number >= 1 (0 or negative chunks / batches /
    repeats mean nothing)."""
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def check_out(dest):
    """--out must name a file in an existing folder; checked before any work is done."""
    if dest in (None, "-"):
        return
    p = Path(dest)
    if p.is_dir():
        raise UsageError(f"--out {dest} is a folder; give a file name, e.g. "
                         f"--out {p / 'results.json'}")
    if not p.parent.is_dir():
        raise UsageError(f"--out {dest}: folder {p.parent} does not exist; create it first")


def write(text: str, dest):
    """To stdout (None or "-"), or to ``dest`` through a temp file and a rename."""
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
            raise UsageError(f"cannot write {dest}: {e.strerror or e}; choose another --out "
                             "path") from None
        raise
