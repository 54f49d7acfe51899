"""The decision rule on a task's output: the one implementation for training's evaluation
(``brevitas_models``) and the board runtime (``deploy.pynq``), so the metrics reported after
training are the metrics of the labels the board prints.

A task's ``decision`` is fitted on the validation split after training
(``brevitas_models.calibration``) and travels with the model (``calibration.json`` in the run,
the task entries of ``model.meta.json`` and of the deploy package's ``metadata.json``)::

    {"temperature": T, "threshold": t or None, "positive_class": k or None}

- probabilities: ``softmax(logits / T)`` over the task's logit slice, float64;
- label: a binary task with a threshold gives ``positive_class`` when P(positive) >= t, else
  the other class; any other task (or no threshold) gives the argmax.

No decision (``None``: a run trained before calibration existed, or a package made from one)
means T = 1 and argmax, what those runs and packages always did. numpy only.
"""
from __future__ import annotations

import math

import numpy as np


def check(decision, n_classes: int) -> None:
    """Raise ValueError when ``decision`` cannot be applied to a task of ``n_classes``."""
    if decision is None:
        return
    if not isinstance(decision, dict):
        raise ValueError(f"decision must be a mapping, got {type(decision).__name__}")
    t = decision.get("temperature", 1.0)
    if not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise ValueError(f"decision temperature must be a number > 0, got {t!r}")
    th, pos = decision.get("threshold"), decision.get("positive_class")
    if th is None:
        return
    if not isinstance(th, (int, float)) or not 0.0 <= th <= 1.0:
        raise ValueError(f"decision threshold must be in [0, 1], got {th!r}")
    if n_classes != 2 or pos not in (0, 1):
        raise ValueError(f"a decision threshold needs a binary task and positive_class 0 or 1 "
                         f"(task has {n_classes} classes, positive_class {pos!r})")


def probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) over the last axis, float64 (max subtracted: no
    overflow)."""
    z = np.asarray(logits, np.float64) / float(temperature)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def decide(probs, decision=None):
    """Label index per row of ``probs`` ([..., K]); an int for one row ([K])."""
    probs = np.asarray(probs, np.float64)
    th = (decision or {}).get("threshold")
    if th is None:
        labels = probs.argmax(axis=-1)
    else:
        pos = int(decision["positive_class"])
        # >=: a probability exactly at the threshold counts as positive
        labels = np.where(probs[..., pos] >= th, pos, 1 - pos)
    return int(labels) if probs.ndim == 1 else labels.astype(np.int64)


def apply(logits, decision=None) -> tuple[np.ndarray, np.ndarray]:
    """A task's logit slice -> (probabilities, labels) as the board decides."""
    probs = probabilities(logits, (decision or {}).get("temperature", 1.0))
    return probs, decide(probs, decision)
