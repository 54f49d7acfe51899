"""Data layer: load, validate, de-duplicate, split and batch the medical image tasks.

Conventions (kept everywhere so that training sees what the FPGA sees):
- Images are uint8 NHWC numpy arrays, values 0..255, until a batch is handed to the model;
  batches are float tensors (B,C,H,W) still on the 0..255 scale (the model's first quantizer
  does the scaling, so the hardware input stays a plain uint8 pixel).
- Labels are int64 1-D arrays; in multi-task pools ``task_ids`` index the task list.
- A model has ONE input channel count. When tasks are pooled, gray tasks are replicated to RGB
  for an RGB model, and RGB tasks are reduced to ITU-R 601 luma for a gray model (the default,
  channels=1: most tasks are gray and a 1-channel first layer is 3x cheaper on the FPGA).
- Image-tree and manifest sets are de-duplicated by content hash by default (the brain MRI
  set leaks duplicates from train into test); a split the source lacks is carved from train
  as the task's ``test_split`` / ``val_split`` say (seeded, stratified per class, per image or
  by patient): the Kermany chest X-rays by patient, brain MRI per image, a user's pool of
  class folders into train/val/test.
- A task's source is a class-per-folder tree (a folder or a .tar), an npz (MedMNIST layout) or
  a CSV manifest (``load_manifest``); ``resolve_task`` fills in a declaration's ``classes:
  auto`` and its split folders from the files.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL
import torch

# Image conventions (decode, >8-bit rule, channel conversion, resize, file types) are
# medimage's, shared with the board runtime: training and the board read files the same way.
from medimage import (DICOM_EXTS, IMAGE_EXTS, ImageError, Preprocess, decode, standardize,
                      to_model_input)

from .files import write_atomic
from .tasks import TaskSection, TaskSpec, get_task

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("train", "val", "test")
_CACHE_VERSION = 2  # bump when the cached content or its layout changes
# Files a class folder may hold that are not images: skipped (and reported), never decoded.
# Any other file that is not in IMAGE_EXTS is an error, not a silent skip.
_NOT_IMAGE_EXTS = (".txt", ".csv", ".json", ".md", ".xml", ".yaml", ".yml", ".html", ".pdf",
                   ".ini", ".db", ".log")


# --------------------------------------------------------------------------- paths

def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """explicit path > $MEDFPGA_DATA > <project root>/../shared/data."""
    tried = []
    for origin, cand in (("explicit path", explicit),
                         ("$MEDFPGA_DATA", os.environ.get("MEDFPGA_DATA")),
                         ("default", PROJECT_ROOT.parent / "shared" / "data")):
        if cand is None or cand == "":
            continue
        p = Path(cand).expanduser()
        if p.is_dir():
            return p
        tried.append(f"{origin} {str(p)!r}")
        if origin != "default":
            break  # an explicit choice that is wrong must not silently fall back
    raise FileNotFoundError(
        "data directory not found (tried: " + "; ".join(tried) + "). "
        "Set MEDFPGA_DATA=/path/to/shared/data or pass --data-dir.")


def cache_dir() -> Path:
    return Path(os.environ.get("MEDFPGA_CACHE") or PROJECT_ROOT / ".cache" / "data")


# --------------------------------------------------------------------------- containers

@dataclass
class Split:
    images: np.ndarray                 # uint8 (N,H,W,C)
    labels: np.ndarray                 # int64 (N,)
    names: list[str] | None = None     # member names for file-based sets
    hashes: list[str] | None = None    # content hashes at native resolution (for dedup)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> "Split":
        idx = np.asarray(idx, dtype=np.int64)
        pick = (lambda xs: None if xs is None else [xs[i] for i in idx])
        return Split(self.images[idx], self.labels[idx], pick(self.names), pick(self.hashes))


def _check_split(split_name: str, s: Split, task: TaskSpec, where) -> None:
    if len(s.images) != len(s.labels):
        raise ValueError(f"split {split_name!r} of {where}: {len(s.images)} images but "
                         f"{len(s.labels)} labels")
    if len(s.labels) and (s.labels.min() < 0 or s.labels.max() >= task.num_classes):
        raise ValueError(f"split {split_name!r} of {where}: labels {sorted(set(s.labels.tolist()))} "
                         f"outside 0..{task.num_classes - 1} for task {task.name!r}")
    present = sorted(set(s.labels.tolist()))
    if len(present) < 2:
        raise ValueError(f"split {split_name!r} of {where} has only one class "
                         f"({[task.classes[i] for i in present]}); need at least 2")


# --------------------------------------------------------------------------- npz

def load_npz(path, task: TaskSpec) -> dict[str, Split]:
    """MedMNIST layout: {train,val,test}_{images,labels}; images (N,S,S) or (N,S,S,C) uint8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file for task {task.name!r} not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # read everything now: CRC errors surface here
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"cannot read {path}: not a valid npz file ({type(e).__name__}: {e})") from e
    need = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    missing = [k for k in need if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks keys {missing}; found keys {sorted(arrays)}")
    out = {}
    for s in SPLITS:
        x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if x.ndim == 3:
            x = x[..., None]
        want = (task.size, task.size, task.channels)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != want:
            raise ValueError(f"{path}: {s}_images has dtype {x.dtype} shape {arrays[f'{s}_images'].shape}; "
                             f"expected uint8 (N,{task.size},{task.size}"
                             f"{'' if task.channels == 1 else f',{task.channels}'})")
        if not np.issubdtype(y.dtype, np.integer) or not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
            raise ValueError(f"{path}: {s}_labels has dtype {y.dtype} shape {y.shape}; "
                             "expected integer (N,1) or (N,)")
        split = Split(np.ascontiguousarray(x), y.reshape(-1).astype(np.int64))
        _check_split(s, split, task, path)
        out[s] = split
    return out


# --------------------------------------------------------------------------- image trees

def content_hash(arr: np.ndarray) -> str:
    h = hashlib.sha256(str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _decode(data: bytes, member: str, where, channels: int, size: int, pre: Preprocess,
            grid: int) -> tuple[np.ndarray, str]:
    """Decode one image -> (uint8 HxWxC array at ``size``, cropped/normalized as ``pre``
    says, as on the board; hash of the native pixels)."""
    if not data:
        raise ValueError(f"empty image file {member!r} in {where}")
    try:
        native = decode(io.BytesIO(data), channels, member)
    except ImageError as e:
        raise ValueError(f"{e} (in {where})") from e
    except Exception as e:  # PIL raises many types for bad data
        raise ValueError(f"cannot decode image {member!r} in {where}: {type(e).__name__}: {e}") from e
    # hashed as PIL gives the pixels (HxW for gray): cached hashes keep their values
    h = content_hash(native[..., 0] if channels == 1 else native)
    return standardize(native, size, pre, grid), h


def _prefix(folder: str) -> str:
    """A split folder inside a tree -> the member-name prefix ("." = the tree itself)."""
    folder = folder.strip("/")
    return "" if folder in ("", ".") else folder + "/"


def _dir_files(path: Path, prefixes) -> list[Path]:
    """Regular files under the split folders of an unpacked tree (nothing else can matter)."""
    files = set()
    for pre in prefixes:
        d = path / pre
        if d.is_dir():
            files.update(p for p in d.rglob("*") if p.is_file())
    return sorted(files)


def _iter_tree(path: Path, prefixes):
    """Yield (relative posix name, bytes) for every regular file in a tar, or in the split
    folders of a directory."""
    if path.is_dir():
        for p in _dir_files(path, prefixes):
            yield p.relative_to(path).as_posix(), p.read_bytes()
        return
    try:
        tf = tarfile.open(path)
    except (tarfile.TarError, OSError) as e:
        raise ValueError(f"cannot open archive {path}: {e}") from e
    with tf:
        for m in tf:  # streaming, no extraction to disk
            if m.isfile():
                name = m.name[2:] if m.name.startswith("./") else m.name
                yield name, tf.extractfile(m).read()


def _not_an_image(rel: str) -> bool:
    """Hidden files and folders (incl. macOS ``._x.jpg``), __MACOSX, notes and tables."""
    parts = rel.split("/")
    return (any(p.startswith(".") or p == "__MACOSX" for p in parts)
            or rel.lower().endswith(_NOT_IMAGE_EXTS))


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a path
        np.savez(f, **arrays)


def archive_sha256(path: Path) -> str:
    """sha256 of an archive's bytes, memoized under cache_dir() by (path, size, mtime, ctime,
    inode): hashed once per change of the file (any write changes ctime)."""
    st = path.stat()
    stamp = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                        st.st_ino])
    memo = cache_dir() / "sha256" / f"{hashlib.sha256(stamp.encode()).hexdigest()[:24]}.txt"
    try:
        digest = memo.read_text().strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    write_atomic(memo, lambda tmp: tmp.write_bytes(digest.encode()), unique=True)
    return digest


