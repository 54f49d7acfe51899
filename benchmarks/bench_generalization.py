"""Generalization benchmark: the CNN at 64x64 on chest_xray + brain_mri, the recipe before the
style-robust one ("old") next to it ("new"), over seeds, on the validation and test splits.

  python -m benchmarks.bench_generalization [--seeds 0 1 2] [--recipes old new long]

- long: ``configs/xray_mri_cnn64.yaml`` as shipped: the tasks' default preprocessing (crop to
  the body/head box + percentile stretch, applied identically on the board), augmentation
  against style, 60 epochs without early stopping, and the decision fitted on validation
  (temperature; binary tasks a threshold for balanced accuracy), which the board applies.
- new: the same recipe at 30 epochs (patience 8), what the config trained first; `long` was
  chosen over it on validation (mean validation accuracy 0.961 against 0.951).
- old: the same config with no preprocessing, the default (mild) augmentation, 20 epochs
  (patience 6) and argmax decisions: what the config trained before the style-robust recipe.

Runs live in runs/bench/<name> and resume after a kill (a finished run is only evaluated).
Records go into benchmarks/results/accuracy.json (``"study": "generalization"``, next to the
MedMNIST records of bench_accuracy) and the table into the "Generalization" section of
docs/results.md: per recipe, task and split the mean and spread (sample std) over the seeds.
"""
from __future__ import annotations

import json
import statistics
import sys
import warnings
from pathlib import Path

from benchmarks import harness
from finn_build.provenance import git_commit
from brevitas_models.config import (AugmentSection, PreprocessSection, config_from_dict,
                                    load_config, merge)

CONFIG = Path("configs/xray_mri_cnn64.yaml")
RESULTS = Path("benchmarks/results/accuracy.json")
STUDY = "generalization"
TASKS = ("chest_xray", "brain_mri")
RECIPES = {  # in the order of the table
    "old": {"data": {"preprocess": {t: PreprocessSection().model_dump() for t in TASKS},
                     "augment": AugmentSection().model_dump()},
            "train": {"epochs": 20, "patience": 6}},
    "new": {"train": {"epochs": 30, "patience": 8}},
    "long": {},  # the config as shipped
}
METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc", "ece")
# The targets, on the official test splits (means over the seeds).
TARGETS = [("chest_xray", "accuracy", 0.88), ("chest_xray", "balanced_accuracy", 0.86),
           ("brain_mri", "accuracy", 0.95)]
MAX_VAL_TEST_GAP = 0.05  # chest_xray: validation accuracy - test accuracy


def run_config(recipe: str, seed: int, out_dir: str):
    raw = merge(load_config(CONFIG).to_dict(), RECIPES[recipe])
    name = f"cnn64_xray_mri_{recipe}_s{seed}"
    # one thread per run: two runs side by side use the 2 cores better than one with 2 threads
    return config_from_dict(merge(raw, {"name": name, "seed": seed, "out_dir": out_dir,
                                        "train": {"threads": 1}}), name)


def evaluate(cfg, split: str, data) -> tuple[dict, dict, dict]:
    """-> (metrics of the fitted decision, plain argmax metrics, decisions) per task."""
    from brevitas_models.train import evaluate_run

    decided = evaluate_run(cfg.run_dir, split, data=data, log=lambda *a: None)
    saved = json.loads((cfg.run_dir / f"eval_{split}" / "metrics.json").read_text())
    return decided, saved["argmax"], saved.get("decisions") or {}


def records_for(recipe: str, cfg, split: str, decided: dict, plain: dict,
                decisions: dict) -> list[dict]:
    """One record per task. The old recipe is scored by argmax (what it did), the style-robust
    ones by the decision fitted on validation (what the board does; argmax figures ride along)."""
    recs = []
    for task in decided:
        d = decisions.get(task) if recipe != "old" else None
        scored = decided[task] if recipe != "old" else plain[task]
        rule = ("argmax" if not d else f"T={d['temperature']:.2f}" + (
            f", p>={d['threshold']:.3f}" if d.get("threshold") is not None else ", argmax"))
        recs.append({"study": STUDY, "recipe": recipe, "seed": cfg.seed, "run": cfg.name,
                     "model": cfg.model.arch, "size": cfg.data.size,
                     "w_bits": cfg.model.w_bits, "a_bits": cfg.model.a_bits,
                     "task": task, "split": split, "n": scored["n"], "decision": rule,
                     **{k: scored.get(k) for k in METRICS},
                     # both rules for every run: the decision's share of the difference
                     **{f"{rule}_{k}": src[task][k] for rule, src in (("argmax", plain),
                                                                      ("decision", decided))
                        for k in ("accuracy", "balanced_accuracy")}})
    return recs


