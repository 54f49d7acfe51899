"""Plots, JSON files and Markdown tables for benchmark results."""

from __future__ import annotations

import json
import os
import re
import tempfile

import matplotlib

matplotlib.use("Agg")  # headless: CI and build containers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DASH = "–"  # rendered for missing (None) values


# ---------------------------------------------------------------- files

def _atomic_write_text(path: str, text: str) -> None:
    """Write via a temp file in the same dir + os.replace, so readers never
    see a half-written file (os.replace is atomic within one filesystem)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _json_default(o):
    # numpy scalars/arrays leak in easily from metric code
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_json(obj, path: str) -> None:
    _atomic_write_text(path, json.dumps(obj, sort_keys=True, indent=2,
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


# ---------------------------------------------------------------- tables

def _cell(v) -> str:
    if v is None:
        return DASH
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3f}"
    return str(v).replace("|", "\\|")


def render_generic_table(records: list[dict], columns: list[str] | None = None) -> str:
    """Markdown table of `records` in the given order; missing keys render as
    a dash. columns=None uses all keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in records for k in r))
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in records]
    return "\n".join(lines) + "\n"


def _is_float_bits(b) -> bool:
    # float models are recorded as None, "float"/"fp32", or 32
    try:
        return b is None or int(b) >= 16
    except (TypeError, ValueError):
        return True


def _bits_key(b):
    return (0, 0) if _is_float_bits(b) else (1, -int(b))


ACCURACY_COLUMNS = ["model", "mode", "loss", "w_bits", "a_bits", "task", "split",
                    "acc", "auc", "precision", "recall", "f1", "n"]


def render_accuracy_table(records: list[dict]) -> str:
    """Accuracy records sorted by model, mode, bits (float, then 8, 4, 2, 1),
    task; float bit widths are shown as "float"."""
    recs = sorted(records, key=lambda r: (
        str(r.get("model")), str(r.get("mode")),
        _bits_key(r.get("w_bits")), _bits_key(r.get("a_bits")),
        str(r.get("task")), str(r.get("loss")), str(r.get("split"))))
    shown = [{**r, **{b: "float" if _is_float_bits(r.get(b)) else r.get(b)
                      for b in ("w_bits", "a_bits")}} for r in recs]
    return render_generic_table(shown, ACCURACY_COLUMNS)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def update_results_md(path: str, section_title: str, table_md: str,
                      preamble: str = "") -> None:
    """Rewrite one section of a results Markdown file in place, between
    `<!-- BEGIN slug -->` / `<!-- END slug -->`; other sections are untouched.
    Creates the file or appends the section if missing."""
    slug = _slug(section_title)
    begin, end = f"<!-- BEGIN {slug} -->", f"<!-- END {slug} -->"
    body = "\n\n".join(p.strip("\n") for p in (preamble, table_md) if p.strip())
    block = f"{begin}\n{body}\n{end}"
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Results\n"
    i, j = text.find(begin), text.find(end)
    if i != -1 and j > i:
        # plain string slicing: tables may contain backslashes re.sub would mangle
        text = text[:i] + block + text[j + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## {section_title}\n\n{block}\n"
    _atomic_write_text(path, text)