def source_state(path: Path, task: TaskSpec) -> list:
    """What a task's images depend on, cheap to compute: a tar (or npz) by its sha256; an
    unpacked tree by the relative name, size, mtime and ctime of every file under its split
    folders (a rewrite changes ctime); a manifest by its sha256 and the same of every image it
    lists. The data cache's key, and the build's record of its data (finn_build.data)."""
    path = Path(path)
    if task.fmt == "csv":
        state = ["csv", archive_sha256(path)]
        for r in read_manifest(path, task.classes):
            st = (path.parent / r["path"]).stat()
            state.append([r["path"], st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    elif path.is_dir():
        state = ["dir", str(path.resolve())]
        for p in _dir_files(path, [_prefix(d) for d in (task.split_dirs or {}).values()]):
            st = p.stat()
            state.append([p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns,
                          st.st_ctime_ns])
    else:
        state = ["tar", archive_sha256(path)]
    return state


def _tree_cache_path(path: Path, task: TaskSpec, size: int, pre: Preprocess) -> Path:
    """Cache file for this source state: the key changes whenever any member's name, size or
    content changes (``source_state``)."""
    return _cache_file(task, size, source_state(path, task), pre)


def _cache_file(task: TaskSpec, size: int, source: list, pre: Preprocess) -> Path:
    """Cache file of a task's decoded images: keyed by its source's state (``source``) and
    every part of its description that changes the decoded arrays."""
    # the Pillow version too: another libjpeg may decode the same JPEG to other pixels
    key = [_CACHE_VERSION, PIL.__version__, source, size, task.channels, task.classes,
           task.split_dirs]
    if pre.active:  # (without preprocessing the key, and so the cache, is the older one)
        key.append(pre.to_dict())
    if pre.crop and task.size != 224:  # the crop's grid (every tree task was 224 before)
        key.append({"grid": task.size})
    # DICOM pixels depend on pydicom (and its plugins) as JPEG's on Pillow: folder and manifest
    # sources list their files here (a tar is keyed by its bytes only; pydicom is pinned)
    if any(isinstance(m, list) and str(m[0]).lower().endswith(DICOM_EXTS) for m in source):
        from importlib.metadata import version

        key.append({"pydicom": version("pydicom")})
    key = json.dumps(key)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / f"{task.name}-{size}px-{task.channels}ch-{digest}.npz"


def _save_cache(file: Path, splits: dict[str, Split], skipped: list[str]) -> None:
    arrays = {"skipped": np.array(skipped, dtype=str)}
    for s, sp in splits.items():
        arrays.update({f"{s}_images": sp.images, f"{s}_labels": sp.labels,
                       f"{s}_names": np.array(sp.names), f"{s}_hashes": np.array(sp.hashes)})
    # uncompressed: loads in ~1 s, zlib would cost more than disk
    write_atomic(file, lambda tmp: _savez(tmp, arrays), unique=True)


def _load_cache(file: Path) -> tuple[dict[str, Split], list[str]] | None:
    try:
        with np.load(file, allow_pickle=False) as z:
            splits = {k[:-len("_labels")] for k in z.files if k.endswith("_labels")}
            return ({s: Split(z[f"{s}_images"], z[f"{s}_labels"], z[f"{s}_names"].tolist(),
                              z[f"{s}_hashes"].tolist()) for s in SPLITS if s in splits},
                    z["skipped"].tolist())
    except Exception as e:  # a broken cache is rebuilt, never fatal
        log.warning("ignoring unreadable cache %s: %s", file, e)
        return None


def _report_skipped(task: TaskSpec, path: Path, skipped: list[str], report) -> None:
    if report is not None:
        report["skipped_files"] = list(skipped)
    if skipped:
        log.warning("%s: skipped %d files that are not images in %s (e.g. %s)", task.name,
                    len(skipped), path, ", ".join(skipped[:3]))


def load_image_tree(path, task: TaskSpec, size: int | None = None, use_cache: bool = True,
                    report: dict | None = None, pre: Preprocess = Preprocess()
                    ) -> dict[str, Split]:
    """Class-per-folder image tree (a .tar or an unpacked directory) -> splits.

    Files of the types in ``IMAGE_EXTS`` are decoded with ``medimage.decode`` (as on the board)
    to the task's native channels (gray "L" or "RGB") and brought to ``size`` (default: the
    task's native size) by ``medimage.standardize`` (crop, resize, normalize as ``pre`` says). ``hashes`` are taken before the resize, at
    the file's own resolution. Hidden files and notes (``_NOT_IMAGE_EXTS``) are skipped and
    listed in ``report["skipped_files"]``; any other file is an error. Decoded arrays are
    cached as npz under ``cache_dir()``, keyed by the source's content (see ``_tree_cache_path``).
    """
    path = Path(path)
    size = size or task.size
    if not path.exists():
        raise FileNotFoundError(f"image tree for task {task.name!r} not found: {path}")
    if not task.split_dirs:
        raise ValueError(f"task {task.name!r} has no split_dirs; it is not an image tree task")
    prefixes = {s: _prefix(d) for s, d in task.split_dirs.items()}
    cfile = _tree_cache_path(path, task, size, pre) if use_cache else None
    if cfile is not None and cfile.is_file():
        cached = _load_cache(cfile)
        if cached is not None:
            log.info("loaded %s from cache %s", task.name, cfile)
            _report_skipped(task, path, cached[1], report)
            return cached[0]

    items: dict[str, list] = {s: [] for s in task.split_dirs}
    skipped = []
    for name, data in _iter_tree(path, prefixes.values()):
        split = next((s for s, p in prefixes.items() if name.startswith(p)), None)
        if split is None:
            continue
        rel = name[len(prefixes[split]):]
        if _not_an_image(rel):
            skipped.append(name)
            continue
        if not rel.lower().endswith(IMAGE_EXTS):
            raise ValueError(f"file {name!r} in {path} is not an image type read here "
                             f"({', '.join(IMAGE_EXTS)}); convert it to PNG or move it out of "
                             "the class folder")
        parts = rel.split("/")
        if len(parts) != 2 or parts[0] not in task.classes:
            raise ValueError(f"unexpected member {name!r} in {path}: expected "
                             f"{prefixes[split]}<class>/<file> with class in {list(task.classes)}")
        img, h = _decode(data, name, path, task.channels, size, pre, task.size)
        items[split].append((name, task.classes.index(parts[0]), img, h))

    out = {}
    for s, rows in items.items():
        if not rows:
            raise ValueError(f"no images for split {s!r} under {prefixes[s]!r} in {path}")
        rows.sort(key=lambda r: r[0])  # tar order is arbitrary; names make it deterministic
        out[s] = Split(np.stack([r[2] for r in rows]), np.array([r[1] for r in rows], np.int64),
                       [r[0] for r in rows], [r[3] for r in rows])
        _check_split(s, out[s], task, path)
    skipped.sort()
    _report_skipped(task, path, skipped, report)
    if cfile is not None:
        _save_cache(cfile, out, skipped)
    return out


# --------------------------------------------------------------------------- dedup

def dedup_splits(splits: dict[str, Split], names: dict[str, list[str]] | None = None
                 ) -> tuple[dict[str, Split], dict]:
    """Drop exact duplicates by content hash.

    Policy: within a split keep the first of each group; anything also in an earlier split
    (train < val < test) is a leak and is dropped from the later split.
    Uses ``Split.hashes`` (native resolution) when present, else hashes ``Split.images``.
    """
    order = [s for s in SPLITS if s in splits] + [s for s in splits if s not in SPLITS]
    members: dict[str, list[tuple[str, str]]] = {}  # hash -> [(split, name)]
    keep_idx, removed = {}, {}
    for s in order:
        sp = splits[s]
        hs = sp.hashes if sp.hashes is not None else [content_hash(im) for im in sp.images]
        nm = (names or {}).get(s) or sp.names or [f"{s}[{i}]" for i in range(len(sp))]
        keep = []
        for i, h in enumerate(hs):
            if h not in members:
                members[h] = []
                keep.append(i)
            members[h].append((s, nm[i]))
        keep_idx[s] = keep
        removed[s] = len(sp) - len(keep)
    groups = [m for m in members.values() if len(m) > 1]
    spanning = [m for m in groups if len({s for s, _ in m}) > 1]
    by_splits: dict[str, int] = {}
    for m in groups:
        key = "+".join(s for s in order if any(ms == s for ms, _ in m))
        by_splits[key] = by_splits.get(key, 0) + 1
    report = {
        "duplicate_groups": len(groups),
        "groups_spanning_splits": len(spanning),
        "groups_by_splits": by_splits,
        "removed": removed,
        "kept": {s: len(keep_idx[s]) for s in order},
        "examples": [[f"{s}:{n}" for s, n in m] for m in (spanning or groups)[:5]],
    }
    return {s: splits[s].subset(keep_idx[s]) for s in order}, report


# --------------------------------------------------------------------------- validation splits

_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.I)
_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.I)


