"""Shortcut audit: how well can the label be predicted from image *style* alone?

A data set assembled from several collections can let a model learn the collection (scanner,
crop, padding, JPEG settings) instead of the disease. In the Nickparvar brain MRI set, for
example, ``notumor`` comes from another source than the three tumor classes. The audit fits
a small classifier on cheap style features that carry no anatomy and reports, per class pair
(and for all classes together), its cross-validated accuracy next to chance. A pair that is
easy to tell apart from style alone is a warning: a model's score on it may be the style.

Style features (``style_features``; names in ``FEATURE_NAMES``), all on the gray image
(RGB -> ITU-R 601 luma, as the data layer does) scaled to 0..1:

- ``hist_00..hist_15``: share of pixels in 16 equal intensity bins;
- ``mean``, ``std``, ``p01..p99``: intensity mean, spread and percentiles;
- ``dark_share``, ``frame_dark_share``: share of near-black pixels (<= ``DARK_LEVEL``) in the
  whole image and in an outer frame ``FRAME_FRACTION`` of the side wide (padding, tight crops);
- ``bbox_height``, ``bbox_width``, ``bbox_area``: bounding box of the foreground (rows and
  columns where more than ``FOREGROUND_MIN_SHARE`` of the pixels are above ``DARK_LEVEL``),
  relative to the frame (how much of the frame the head/body fills);
- ``thumb_0_0..thumb_3_3``: a 4x4 mean-pooled thumbnail (overall layout, no anatomy);
- ``diff_horizontal``, ``diff_vertical``, ``laplacian_energy``: mean absolute difference of
  neighbouring pixels and mean absolute Laplacian (sharpness, JPEG and resize traces).

Caveat: "intensity" and "thumbnail" features see the whole image at a glance; a finding that
changes the whole image (e.g. opaque lungs in pneumonia) can show up there, so a high score
is a warning to check, not proof of a shortcut. The score per feature family
(``FEATURE_FAMILIES``) says which kind of style carries it: "layout" (padding, crop) and
"traces" (sharpness, JPEG) carry no finding at all.

The classifier is scikit-learn's logistic regression on standardized features, scored by
stratified k-fold cross-validation. Each class is subsampled to at most ``MAX_PER_CLASS``
images (seeded) to keep the audit to seconds.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DARK_LEVEL = 10 / 255           # "near-black": JPEG noise in black padding stays below this
FRAME_FRACTION = 0.1            # outer frame width, as a share of the image side
FOREGROUND_MIN_SHARE = 0.05     # a row/column is foreground when this share is not dark
HIST_BINS = 16
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
THUMB_SIDE = 4
MAX_PER_CLASS = 2000
FOLDS = 5
HIGH, MODERATE = 0.85, 0.70     # balanced-accuracy thresholds of the levels

# Feature names by family, in the column order of ``style_features``. The family score says
# which kind of style carries a shortcut: "layout" (padding, crop) and "traces" (sharpness,
# JPEG) say nothing about a disease; "intensity" and "thumbnail" can also pick up findings
# that change the whole image (e.g. opaque lungs).
FEATURE_FAMILIES = {
    "intensity": ([f"hist_{i:02d}" for i in range(HIST_BINS)] + ["mean", "std"]
                  + [f"p{p:02d}" for p in PERCENTILES]),
    "layout": ["dark_share", "frame_dark_share", "bbox_height", "bbox_width", "bbox_area"],
    "thumbnail": [f"thumb_{r}_{c}" for r in range(THUMB_SIDE) for c in range(THUMB_SIDE)],
    "traces": ["diff_horizontal", "diff_vertical", "laplacian_energy"],
}
FEATURE_NAMES = tuple(n for names in FEATURE_FAMILIES.values() for n in names)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _gray(images: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W,C) -> float32 (N,H,W) in 0..1."""
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N,H,W,1|3), got {images.dtype} {images.shape}")
    x = images.astype(np.float32)
    x = x[..., 0] if images.shape[-1] == 1 else x @ _LUMA
    return x / 255.0


def _bbox_extent(foreground_share: np.ndarray) -> np.ndarray:
    """(N,L) share of foreground pixels per row (or column) -> (N,) extent of the foreground
    rows as a share of L (first to last foreground row; 0 when there is none)."""
    is_fg = foreground_share > FOREGROUND_MIN_SHARE
    length = is_fg.shape[1]
    first = np.argmax(is_fg, axis=1)
    last = length - 1 - np.argmax(is_fg[:, ::-1], axis=1)
    return np.where(is_fg.any(axis=1), (last - first + 1) / length, 0.0)


