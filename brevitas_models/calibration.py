"""Per-task decisions fitted on the validation split after training: ``calibration.json``.

For each task, on the validation logits of the run's ``best.pt``:

- temperature T: minimizes the NLL of softmax(logits / T) (1-D bounded search over log T),
  so the probabilities say how often the label is right (a binary task's AUC does not
  change: T keeps the order of P(positive));
- binary tasks (a ``negative_class``): the threshold on the calibrated P(positive) that
  maximizes balanced accuracy (Youden's J on the ROC curve; ties: the threshold closest to
  0.5). Multi-class tasks keep the argmax.

The result is a ``decision`` per task (``medimage.decision``, the rule the board applies) plus
the validation figures before and after. ``calibration.json`` records the sha256 of the
``best.pt`` it was fitted to; a calibration of another best.pt (the file was rewritten or
replaced since) is never used: ``train.run_decisions`` refits it and says so. (Loading the
checkpoint and predicting is ``train.calibrate_run``'s job: this module does not import train.)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import roc_curve

from medimage import decision as rule

from .files import sha256_file, write_json_atomic
from .metrics import expected_calibration_error, task_metrics

FILE = "calibration.json"
T_BOUNDS = (0.05, 20.0)


class CalibrationError(ValueError):
    """A calibration cannot be fitted or read; the message says why and what to do."""


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / T)."""
    lp = log_softmax(np.asarray(logits, np.float64) / temperature, axis=1)
    return float(-lp[np.arange(len(labels)), np.asarray(labels, np.int64)].mean())


def fit_temperature(logits, labels) -> float:
    """The T in T_BOUNDS minimizing the NLL; 1.0 without samples."""
    if len(labels) == 0:
        return 1.0
    # on log T: the NLL is smoother there and T stays positive
    res = minimize_scalar(lambda lt: nll(logits, labels, math.exp(lt)),
                          bounds=tuple(math.log(b) for b in T_BOUNDS), method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))


def fit_threshold(p_pos, is_pos) -> float | None:
    """Threshold t (positive when p >= t) maximizing balanced accuracy = (1 + J) / 2 with
    Youden's J = TPR - FPR; None when the split lacks one of the two classes."""
    p_pos, is_pos = np.asarray(p_pos, np.float64), np.asarray(is_pos, bool)
    if is_pos.all() or not is_pos.any():
        return None
    fpr, tpr, thr = roc_curve(is_pos, p_pos, drop_intermediate=False)
    # thr: the distinct scores, descending (thr[0] = inf: nothing positive). Any t in
    # (thr[i+1], thr[i]] gives the i-th point; take the middle, not a score itself, so an image
    # scoring a hair below a validation image is not flipped.
    lower = np.append(thr[1:], 0.0)
    mid = (np.minimum(thr, 1.0) + lower) / 2
    cand = np.where(mid > lower, mid, thr)  # adjacent floats: the score itself
    j = tpr - fpr
    best = np.flatnonzero(np.isclose(j, j.max(), rtol=0, atol=1e-12))
    return float(cand[best[np.argmin(np.abs(cand[best] - 0.5))]])


def fit_task(logits, labels, classes, negative_class) -> dict:
    """One task's decision and its validation figures. logits: [n, K] (the task's slice)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    k = len(classes)
    t = fit_temperature(logits, labels)
    pos = None if negative_class is None or k != 2 else 1 - int(negative_class)
    probs = rule.probabilities(logits, t)
    thr = None if pos is None else fit_threshold(probs[:, pos], labels == pos)
    decision = {"temperature": t, "threshold": thr,
                "positive_class": None if thr is None else pos}
    raw = rule.probabilities(logits, 1.0)
    n = len(labels)

    def bal(preds):
        return task_metrics(labels, raw, classes, negative_class,
                            preds=preds)["balanced_accuracy"] if n else None
    return {
        "decision": decision, "classes": list(classes), "n_val": int(n),
        "val": {
            "nll_before": nll(logits, labels) if n else None,
            "nll_after": nll(logits, labels, t) if n else None,
            "ece_before": expected_calibration_error(labels, raw) if n else None,
            "ece_after": expected_calibration_error(labels, probs) if n else None,
            "balanced_accuracy_argmax": bal(raw.argmax(axis=1)),
            "balanced_accuracy_decision": bal(rule.decide(probs, decision)),
        },
    }


def fit(logits, labels, task_ids, tasks_meta) -> dict:
    """{task name: fit_task(...)} from the concatenated logits of a split."""
    out = {}
    for i, t in enumerate(tasks_meta):
        rows = np.asarray(task_ids) == i
        a, b = t["slice"]
        out[t["name"]] = fit_task(np.asarray(logits)[rows, a:b], np.asarray(labels)[rows],
                                  t["classes"], t.get("negative_class"))
    return out


def write(run_dir, tasks: dict, checkpoint_sha256: str) -> dict:
    """Write ``calibration.json`` (atomically) for the best.pt of the given sha256."""
    out = {"checkpoint": "best.pt", "checkpoint_sha256": checkpoint_sha256, "split": "val",
           "method": "temperature: min NLL of softmax(logits/T); binary threshold: max "
                     "balanced accuracy on calibrated P(positive) (Youden's J)",
           "tasks": tasks}
    write_json_atomic(Path(run_dir) / FILE, out)
    return out


def read(run_dir) -> dict | None:
    """calibration.json of a run as stored (no staleness check), or None without one."""
    f = Path(run_dir) / FILE
    if not f.is_file():
        return None
    try:
        cal = json.loads(f.read_text())
        if not isinstance(cal, dict) or not isinstance(cal.get("tasks"), dict):
            raise ValueError("no 'tasks' mapping")
        for name, t in cal["tasks"].items():
            if not isinstance(t, dict) or not isinstance(t.get("decision"), dict):
                raise ValueError(f"task {name}: no 'decision' mapping")
            rule.check(t["decision"], len(t.get("classes") or ()))
        return cal
    except ValueError as e:
        raise CalibrationError(f"{f}: unusable ({e}); delete it and run `medzoo train` on "
                               "the run's config again to refit it") from None


def is_current(run_dir, cal: dict | None) -> bool:
    """Whether ``cal`` was fitted to the run's present best.pt (same bytes)."""
    best = Path(run_dir) / "best.pt"
    return bool(cal) and best.is_file() and cal.get("checkpoint_sha256") == sha256_file(best)