def patient_id(filename: str) -> str:
    """Kermany chest X-ray file name -> patient id.

    ``person123_bacteria_456.jpeg`` -> ``person123``; ``IM-0115-0001.jpeg`` -> ``IM-0115``;
    ``NORMAL2-IM-1427-0001.jpeg`` -> ``NORMAL2-IM-1427``. Some normal patients have several
    images named ``IM-0011-0001.jpeg`` and ``IM-0011-0001-0002.jpeg``: the id is the ``IM-NNNN``
    part, not just the name minus its last ``-NNNN``, so these stay together.
    """
    base = Path(filename).name
    m = _PERSON.match(base) or _NORMAL.match(base)
    if not m:
        raise ValueError(f"cannot get a patient id from {filename!r} "
                         "(expected personNNN_bacteria|virus_MMM or [NORMAL2-]IM-NNNN-MMMM)")
    return m.group(1)


def _group_split(groups: list, labels, val_fraction: float, seed: int):
    """Whole groups to val, per class, until each class has ~val_fraction of its images in val."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    val = []
    for c in np.unique(labels):
        # a group belongs to the class of its first image (Kermany groups are single-class)
        gs = sorted(g for g, idx in members.items() if labels[idx[0]] == c)
        target = val_fraction * np.sum(labels == c)
        taken = 0
        for j in rng.permutation(len(gs)):
            if taken >= target:
                break
            val.extend(members[gs[j]])
            taken += len(members[gs[j]])
    val_idx = np.sort(np.array(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def patient_split(names, labels, val_fraction: float = 0.1, seed: int = 0):
    """-> (train_idx, val_idx): whole patients go to val, stratified per class, seeded."""
    return _group_split([patient_id(n) for n in names], labels, val_fraction, seed)


def stratified_split(labels, val_fraction: float = 0.1, seed: int = 0):
    """-> (train_idx, val_idx): per-image stratified, seeded split (no patient ids known)."""
    return _group_split(list(range(len(labels))), labels, val_fraction, seed)


# --------------------------------------------------------------------------- declared tasks

class TaskDataError(ValueError):
    """A task's data does not fit its declaration; ``field``: the declaration field to fix."""

    def __init__(self, msg: str, field: str = "path"):
        super().__init__(msg)
        self.field = field