def style_features(images: np.ndarray) -> np.ndarray:
    """uint8 images (N,H,W,C), C 1 or 3 -> float64 (N, len(FEATURE_NAMES)); see the module
    docstring for what each feature is."""
    x = _gray(images)
    n, h, w = x.shape
    flat = x.reshape(n, -1)
    bins = np.minimum((flat * HIST_BINS).astype(np.int64), HIST_BINS - 1)
    hist = np.stack([(bins == b).mean(axis=1) for b in range(HIST_BINS)], axis=1)
    stats = np.column_stack([flat.mean(axis=1), flat.std(axis=1),
                             np.percentile(flat, PERCENTILES, axis=1).T])

    dark = x <= DARK_LEVEL
    frame = np.zeros((h, w), bool)
    k = max(1, round(FRAME_FRACTION * min(h, w)))
    frame[:k], frame[-k:], frame[:, :k], frame[:, -k:] = True, True, True, True
    bbox_h = _bbox_extent((~dark).mean(axis=2))
    bbox_w = _bbox_extent((~dark).mean(axis=1))
    layout = np.column_stack([dark.mean(axis=(1, 2)), dark[:, frame].mean(axis=1),
                              bbox_h, bbox_w, bbox_h * bbox_w])

    rows = np.linspace(0, h, THUMB_SIDE + 1).astype(int)
    cols = np.linspace(0, w, THUMB_SIDE + 1).astype(int)
    thumb = np.column_stack([x[:, rows[r]:rows[r + 1], cols[c]:cols[c + 1]].mean(axis=(1, 2))
                             for r in range(THUMB_SIDE) for c in range(THUMB_SIDE)])

    laplacian = (4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1]
                 - x[:, 1:-1, :-2] - x[:, 1:-1, 2:])
    traces = np.column_stack([np.abs(np.diff(x, axis=2)).mean(axis=(1, 2)),
                              np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)),
                              np.abs(laplacian).mean(axis=(1, 2))])
    return np.hstack([hist, stats, layout, thumb, traces]).astype(np.float64)


def _level(balanced_accuracy: float) -> str:
    if balanced_accuracy >= HIGH:
        return "high"
    return "moderate" if balanced_accuracy >= MODERATE else "low"


def _warning(result: dict) -> str:
    """One plain line for a "high" group, naming the feature family that carries most."""
    by_family = result["balanced_accuracy_by_family"]
    # on a tie, name the family that cannot be the finding (a black frame also shifts intensity)
    family = max(by_family, key=lambda f: (by_family[f], f in ("layout", "traces")))
    if family in ("layout", "traces"):
        meaning = ("padding, crop or sharpness differ between the classes: a model may learn "
                   "the image source instead of the disease")
    else:
        meaning = ("whole-image brightness or layout differs: the image source or the finding "
                   "itself; check on images from one source before trusting the model's score")
    return (f"{result['pair']}: told apart from image style alone with balanced accuracy "
            f"{result['balanced_accuracy']:.2f} (chance {result['balanced_chance']:.2f}); "
            f"strongest single family {family} ({by_family[family]:.2f}): {meaning}")


