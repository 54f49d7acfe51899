"""Accuracy benchmark: MLP and CNN over bit widths, plus single-task and multi-class baselines.

  python -m benchmarks.bench_accuracy [--only SUBSTRING] [--epochs-scale 0.5]

Runs live in runs/bench/<name> and resume after a kill; the results file is rewritten after
every finished run. Models are chosen on validation (early stopping); the test split is
evaluated once per finished run for the final figures. Writes
benchmarks/results/accuracy.json and the "Accuracy" section of docs/results.md.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from benchmarks import harness
from brevitas_models.config import config_from_dict, load_config, merge

MEDMNIST = ["pneumoniamnist", "breastmnist", "bloodmnist"]
BITS = [None, 8, 4, 2, 1]
RESULTS = Path("benchmarks/results/accuracy.json")
# Targets from the issue, for the best <=4-bit CNN on the test splits.
TARGETS = {"pneumoniamnist": {"acc": 0.90, "auc": 0.95}, "breastmnist": {"acc": 0.85},
           "bloodmnist": {"acc": 0.93}}


def grid():
    """(run name, mode label, config overrides) for every benchmark run."""
    runs = []
    for arch in ("mlp", "cnn"):
        for b in BITS:
            tag = "float" if b is None else f"w{b}a{b}"
            runs.append((f"{arch}_mt_{tag}", "float" if b is None else "multitask",
                         {"model": {"w_bits": b, "a_bits": b}}))
        runs.append((f"{arch}_mt_w4a4_ctn", "multitask",
                     {"train": {"loss": "cross_task_negatives"}}))
        if arch == "cnn":  # a longer schedule for the hardware-sized CNN (chosen on val)
            runs.append(("cnn_mt_w4a4_e40", "multitask",
                         {"train": {"epochs": 40, "patience": 10}}))
        runs.append((f"{arch}_mc_w4a4", "multiclass", {"model": {"mode": "multiclass"}}))
        for t in MEDMNIST:
            runs.append((f"{arch}_st_{t}_w4a4", "singletask",
                         {"data": {"tasks": [t], "sampling": "proportional"}}))
    return runs


def base_config(arch):
    return load_config(Path("configs") / f"bench_{arch}.yaml").to_dict()


def records_for(run_name, mode_label, cfg, metrics_by_split, seconds):
    recs = []
    for split, metrics in metrics_by_split.items():
        for task, m in metrics.items():
            recs.append({"model": cfg.model.arch, "w_bits": cfg.model.w_bits,
                         "a_bits": cfg.model.a_bits, "mode": mode_label, "loss": cfg.train.loss,
                         "task": task, "split": split, "acc": m["accuracy"], "auc": m["auc"],
                         "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
                         "n": m["n"], "run": run_name, "train_seconds": seconds})
    return recs


def target_summary(records) -> str:
    """Best <=4-bit multitask CNN per task vs the targets, and the float->w4a4 drop. "Best" is
    chosen on the validation split; the test figures of that run are what is compared."""
    lines = []
    cnn = [r for r in records if r["model"] == "cnn"]
    for task, tgt in TARGETS.items():
        val = [r for r in cnn if r["task"] == task and r["split"] == "val"
               and r["mode"] == "multitask" and r["w_bits"] is not None and r["w_bits"] <= 4]
        if not val:
            continue
        run = max(val, key=lambda r: r["acc"])["run"]
        best = next(r for r in cnn if r["run"] == run and r["task"] == task
                    and r["split"] == "test")
        ok = all((best[k] or 0) >= v for k, v in tgt.items())
        got = ", ".join(f"{k} {best[k]:.3f} (target {v})" for k, v in tgt.items())
        lines.append(f"- {task}: best <=4-bit CNN on validation is `{run}`; test {got} -> "
                     f"{'met' if ok else 'MISSED'}")
        test = {r["run"]: r for r in cnn if r["task"] == task and r["split"] == "test"}
        if "cnn_mt_float" in test and "cnn_mt_w4a4" in test:
            drop = (test["cnn_mt_float"]["acc"] - test["cnn_mt_w4a4"]["acc"]) * 100
            lines.append(f"  float -> w4a4 test accuracy drop: {drop:+.1f} points "
                         f"({'within' if drop <= 1 else 'over'} the 1-point target)")
    return "\n".join(lines)


def write_outputs(records, command):
    results = harness.record_set(records, command)
    # (records of other studies in the same file, e.g. bench_generalization's, have their own
    # section)
    records = [r for r in records if r.get("study") is None]
    test = [r for r in records if r["split"] == "test"]
    pre = (harness.provenance_text(results) + ". Test split; each model was chosen by early "
           "stopping on validation (`benchmarks/results/accuracy.json` also holds the "
           "validation records). One seed (0). BloodMNIST-like is the PBC-derived set, not "
           "the official split.\n\n"
           + target_summary(records))
    harness.publish(results, RESULTS, "Accuracy", harness.render_accuracy_table(test), pre)


def main(argv=None):
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = harness.argument_parser(__doc__)
    ap.add_argument("--only", help="run only grid entries whose name contains this")
    ap.add_argument("--epochs-scale", type=float, default=1.0,
                    help="scale every run's epochs (quick looks; not for reported figures)")
    ap.add_argument("--out-dir", default="runs/bench")
    args = ap.parse_args(argv)
    from brevitas_models.train import evaluate_run, load_data, train

    command = harness.command_line("benchmarks.bench_accuracy", argv)
    old = harness.read_results(RESULTS) or {"records": [], "command": ""}
    records = list(old["records"])
    # runs resumed or split over several invocations: keep every command that contributed
    earlier = [c for c in old["command"].split("; ") if c and c != command]
    command = "; ".join(earlier + [command])
    for name, mode_label, over in grid():
        if args.only and args.only not in name:
            continue
        arch = name.split("_")[0]
        raw = merge(merge(base_config(arch), over), {"name": name, "out_dir": args.out_dir})
        raw["train"]["epochs"] = max(1, round(raw["train"]["epochs"] * args.epochs_scale))
        cfg = config_from_dict(raw, name)
        t0 = time.time()
        data = load_data(cfg)
        train(cfg, data=data, progress=False)
        by_split = {s: evaluate_run(cfg.run_dir, s, data=data) for s in ("val", "test")}
        records = [r for r in records if r.get("run") != name]
        records += records_for(name, mode_label, cfg, by_split, round(time.time() - t0, 1))
        write_outputs(records, command)
        print(f"[bench] {name}: " + ", ".join(
            f"{t} test acc {m['accuracy']:.3f}" for t, m in by_split["test"].items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