# split folder names recognized when a declaration leaves `splits` to be found
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testing": "test"}


def task_source(task: TaskSpec | TaskSection, root=None) -> Path:
    """Where a task's data is: its path if absolute, else under the data root. An image tree
    that is not there may sit unpacked under the data root (its split folders directly)."""
    source, name = (task.source, task.name) if isinstance(task, TaskSpec) else (task.path,
                                                                                 task.name)
    p = Path(source).expanduser()
    if p.is_absolute():
        if not p.exists():
            raise FileNotFoundError(f"data for task {name!r} not found: {p}; check the "
                                    "task's path (absolute, or relative to the data root)")
        return p
    base = data_root(root)
    p = base / p
    dirs = task.split_dirs if isinstance(task, TaskSpec) else task.splits
    if not p.exists() and dirs and all((base / d).is_dir() for d in dirs.values()):
        return base
    if not p.exists():
        raise FileNotFoundError(f"data file for task {name!r} not found: {p} (a relative path "
                                f"is under the data root {base}; give an absolute path or set "
                                "data.root)")
    return p


def _source_path(root: Path, task: TaskSpec) -> Path:
    return task_source(task, root)


def _tree_listing(path: Path) -> tuple[list[str], set[str]]:
    """(files, folders) of a tree (a folder or a .tar) as relative posix names, without hidden
    files and folders."""
    files, dirs = [], set()
    if path.is_dir():
        for d, sub, names in os.walk(path):
            rel = Path(d).relative_to(path).as_posix()
            rel = "" if rel == "." else rel + "/"
            dirs.update(rel + x for x in sub)
            files += [rel + f for f in names]
    else:
        try:
            with tarfile.open(path) as tf:
                for m in tf.getmembers():
                    name = m.name.removeprefix("./").rstrip("/")
                    if name and name != ".":
                        (dirs.add(name) if m.isdir() else files.append(name) if m.isfile()
                         else None)
        except (tarfile.TarError, OSError) as e:
            raise TaskDataError(f"cannot open archive {path}: {e}; give a folder or a .tar of "
                                "class folders") from e
    hidden = (lambda n: any(p.startswith(".") or p == "__MACOSX" for p in n.split("/")))
    files = sorted(f for f in files if not hidden(f))
    for f in files:  # folders implied by the files' paths (a tar need not list them)
        parts = f.split("/")[:-1]
        dirs.update("/".join(parts[:i + 1]) for i in range(len(parts)))
    return files, {d for d in dirs if not hidden(d)}