def summary_rows(records: list[dict]) -> list[dict]:
    """Mean and sample std over seeds per recipe, task and split."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["recipe"], r["task"], r["split"]), []).append(r)
    rows = []
    for (recipe, task, split), rs in sorted(groups.items(), key=lambda kv: (
            list(RECIPES).index(kv[0][0]), kv[0][1], kv[0][2] != "val")):
        row = {"recipe": recipe, "task": task, "split": split, "seeds": len(rs)}
        for k in METRICS:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                row[k] = f"{statistics.mean(vals):.3f} ± {sd:.3f}"
        rows.append(row)
    return rows


def mean_of(records, recipe, task, split, metric):
    vals = [r[metric] for r in records if (r["recipe"], r["task"], r["split"]) ==
            (recipe, task, split) and r.get(metric) is not None]
    return statistics.mean(vals) if vals else None


def target_lines(records: list[dict]) -> list[str]:
    lines = []
    for recipe in RECIPES:
        got = []
        for task, metric, target in TARGETS:
            v = mean_of(records, recipe, task, "test", metric)
            if v is not None:
                got.append(f"{task} test {metric} {v:.3f} (target >= {target}: "
                           f"{'met' if v >= target else 'MISSED'})")
        val = mean_of(records, recipe, "chest_xray", "val", "accuracy")
        test = mean_of(records, recipe, "chest_xray", "test", "accuracy")
        if val is not None and test is not None:
            gap = val - test
            got.append(f"chest_xray validation-to-test accuracy gap {gap * 100:+.1f} points "
                       f"(target <= {MAX_VAL_TEST_GAP * 100:.0f}: "
                       f"{'met' if gap <= MAX_VAL_TEST_GAP else 'MISSED'})")
        if got:
            lines.append(f"- {recipe}: " + "; ".join(got))
    old = [mean_of(records, "old", "chest_xray", "test", f"decision_{k}")
           for k in ("accuracy", "balanced_accuracy")]
    if None not in old:
        lines.append(f"- old recipe with the decision fitted on validation (no retraining): "
                     f"chest_xray test accuracy {old[0]:.3f}, balanced accuracy {old[1]:.3f}")
    return lines


def write_outputs(records: list[dict], command: str, commit: str) -> None:
    results = harness.study_record_set(RESULTS, STUDY, records, command, commit)
    pre = (f"{harness.provenance_text(results)}: CNN w4a4 at 64x64 gray on chest_xray (Kermany, patient-wise "
           "validation carved from train) + brain_mri (Nickparvar, de-duplicated, leaked test "
           "images dropped), multi-task; official test splits, each model chosen by early "
           "stopping on validation. Mean ± sample std over the seeds. `old`: no preprocessing, "
           "mild augmentation, 20 epochs, argmax; `new`: crop + percentile stretch, "
           "augmentation against style, 30 epochs, temperature + threshold fitted on "
           "validation; `long`: `configs/xray_mri_cnn64.yaml` as shipped, the `new` recipe at "
           "60 epochs without early stopping, chosen over `new` on validation. "
           "Records: `benchmarks/results/accuracy.json` (`study: "
           f"{STUDY}`).\n\n" + "\n".join(target_lines(records)))
    harness.publish(results, RESULTS, "Generalization: chest X-ray + brain MRI",
                    harness.render_generic_table(summary_rows(records)), pre)


def main(argv=None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = harness.argument_parser(__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--out-dir", default="runs/bench")
    args = ap.parse_args(argv)
    from brevitas_models.train import load_data, train

    command = harness.command_line("benchmarks.bench_generalization", argv)
    commit = git_commit()  # before this run writes its results (they would make it "dirty")
    old = harness.read_results(RESULTS) or {"records": []}
    records = [r for r in old["records"] if r.get("study") == STUDY]
    for recipe in args.recipes:
        data = None
        for seed in args.seeds:
            cfg = run_config(recipe, seed, args.out_dir)
            data = data or load_data(cfg)  # the same for every seed (the split is fixed)
            # (no training time is recorded: a resumed finished run trains nothing, and these
            # runs are an accuracy study, not a speed benchmark)
            train(cfg, data=data, progress=False)
            records = [r for r in records if r["run"] != cfg.name]
            for split in ("val", "test"):
                records += records_for(recipe, cfg, split, *evaluate(cfg, split, data))
            write_outputs(records, command, commit)
            print(f"[bench] {cfg.name}: " + ", ".join(
                f"{r['task']} test acc {r['accuracy']:.3f} bal {r['balanced_accuracy']:.3f}"
                for r in records if r["run"] == cfg.name and r["split"] == "test"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
