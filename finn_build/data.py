"""Real test images for verification, through the project data layer.

``brevitas_models.data.load_task`` is the project's loader (channel conversion, resize,
dedup); if it cannot be imported the MedMNIST npz files are read directly.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fallback_root(root: Optional[str]) -> Path:
    if root:
        return Path(root)
    here = Path(__file__).resolve().parents[1]
    return here.parent / "shared" / "data"


@lru_cache(maxsize=32)
def _load_split(task: str, split: str, size: int, channels: int, root: Optional[str]):
    try:
        from brevitas_models.data import load_task
        from brevitas_models.tasks import get_task
    except ImportError:  # pragma: no cover - project data layer missing
        load_task = None
    if load_task is not None:
        splits = load_task(task, root=root, size=size, channels=channels)
        if split not in splits:
            raise ValueError(f"task {task!r} has no {split!r} split (has {sorted(splits)})")
        sp = splits[split]
        from brevitas_models.data import _source_path, data_root  # noqa: PLC2701
        src = _source_path(data_root(root), get_task(task))
        return sp.images, np.asarray(sp.labels).reshape(-1), str(src)
    path = _fallback_root(root) / f"{task}_28.npz"
    d = np.load(path)
    imgs = d[f"{split}_images"]
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    if imgs.shape[-1] != channels:
        if channels == 3:
            imgs = np.repeat(imgs, 3, axis=-1)
        else:
            luma = imgs.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            imgs = np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    return imgs, d[f"{split}_labels"].reshape(-1), str(path)


def load_images(task: str, split: str, n: int, size: int, channels: int,
                root: Optional[str] = None, seed: int = 0):
    """-> (uint8 NHWC images [n], labels [n], source file path): a seeded, class-stratified
    sample of ``n`` images of one task's split (all of them if the split is smaller)."""
    imgs, labels, src = _load_split(task, split, size, channels, root)
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