def _detect_splits(path: Path, files, dirs) -> dict:
    """split -> folder of a tree: train/ [val/] test/ of class folders (also under one top
    folder), else one pool of class folders ("." or the top folder), read as train."""
    names = [f for f in files if not _not_an_image(f)] + sorted(dirs)
    top = {n.split("/")[0] for n in names}
    base = ""
    if (len(top) == 1 and next(iter(top)).lower() not in _SPLIT_NAMES
            and any(f.count("/") >= 2 for f in names)):
        base = next(iter(top)) + "/"  # one folder holding the tree (an archive's usual root)
        top = {n[len(base):].split("/")[0] for n in names if n.startswith(base)}
    named = sorted(t for t in top if t.lower() in _SPLIT_NAMES)
    if not named:
        return {"train": base.rstrip("/") or "."}
    other = sorted(top - set(named))
    if other:
        raise TaskDataError(f"{path}: {other} next to the split folders {named}: a tree is "
                            "either split folders (train/ [val/] test/) of class folders or one "
                            "pool of class folders; move them into a split folder or set "
                            "`splits`", "splits")
    out = {}
    for t in named:
        if _SPLIT_NAMES[t.lower()] in out:
            raise TaskDataError(f"{path}: two folders for split {_SPLIT_NAMES[t.lower()]!r} "
                                f"({out[_SPLIT_NAMES[t.lower()]]}, {base + t}); set `splits`",
                                "splits")
        out[_SPLIT_NAMES[t.lower()]] = base + t
    return out