def _subsample(labels: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    """Sorted indices: every class capped at ``max_per_class`` images, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(rng.choice(idx, max_per_class, replace=False) if len(idx) > max_per_class
                    else idx)
    return np.sort(np.concatenate(keep))


def _predict(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Cross-validated predictions of the style classifier (every image predicted by a model
    that did not see it)."""
    smallest_class = int(np.bincount(labels)[np.unique(labels)].min())
    cv = StratifiedKFold(n_splits=min(folds, smallest_class), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(),
                          LogisticRegression(max_iter=2000, random_state=seed))
    return cross_val_predict(model, features, labels, cv=cv)


def _score(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> dict:
    """Scores of the style classifier on one group of classes, with all features and with
    each family alone."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    predicted = _predict(features, labels, folds, seed)
    balanced = float(balanced_accuracy_score(labels, predicted))
    by_family = {}
    for family, names in FEATURE_FAMILIES.items():
        columns = [FEATURE_NAMES.index(n) for n in names]
        family_predicted = _predict(features[:, columns], labels, folds, seed)
        by_family[family] = round(float(balanced_accuracy_score(labels, family_predicted)), 4)
    return {"n": int(len(labels)), "accuracy": round(float(accuracy_score(labels, predicted)), 4),
            "balanced_accuracy": round(balanced, 4),
            "chance": round(float(counts.max() / counts.sum()), 4),  # majority share
            "balanced_chance": round(1 / len(counts), 4),
            "level": _level(balanced),
            "balanced_accuracy_by_family": by_family}


def audit(images: np.ndarray, labels, class_names, seed: int = 0, folds: int = FOLDS,
          max_per_class: int = MAX_PER_CLASS) -> dict:
    """Style-only predictability of the labels, per class pair and (with more than two
    classes) for all classes together.

    -> {"n_images", "per_class", "max_per_class", "folds", "seed", "features", "classifier",
        "pairs": [{"pair", "classes", "n", "accuracy", "balanced_accuracy", "chance",
                   "balanced_chance", "level", "balanced_accuracy_by_family", "warning"}],
        "warnings": [...]}
    ``chance`` is the majority share (what always guessing the larger class scores);
    ``balanced_chance`` is 1/classes. ``level`` is "high" at balanced accuracy >= 0.85,
    "moderate" >= 0.70, else "low"; every "high" group gets a plain warning.
    ``balanced_accuracy_by_family`` repeats the fit with each of ``FEATURE_FAMILIES`` alone.
    """
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    keep = _subsample(labels, max_per_class, seed)
    features, labels = style_features(images[keep]), labels[keep]
    present = [int(c) for c in np.unique(labels)]
    if len(present) < 2:
        raise ValueError("the audit needs at least two classes")
    groups = [(a, b) for i, a in enumerate(present) for b in present[i + 1:]]
    if len(present) > 2:
        groups.append(tuple(present))
    pairs, warnings = [], []
    for group in groups:
        mask = np.isin(labels, group)
        names = [class_names[c] for c in group]
        result = {"pair": " vs ".join(names) if len(group) == 2 else "all classes",
                  "classes": names, **_score(features[mask], labels[mask], folds, seed),
                  "warning": None}
        if result["level"] == "high":
            result["warning"] = _warning(result)
            warnings.append(result["warning"])
        pairs.append(result)
    return {"n_images": int(len(labels)),
            "per_class": {class_names[c]: int((labels == c).sum()) for c in present},
            "max_per_class": max_per_class, "folds": folds, "seed": seed,
            "features": len(FEATURE_NAMES),
            "classifier": "StandardScaler + LogisticRegression, stratified k-fold",
            "pairs": pairs, "warnings": warnings}


def audit_task(task, root=None, size: int = 64, split: str = "train", seed: int = 0,
               preprocess=None) -> dict:
    """The audit of one task's ``split`` (a built-in task's name or a ``TaskSpec``, e.g. one
    declared in a config), loaded as the models see it (gray, ``size`` px, duplicates removed
    as ``load_task`` does, ``preprocess`` as ``load_task`` takes it: None = the task's
    default), with the data report of the load."""
    from .data import load_task
    from .tasks import get_task

    spec = task if not isinstance(task, str) else get_task(task)
    name = spec.name
    splits, report = load_task(spec, root=root, size=size, channels=1, with_report=True,
                               preprocess=preprocess)
    if split not in splits:
        raise ValueError(f"task {name!r} has no split {split!r} (has {sorted(splits)})")
    data = splits[split]
    result = audit(data.images, data.labels, spec.classes, seed=seed)
    result["warnings"] = [f"{name}: {w}" for w in result["warnings"]]
    return {"task": name, "split": split, "size": size, "preprocess": report["preprocess"],
            **result, "data_report": report}


def split_shift(name: str, root=None, size: int = 64, seed: int = 0, preprocess=None,
                splits=("val", "test")) -> dict:
    """Can style alone tell a class's train images from its validation / test images? Per
    class, the audit's classifier on "train" vs the other split. A validation split carved
    from train scores chance by construction; a test split from another collection, or shot
    another way, scores high, and then validation accuracy cannot predict test accuracy.

    -> {"task", "size", "preprocess", "pairs": [{"class", "splits": ["train", s], "n",
        "balanced_accuracy", "balanced_accuracy_by_family", "level"}]}"""
    from .data import load_task
    from .tasks import get_task

    loaded, report = load_task(name, root=root, size=size, channels=1, with_report=True,
                               preprocess=preprocess)
    classes = get_task(name).classes
    pairs = []
    for other in splits:
        if other not in loaded or "train" not in loaded:
            continue
        a, b = loaded["train"], loaded[other]
        for c in sorted(set(a.labels.tolist()) & set(b.labels.tolist())):
            xa, xb = a.images[a.labels == c], b.images[b.labels == c]
            r = audit(np.concatenate([xa, xb]), np.r_[np.zeros(len(xa), int),
                                                      np.ones(len(xb), int)],
                      ["train", other], seed=seed)["pairs"][0]
            pairs.append({"class": classes[c], "splits": ["train", other], "n": r["n"],
                          "balanced_accuracy": r["balanced_accuracy"],
                          "balanced_accuracy_by_family": r["balanced_accuracy_by_family"],
                          "level": r["level"]})
    return {"task": name, "size": size, "preprocess": report["preprocess"], "pairs": pairs}


def format_table(results: list[dict]) -> str:
    """Plain-text table of ``audit_task`` results, one line per class group."""
    lines = [f"{'task':<16} {'pair':<34} {'n':>6} {'bal_acc':>8} {'chance':>7} {'level':<8}"]
    for r in results:
        pre = r.get("preprocess") or {}
        steps = (["crop"] if pre.get("crop") else []) + (
            [pre["normalize"]] if pre.get("normalize", "none") != "none" else [])
        lines.append(f"{r['task']}: preprocessing {' + '.join(steps) or 'none'}")
        for p in r["pairs"]:
            lines.append(f"{r['task']:<16} {p['pair']:<34} {p['n']:>6} "
                         f"{p['balanced_accuracy']:>8.3f} {p['balanced_chance']:>7.3f} "
                         f"{p['level']:<8}")
    lines += [w for r in results for w in r["warnings"]]
    return "\n".join(lines)
