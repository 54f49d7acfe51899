"""Plots and JSON files of training and evaluation results."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")  # headless: CI and build containers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .files import write_text_atomic  # noqa: E402


# ---------------------------------------------------------------- files

def _json_default(o):
    # numpy scalars/arrays leak in easily from metric code
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_json(obj, path: str) -> None:
    write_text_atomic(path, json.dumps(obj, sort_keys=True, indent=2,
                                       default=_json_default) + "\n")


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- plots

def plot_confusion(cm, classes: list[str], title: str, path: str) -> None:
    """Confusion matrix (rows true, cols predicted) with counts in the cells.
    A matrix with one more column than classes gets an "other task" column."""
    cm = np.asarray(cm)
    cols = list(classes) + ["other task"] * (cm.shape[1] - len(classes))
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(cols), 1.0 + 0.8 * len(classes)))
    try:
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        hi = cm.max() if cm.size else 0
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                        color="white" if hi and cm[i, j] > hi / 2 else "black")
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)  # figures are global state; leaking them grows memory


def plot_curves(history: list[dict], path: str) -> None:
    """Loss curves (keys ending in "loss") and per-task validation accuracy
    (keys "val_acc_<task>") per epoch, as two subplots in one PNG."""
    xs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    keys = sorted({k for h in history for k in h})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        for ax, sel, ylabel in ((ax1, lambda k: k.endswith("loss"), "loss"),
                                (ax2, lambda k: k.startswith("val_acc_"), "val accuracy")):
            for k in filter(sel, keys):
                pts = [(x, h[k]) for x, h in zip(xs, history) if h.get(k) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker=".", label=k.removeprefix("val_acc_"))
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