def scan_tree(path: Path, split_dirs: dict, classes=None) -> list[str]:
    """Check a class-per-folder tree against its split folders (and ``classes`` when listed)
    -> the class names (``classes``, or the folders' names sorted). Every problem is a
    TaskDataError naming the file or folder and the fix."""
    files, dirs = _tree_listing(path)
    found: dict[str, int] = {}
    for split, d in split_dirs.items():
        pre = _prefix(d)
        if pre and pre.rstrip("/") not in dirs:
            raise TaskDataError(f"{path}: split folder {d!r} (split {split}) not found", "splits")
        for sub in dirs:
            rel = sub[len(pre):]
            if sub.startswith(pre) and rel and "/" not in rel:
                found.setdefault(f"{pre}{rel}", 0)
        for f in files:
            rel = f[len(pre):]
            if not f.startswith(pre) or _not_an_image(rel):
                continue
            if rel.count("/") != 1:
                raise TaskDataError(f"{path}: {f!r} is not in a class folder: expected "
                                    f"{pre}<class>/<image file>")
            if not rel.lower().endswith(IMAGE_EXTS):
                raise TaskDataError(f"{path}: {f!r} is not an image file ({', '.join(IMAGE_EXTS)}"
                                    "); convert it or move it out of the class folder")
            key = f"{pre}{rel.split('/')[0]}"
            found[key] = found.get(key, 0) + 1
    empty = sorted(k for k, n in found.items() if n == 0)
    if empty:
        raise TaskDataError(f"{path}: class folder {empty[0]!r} has no images; add images or "
                            "remove the folder")
    names = sorted({k.rsplit("/", 1)[-1] for k in found})
    if classes is None:
        if len(names) < 2:
            raise TaskDataError(f"{path}: one class only ({names}) in split folders "
                                f"{list(split_dirs.values())}; a task needs at least 2 class "
                                "folders", "classes")
        return names
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise TaskDataError(f"{path}: folder {unknown[0]!r} is not one of classes "
                            f"{list(classes)}; add it to classes (or use classes: auto) or "
                            "remove the folder", "classes")
    return list(classes)  # (a listed class without images: a subset; splits need 2 classes)


def read_manifest(path: Path, classes=None) -> list[dict]:
    """A CSV manifest -> rows {path, label, split, patient, line}. Columns: path, label, and
    optionally split (train/val/test) and patient; paths relative to the CSV's folder.
    ``classes`` (listed): a label not in them is an error."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in reader.fieldnames or []}
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TaskDataError(f"{path}: cannot read the manifest ({e})") from e
    missing = [c for c in ("path", "label") if c not in cols]
    if missing:
        raise TaskDataError(f"{path}: no column {missing} (has {list(cols)}); the first line "
                            "names the columns: path,label[,split][,patient]")
    pcol = cols.get("patient") or cols.get("patient_id")
    rows = []
    for i, r in enumerate(raw, start=2):
        p, label = (r.get(cols["path"]) or "").strip(), (r.get(cols["label"]) or "").strip()
        split = (r.get(cols["split"]) or "").strip().lower() if "split" in cols else None
        where = f"{path} line {i}"
        if not p or not label:
            raise TaskDataError(f"{where}: empty path or label")
        if split is not None and split not in SPLITS:
            raise TaskDataError(f"{where}: split {split!r} is not one of {list(SPLITS)}")
        if classes is not None and label not in classes:
            raise TaskDataError(f"{where}: label {label!r} is not one of classes "
                                f"{list(classes)}; add it to classes (or use classes: auto) or "
                                "fix the row", "classes")
        if not p.lower().endswith(IMAGE_EXTS):
            raise TaskDataError(f"{where}: {p!r} is not an image file ({', '.join(IMAGE_EXTS)})")
        if not (path.parent / p).is_file():
            raise TaskDataError(f"{where}: image {path.parent / p} not found (paths are "
                                "relative to the manifest's folder)")
        rows.append({"path": p, "label": label, "split": split,
                     "patient": (r.get(pcol) or "").strip() or None if pcol else None,
                     "line": i})
    if not rows:
        raise TaskDataError(f"{path}: the manifest lists no images")
    return rows


def resolve_task(decl: TaskSection, root=None) -> TaskSection:
    """A declaration with ``classes: auto`` (and an image tree without ``splits``) -> the same
    with them listed, found in the files (checked: see ``scan_tree``, ``read_manifest``)."""
    if decl.classes != "auto" and not (decl.format == "image_dir" and decl.splits is None):
        return decl
    if decl.format == "npz":
        raise TaskDataError(f"task {decl.name!r}: classes auto needs class folders or a "
                            "manifest's labels; an npz has label numbers only: list the class "
                            "names in label order", "classes")
    try:
        src = task_source(decl, root)
    except FileNotFoundError as e:
        raise TaskDataError(f"{e}") from None
    auto = decl.classes == "auto"
    if decl.format == "image_dir":
        if src.is_file() and not tarfile.is_tarfile(src):
            raise TaskDataError(f"{src} is neither a folder nor a .tar archive (format "
                                "image_dir)")
        splits = decl.splits or _detect_splits(src, *_tree_listing(src))
        update = {"splits": splits,
                  "classes": scan_tree(src, splits, None if auto else decl.classes)}
    else:
        rows = read_manifest(src, None if auto else decl.classes)
        labels = sorted({r["label"] for r in rows})
        if len(labels) < 2:
            raise TaskDataError(f"{src}: one class only ({labels}); a task needs at least 2",
                                "classes")
        update = {"classes": labels}
    from pydantic import ValidationError
    try:
        return TaskSection.model_validate({**decl.model_dump(), **update})
    except ValidationError as e:
        err = e.errors()[0]
        raise TaskDataError(f"{err['msg'].removeprefix('Value error, ')} (classes found in "
                            f"{src}: {update['classes']})", "negative_class") from None


# --------------------------------------------------------------------------- manifests

def load_manifest(path, task: TaskSpec, size: int | None = None, use_cache: bool = True,
                  report: dict | None = None, pre: Preprocess = Preprocess()
                  ) -> dict[str, Split]:
    """A CSV manifest (``read_manifest``) -> splits (rows without a split column: "train");
    decoded like an image tree and cached the same way, keyed by the manifest's bytes and every
    image's name, size, mtime and ctime."""
    path = Path(path)
    size = size or task.size
    rows = read_manifest(path, task.classes)
    cfile = _cache_file(task, size, source_state(path, task), pre) if use_cache else None
    if cfile is not None and cfile.is_file():
        cached = _load_cache(cfile)
        if cached is not None:
            return cached[0]
    items: dict[str, list] = {}
    for r in rows:
        img, h = _decode((path.parent / r["path"]).read_bytes(), r["path"], path, task.channels,
                         size, pre, task.size)
        items.setdefault(r["split"] or "train", []).append(
            (r["path"], task.classes.index(r["label"]), img, h))
    out = {}
    for s in [s for s in SPLITS if s in items]:
        rs = items[s]
        out[s] = Split(np.stack([r[2] for r in rs]), np.array([r[1] for r in rs], np.int64),
                       [r[0] for r in rs], [r[3] for r in rs])
        _check_split(s, out[s], task, path)
    if cfile is not None:
        _save_cache(cfile, out, [])
    return out


