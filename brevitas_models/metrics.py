"""Evaluation metrics for single- and multi-task classifiers.

Every value returned is a plain Python int/float/str/list/dict (or None), so
results can go straight into JSON.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
)

from medimage import decision as rule

OTHER_TASK = "other task"
ECE_BINS = 15


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``: ``medimage.decision.probabilities`` at T = 1."""
    return np.moveaxis(rule.probabilities(np.moveaxis(np.asarray(x), axis, -1)), -1, axis)


def _f(x) -> float | None:
    return None if x is None else float(x)


def expected_calibration_error(labels, probs, preds=None, bins: int = ECE_BINS) -> float:
    """Top-label ECE (Guo et al. 2017): the images binned by their confidence (the predicted
    class's probability, equal-width bins), the mean |accuracy - confidence| weighted by the
    bin's share. (sklearn has per-class calibration curves but no ECE.)"""
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    preds = probs.argmax(axis=1) if preds is None else np.asarray(preds)
    conf = probs.max(axis=1)
    correct = (preds == labels).astype(np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    ece = 0.0
    for b in np.unique(which):
        members = which == b
        ece += members.mean() * abs(correct[members].mean() - conf[members].mean())
    return float(ece)


def _sensitivity_specificity(labels, preds, k: int, pos: int | None):
    """Binary: recall of the positive and of the negative class. Multi-class: macro over the
    classes present of one-vs-rest recall (sensitivity) and true-negative rate (specificity)."""
    if pos is not None:
        sens = recall_score(labels, preds, labels=[pos], average=None, zero_division=0)[0]
        spec = recall_score(labels, preds, labels=[1 - pos], average=None, zero_division=0)[0]
        return sens, spec
    present = sorted(set(labels.tolist()))
    sens = np.mean([np.mean(preds[labels == c] == c) for c in present])
    spec = np.mean([np.mean(preds[labels != c] != c) for c in present if np.any(labels != c)]
                   or [np.nan])
    return sens, (None if np.isnan(spec) else spec)


def task_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    negative_class: int | None = None,
    *,
    preds: np.ndarray | None = None,
) -> dict:
    """Metrics of one task.

    labels: (N,) int class indices in 0..K-1; probs: (N, K) class scores.
    Binary tasks report AUC/precision/recall/F1 of the positive class (the one
    that is not `negative_class`; class 1 by default); multi-class tasks report
    macro averages (AUC one-vs-rest). Balanced accuracy (mean recall over the classes
    present), sensitivity / specificity (binary: recall of the positive / the negative
    class; multi-class: macro one-vs-rest) and the expected calibration error (``ece``)
    next to accuracy.
    preds: optional (N,) predictions overriding argmax(probs); the value K means
    "predicted a class of another task" (multiclass mode) and is always wrong.
    The confusion matrix then gets an extra "other task" column.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    if probs.shape != (labels.shape[0], k):
        raise ValueError(f"probs shape {probs.shape} != ({labels.shape[0]}, {k})")
    preds = probs.argmax(axis=1) if preds is None else np.asarray(preds, dtype=np.int64)
    n = int(labels.shape[0])
    notes: list[str] = []
    binary = k == 2
    pos = None
    if binary:
        pos = 1 if negative_class is None else 1 - int(negative_class)

    has_other = bool(np.any(preds == k))
    cm_labels = list(range(k + 1)) if has_other else list(range(k))
    out = {
        "classes": list(classes),
        "n": n,
        "class_counts": {c: int(np.sum(labels == i)) for i, c in enumerate(classes)},
        "positive_class": classes[pos] if binary else None,
        "confusion_labels": list(classes) + ([OTHER_TASK] if has_other else []),
        "notes": notes,
    }
    if n == 0:
        notes.append("no samples")
        out.update(accuracy=None, balanced_accuracy=None, sensitivity=None, specificity=None,
                   ece=None, auc=None, precision=None, recall=None, f1=None,
                   confusion_matrix=[[0] * len(cm_labels) for _ in range(k)])
        return out

    out["accuracy"] = float(np.mean(preds == labels))
    # mean recall over the classes present = sklearn's balanced_accuracy_score, without its
    # warning when a prediction is a class absent from the split (or "other task")
    out["balanced_accuracy"] = float(recall_score(labels, preds, labels=sorted(set(
        labels.tolist())), average="macro", zero_division=0))
    sens, spec = _sensitivity_specificity(labels, preds, k, pos)
    # ECE rates the probabilities themselves: their argmax, not a threshold's label ("other
    # task" predictions stay wrong)
    top = np.where(preds == k, k, probs.argmax(axis=1))
    out.update(sensitivity=_f(sens), specificity=_f(spec),
               ece=expected_calibration_error(labels, probs, top))
    # Rows are true classes only: no sample's true class is "other task".
    cm = confusion_matrix(labels, preds, labels=cm_labels)[:k]
    out["confusion_matrix"] = cm.astype(int).tolist()

    if binary:
        p, r, f, _ = precision_recall_fscore_support(
            labels, preds, labels=[pos], average=None, zero_division=0)
        p, r, f = p[0], r[0], f[0]
    else:
        # Macro over classes seen in labels or predictions (sklearn's default),
        # so a class absent from a small split does not count as a 0 score.
        seen = sorted(set(labels.tolist()) | (set(preds.tolist()) - {k}))
        p, r, f, _ = precision_recall_fscore_support(
            labels, preds, labels=seen, average="macro", zero_division=0)
    out.update(precision=_f(p), recall=_f(r), f1=_f(f))

    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        out["auc"] = None
        notes.append(f"AUC undefined: only one class present in labels "
                     f"({classes[present[0]]!r})")
    elif binary:
        out["auc"] = float(roc_auc_score(labels == pos, probs[:, pos]))
    else:
        # One-vs-rest per class by hand so that classes missing from the split
        # are skipped (sklearn's multi_class="ovr" raises for them).
        aucs = [roc_auc_score(labels == i, probs[:, i]) for i in present]
        out["auc"] = float(np.mean(aucs))
        if len(present) < k:
            missing = [classes[i] for i in range(k) if i not in present]
            notes.append(f"macro AUC over present classes only; missing {missing}")
    return out


def multitask_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    task_ids: np.ndarray,
    tasks: list[dict],
    mode: str = "multitask",
    decisions: dict | None = None,
) -> dict[str, dict]:
    """Per-task metrics from the concatenated logits of all heads.

    logits: (N, K_total); labels: (N,) task-local class indices; task_ids: (N,)
    index into `tasks`; each task dict has "name", "classes", "slice"
    [start, stop] and optionally "negative_class".
    mode="multitask": each sample is scored only on its task's slice.
    mode="multiclass": one head over the union of classes; the argmax over all
    logits landing outside the task's slice is wrong (inside, the task's decision
    gives the label, as below).
    decisions: {task name: decision} (``medimage.decision``): probabilities and labels as the
    board decides them (temperature, a binary task's threshold); a task without one: T = 1
    and argmax. Each task's result names its decision (None: argmax).
    """
    if mode not in ("multitask", "multiclass"):
        raise ValueError(f"unknown mode {mode!r}")
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    task_ids = np.asarray(task_ids, dtype=np.int64).reshape(-1)
    results = {}
    for t, task in enumerate(tasks):
        start, stop = task["slice"]
        k = stop - start
        if k != len(task["classes"]):
            raise ValueError(f"task {task['name']}: slice width {k} != "
                             f"{len(task['classes'])} classes")
        rows = task_ids == t
        sub = logits[rows]
        # Softmax over the slice equals the full softmax renormalized to the
        # slice, without the underflow risk of dividing tiny probabilities.
        d = (decisions or {}).get(task["name"])
        probs, preds = rule.apply(sub[:, start:stop], d)
        if mode == "multiclass":
            # the global argmax must pick this task; within it the task's rule decides
            g = sub.argmax(axis=1)
            inside = (g >= start) & (g < stop)
            preds = np.where(inside, preds, k)
        results[task["name"]] = task_metrics(
            labels[rows], probs, task["classes"], task.get("negative_class"),
            preds=preds)
        results[task["name"]]["decision"] = d
    return results
