"""Writing files so that no reader ever sees half of one (killed process, full disk): the one
implementation for training, export, the build and the benchmarks. (The board runtime,
``deploy/pynq``, ships without this package and keeps its own few lines.) Also a file's
sha256: which bytes a checkpoint, an export or a calibration belongs to."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def write_atomic(path, write, unique: bool = False) -> None:
    """``write(tmp_path)`` into a temp file beside ``path``, then rename it over ``path``
    (atomic within one filesystem). The temp file is ``<name>.tmp``, or with ``unique`` a fresh
    name (several processes may write the same file, e.g. a shared cache). On any failure the
    temp file is removed and an OSError names ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if unique:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp)
    else:
        tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; build and cache files may be shared
        os.replace(tmp, path)
    except OSError as e:
        e.filename = e.filename or str(path)  # a full disk fails in write(): name the file
        raise
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path, obj, indent: int = 1, **dumps_args) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, default=str, **dumps_args))


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
