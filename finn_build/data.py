"""Real test images for verification, through the project data layer
(``brevitas_models.data.load_task``: preprocessing, channel conversion, resize, dedup).

A task is read as the model's metadata describes it (``model.meta.json``: each task's "task"
declaration, see ``brevitas_models.export.model_meta``), so a build of a run trained on a
user's own task needs no registry entry; a name alone is a built-in task.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Optional

import numpy as np

from brevitas_models.data import load_task, task_source
from brevitas_models.tasks import TaskSpec, get_task, spec_from_dict
from medimage import Preprocess

def task_spec(task) -> TaskSpec:
    """A TaskSpec, a metadata task entry (with its "task" declaration), a declaration, or a
    built-in task's name -> TaskSpec."""
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, dict):
        decl = task.get("task") if "format" not in task else task
        return spec_from_dict(decl) if decl else get_task(task["name"])
    return get_task(task)


@lru_cache(maxsize=32)
def _load_split(task_json: str, split: str, size: int, channels: int, root: Optional[str],
                pre: Optional[Preprocess]):
    task = spec_from_dict(json.loads(task_json))
    splits = load_task(task, root=root, size=size, channels=channels, preprocess=pre)
    if split not in splits:
        raise ValueError(f"task {task.name!r} has no {split!r} split (has {sorted(splits)})")
    sp = splits[split]
    return sp.images, np.asarray(sp.labels).reshape(-1), source_file(task, root)


def source_file(task: TaskSpec, root=None) -> str:
    """The file whose sha256 stands for a task's data (a build records it): the npz or .tar
    itself; for a folder or a manifest, its ``source_state`` (every image's name, size, mtime,
    ctime; the manifest's sha256) written under the data cache."""
    from brevitas_models.data import cache_dir, source_state
    from brevitas_models.files import write_atomic

    src = task_source(task, root)
    if task.fmt != "csv" and not src.is_dir():
        return str(src)
    text = json.dumps(source_state(src, task)) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    out = cache_dir() / "sources" / f"{task.name}-{digest}.txt"
    if not out.is_file():
        write_atomic(out, lambda tmp: tmp.write_text(text), unique=True)
    return str(out)


def load_images(task, split: str, n: int, size: int, channels: int,
                root: Optional[str] = None, seed: int = 0, preprocess=None):
    """-> (uint8 NHWC images [n], labels [n], source file path): a seeded, class-stratified
    sample of ``n`` images of one task's split (all of them if the split is smaller).
    ``task``: see ``task_spec``. ``preprocess``: a ``medimage.Preprocess`` or its dict (a
    model's metadata); None = the task's default."""
    pre = None if preprocess is None else (
        preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess))
    spec = task_spec(task)
    imgs, labels, src = _load_split(json.dumps(spec.to_dict(), sort_keys=True), split, size,
                                    channels, root, pre)
    if n >= len(imgs):
        idx = np.arange(len(imgs))
    else:
        rng = np.random.default_rng(seed)
        # round-robin over classes, each class shuffled: balanced where possible
        by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
        idx, k = [], 0
        while len(idx) < n:
            for arr in by_class:
                if k < len(arr) and len(idx) < n:
                    idx.append(arr[k])
            k += 1
        idx = np.sort(np.array(idx))
    return imgs[idx], labels[idx], src
