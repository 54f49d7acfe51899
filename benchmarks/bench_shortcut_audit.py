"""Shortcut audit of the training data: can the label be told from image style alone?

For each task, the train split as the models see it (gray; the two 224 px image trees at
64x64, de-duplicated; the MedMNIST sets at their native 28x28) goes through
``brevitas_models.shortcut_audit.audit``: a logistic regression on cheap style features
(intensity histogram, padding, crop, 4x4 thumbnail, sharpness), 5-fold cross-validated, per
class pair and for all classes together, next to chance.

    python -m benchmarks.bench_shortcut_audit
    python -m benchmarks.bench_shortcut_audit --tasks brain_mri --update

-> benchmarks/results/shortcut_audit.json (one record per task) and the "Shortcut audit"
section of docs/results.md.
"""
from __future__ import annotations

import sys
import time

from benchmarks import harness
from brevitas_models.shortcut_audit import FEATURE_FAMILIES, HIGH, MODERATE, audit_task
from finn_build.provenance import git_commit, now

# task -> image side the audit loads it at
TASKS = {"chest_xray": 64, "brain_mri": 64, "pneumoniamnist": 28, "breastmnist": 28,
         "bloodmnist": 28}


def main(argv=None) -> int:
    ap = harness.argument_parser(__doc__, out="benchmarks/results/shortcut_audit.json",
                                 update="tasks")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--split", default="train", choices=["train", "val", "test"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)

    commit = git_commit()  # before this run writes its results
    command = harness.command_line("benchmarks.bench_shortcut_audit", argv)
    new = []
    for task in args.tasks:
        start = time.perf_counter()
        result = audit_task(task, root=args.data_dir, size=TASKS[task], split=args.split,
                            seed=args.seed)
        seconds = round(time.perf_counter() - start, 1)
        print(f"[audit] {task}: {seconds} s", flush=True)
        for w in result["warnings"]:
            print(f"[audit] WARNING {w}", flush=True)
        new.append({**result, "seconds": seconds, "git_commit": commit, "date": now()})
    records = new
    if args.update:
        records, command = harness.keep_other_records(args.out, new, lambda r: r["task"],
                                                      command)
    results = harness.record_set(records, command, commit=commit)
    rows = [{"task": r["task"], "size": r["size"], "pair": p["pair"], "n": p["n"],
             "balanced_acc": p["balanced_accuracy"], "chance": p["balanced_chance"],
             "acc": p["accuracy"], "majority": p["chance"], "level": p["level"],
             **{f"{family}_only": p["balanced_accuracy_by_family"][family]
                for family in FEATURE_FAMILIES}}
            for r in records for p in r["pairs"]]
    warnings = [w for r in records for w in r["warnings"]]
    preamble = (
        f"{harness.provenance_text(results)}. How well the label can be predicted from image "
        "style alone: logistic regression on standardized style features (16-bin intensity "
        "histogram, mean/std/percentiles, near-black padding share overall and in the outer "
        "frame, foreground bounding box, 4x4 mean-pooled thumbnail, neighbour differences), "
        f"stratified 5-fold cross-validation on the {args.split} split (gray, de-duplicated "
        "image trees at 64 px, MedMNIST at 28 px; at most 2000 images per class, seeded). "
        "`balanced_acc` vs `chance` (1/classes); `acc` vs `majority` (the larger class's "
        f"share). level: high >= {HIGH}, moderate >= {MODERATE} balanced accuracy. "
        "`*_only` columns: the same fit on one feature family alone; `layout` (padding, crop) "
        "and `traces` (sharpness) carry no finding, `intensity` and `thumbnail` can also "
        "carry findings that change the whole image (opaque lungs), so a high score there is a "
        "warning to check, not proof. In bloodmnist one cell fills the 28 px crop, so the "
        "intensity and thumbnail features see the cell itself (stain, size): its high scores "
        "say little about shortcuts.")
    if warnings:
        preamble += "\n\nWarnings:\n\n" + "\n".join(f"- {w}" for w in warnings)
    harness.publish(results, args.out, "Shortcut audit", harness.render_generic_table(rows),
                    preamble)
    return 0


if __name__ == "__main__":
    sys.exit(main())
