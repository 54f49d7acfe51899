"""Real test images for verification, through the project data layer
(``brevitas_models.data.load_task``: preprocessing, channel conversion, resize, dedup)."""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np

from brevitas_models.data import _source_path, data_root, load_task
from brevitas_models.tasks import get_task
from medimage import Preprocess


@lru_cache(maxsize=32)
def _load_split(task: str, split: str, size: int, channels: int, root: Optional[str],
                pre: Optional[Preprocess]):
    splits = load_task(task, root=root, size=size, channels=channels, preprocess=pre)
    if split not in splits:
        raise ValueError(f"task {task!r} has no {split!r} split (has {sorted(splits)})")
    sp = splits[split]
    src = _source_path(data_root(root), get_task(task))
    return sp.images, np.asarray(sp.labels).reshape(-1), str(src)


def load_images(task: str, split: str, n: int, size: int, channels: int,
                root: Optional[str] = None, seed: int = 0, preprocess=None):
    """-> (uint8 NHWC images [n], labels [n], source file path): a seeded, class-stratified
    sample of ``n`` images of one task's split (all of them if the split is smaller).
    ``preprocess``: a ``medimage.Preprocess`` or its dict (a model's metadata); None = the
    task's default."""
    pre = None if preprocess is None else (
        preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess))
    imgs, labels, src = _load_split(task, split, size, channels, root, pre)
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