# --------------------------------------------------------------------------- tasks

def _groups(task: TaskSpec, rule: dict, names, patients: dict) -> list:
    """Per image, the unit a split keeps together: itself, or its patient."""
    if rule["by"] == "image":
        return list(range(len(names)))
    out = []
    for n in names:
        if patients.get(n):
            out.append(patients[n])
            continue
        m = re.search(rule["pattern"], Path(n).name) if rule["pattern"] else None
        if m is None:
            raise TaskDataError(f"task {task.name!r}: no patient id for {n!r} (pattern "
                                f"{rule['pattern']!r}, no patient in a manifest); fix the "
                                "pattern, fill the manifest's patient column or use by: image",
                                "val_split")
        out.append(next((g for g in m.groups() if g), m.group(0)))
    return out


def load_task(name_or_spec, root=None, size: int | None = None, channels: int | None = None, *,
              dedup: bool | None = None, val_fraction: float | None = None,
              seed: int | None = None, with_report: bool = False,
              preprocess: Preprocess | dict | None = None):
    """-> {train,val,test: Split} (whichever exist), uint8 NHWC at ``size``/``channels``.

    ``name_or_spec``: a built-in task's name, a ``TaskSpec`` or a declaration dict
    (``TaskSpec.to_dict``). ``preprocess``: the style-removing steps (``medimage.Preprocess``
    or its dict); None = the task's default (``TaskSpec.preprocess``).

    dedup defaults to True for image trees and manifests (known duplicate leaks) and False for
    the official MedMNIST npz splits. A split the source lacks is carved from train by the
    task's ``test_split``, then ``val_split`` (``val_fraction``, ``seed``: override the val
    rule's). with_report=True returns (splits, report dict).
    """
    task = as_spec(name_or_spec)
    src = task_source(task, root)
    size = size or task.size
    pre = (task.preprocess if preprocess is None else preprocess
           if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess))
    report: dict = {"task": task.name, "source": str(src), "preprocess": pre.to_dict()}
    patients: dict = {}
    if task.fmt == "npz":
        splits = load_npz(src, task)
    elif task.fmt == "image_tar":
        if src.name == Path(task.source).name:  # (not a tree unpacked into the data root)
            scan_tree(src, task.split_dirs, task.classes)  # empty class folders, stray files
        # decoded straight to `size` (one resize) and preprocessed: only channels are left
        splits = load_image_tree(src, task, size, report=report, pre=pre)
    elif task.fmt == "csv":
        splits = load_manifest(src, task, size, report=report, pre=pre)
        patients = {r["path"]: r["patient"] for r in read_manifest(src, task.classes)}
    else:
        raise ValueError(f"task {task.name!r} has unknown fmt {task.fmt!r}")
    if dedup is None:
        dedup = task.fmt != "npz"
    if dedup:
        splits, report["dedup"] = dedup_splits(splits)
        if report["dedup"]["duplicate_groups"]:
            log.info("%s: removed duplicates %s", task.name, report["dedup"]["removed"])
    val_rule = task.val_split and {**task.val_split,
                                   **({"fraction": val_fraction} if val_fraction else {}),
                                   **({"seed": seed} if seed is not None else {})}
    for which, rule in (("test", task.test_split), ("val", val_rule)):
        if rule and "train" in splits and which not in splits:
            tr = splits["train"]
            keep, take = _group_split(_groups(task, rule, tr.names, patients), tr.labels,
                                      rule["fraction"], rule["seed"])
            splits = {**splits, "train": tr.subset(keep), which: tr.subset(take)}
            splits = {s: splits[s] for s in SPLITS if s in splits}
            for s in ("train", which):
                _check_split(s, splits[s], task, f"{src} (after carving {which} from train)")
            report[f"{which}_from_train"] = {k: rule[k] for k in ("by", "fraction", "seed")}
    for sp in splits.values():
        sp.images = to_model_input(sp.images, task.fmt, size,
                                   task.channels if channels is None else channels,
                                   pre if task.fmt == "npz" else None)
    report["sizes"] = {s: len(v) for s, v in splits.items()}
    return (splits, report) if with_report else splits


def as_spec(task) -> TaskSpec:
    """A built-in task's name, a TaskSpec or a declaration dict -> TaskSpec."""
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, dict):
        from .tasks import spec_from_dict
        return spec_from_dict(task)
    return get_task(task)


# --------------------------------------------------------------------------- multi-task pools

@dataclass
class MultiTaskData:
    images: np.ndarray        # uint8 (N,H,W,C), all tasks at one size and channel count
    labels: np.ndarray        # int64 (N,), per-task class index
    task_ids: np.ndarray      # int64 (N,), index into `tasks`
    tasks: tuple[str, ...]
    reports: dict = field(default_factory=dict)  # per-task load reports (dedup, val carving)
    _nchw: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def tensor(self) -> torch.Tensor:
        """uint8 (N,C,H,W) tensor, made once and reused by every epoch."""
        if self._nchw is None:
            self._nchw = torch.from_numpy(self.images).permute(0, 3, 1, 2).contiguous()
        return self._nchw


def build_multitask(task_names, root=None, size: int = 28, channels: int = 1,
                    preprocess: dict | None = None, **load_kw) -> dict[str, MultiTaskData]:
    """Pool several tasks per split; a split that a task lacks is simply absent from its pool.
    ``task_names``: built-in names or TaskSpecs (``train.tasks_of``). ``preprocess``: task
    name -> its preprocessing (a task not in it: its default)."""
    specs = [as_spec(t) for t in task_names]
    names = tuple(t.name for t in specs)
    loaded = [load_task(t, root, size, channels, with_report=True,
                        preprocess=(preprocess or {}).get(t.name), **load_kw) for t in specs]
    out = {}
    for s in SPLITS:
        parts = [(t, sp[s]) for t, (sp, _) in enumerate(loaded) if s in sp]
        if not parts:
            continue
        out[s] = MultiTaskData(
            np.concatenate([p.images for _, p in parts]),
            np.concatenate([p.labels for _, p in parts]),
            np.concatenate([np.full(len(p), t, np.int64) for t, p in parts]),
            names, {n: rep for n, (_, rep) in zip(names, loaded)})
    return out


def iterate_batches(data: MultiTaskData, batch_size: int, shuffle: bool,
                    generator: torch.Generator, sampling: str = "proportional",
                    epoch_size: int | None = None, drop_last: bool = False):
    """Yield (images float (B,C,H,W) 0..255, labels int64, task_ids int64).

    proportional: every sample once per epoch (shuffled or in order).
    balanced: each draw picks a task with equal probability, then cycles through a shuffled
    list of that task's samples, so small tasks are not drowned by large ones.
    Everything is in memory, so no DataLoader workers: a worker process costs more than
    indexing an in-memory tensor.
    """
    if sampling not in ("proportional", "balanced"):
        raise ValueError(f"sampling must be 'proportional' or 'balanced', got {sampling!r}")
    n = len(data)
    epoch_size = n if epoch_size is None else int(epoch_size)
    if n == 0 or epoch_size <= 0:
        return
    if sampling == "proportional":
        reps = -(-epoch_size // n)
        perms = [torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
                 for _ in range(reps)]
        order = torch.cat(perms)[:epoch_size]
    else:
        if not shuffle:
            raise ValueError("sampling='balanced' is random by nature; use shuffle=True")
        tids = torch.from_numpy(data.task_ids)
        present = torch.unique(tids)
        pick = present[torch.randint(len(present), (epoch_size,), generator=generator)]
        order = torch.empty(epoch_size, dtype=torch.int64)
        for t in present:
            slots = (pick == t).nonzero().flatten()
            pool = (tids == t).nonzero().flatten()
            reps = -(-len(slots) // len(pool))
            seq = torch.cat([pool[torch.randperm(len(pool), generator=generator)]
                             for _ in range(max(reps, 1))])
            order[slots] = seq[:len(slots)]
    x_all = data.tensor()
    y_all = torch.from_numpy(data.labels)
    t_all = torch.from_numpy(data.task_ids)
    pin = torch.cuda.is_available()  # pinned host memory makes .to(device, non_blocking=True) async
    for i in range(0, epoch_size, batch_size):
        idx = order[i:i + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        batch = (x_all[idx].float(), y_all[idx], t_all[idx])
        yield tuple(b.pin_memory() for b in batch) if pin else batch
