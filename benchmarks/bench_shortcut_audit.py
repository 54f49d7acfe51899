"""Shortcut audit of the training data: can the label be told from image style alone?

For each task, the train split as the models see it (gray; the two 224 px image trees at
64x64, de-duplicated; the MedMNIST sets at their native 28x28) goes through
``brevitas_models.shortcut_audit.audit``: a logistic regression on cheap style features
(intensity histogram, padding, crop, 4x4 thumbnail, sharpness), 5-fold cross-validated, per
class pair and for all classes together, next to chance. Every task is audited without
preprocessing ("before"); a task whose default preprocessing is on (the two image trees: crop
to the body/head box + percentile stretch, ``medimage.preprocess``) also with it ("after").

Split shift (the image trees): the same classifier on one class's train images vs its
validation / test images: can style tell the splits apart? (Section "Split shift".)

    python -m benchmarks.bench_shortcut_audit
    python -m benchmarks.bench_shortcut_audit --tasks brain_mri --update

-> benchmarks/results/shortcut_audit.json (one record per task) and the "Shortcut audit"
section of docs/results.md.
"""
from __future__ import annotations

import sys
import time

from benchmarks import harness
from brevitas_models.shortcut_audit import (FEATURE_FAMILIES, HIGH, MODERATE, audit_task,
                                            split_shift)
from brevitas_models.tasks import get_task
from finn_build.provenance import git_commit, now
from medimage import Preprocess

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
        default = get_task(task).preprocess
        for pre in [Preprocess()] + ([default] if default.active else []):
            start = time.perf_counter()
            result = audit_task(task, root=args.data_dir, size=TASKS[task], split=args.split,
                                seed=args.seed, preprocess=pre)
            seconds = round(time.perf_counter() - start, 1)
            label = preprocess_label(pre)
            print(f"[audit] {task} ({label}): {seconds} s", flush=True)
            for w in result["warnings"]:
                print(f"[audit] WARNING ({label}) {w}", flush=True)
            new.append({**result, "preprocessing": label, "seconds": seconds,
                        "git_commit": commit, "date": now()})
    records = new
    if args.update:
        records, command = harness.keep_other_records(
            args.out, new, lambda r: (r["task"], r.get("preprocessing", "none")), command)
    shift = []
    for task in args.tasks:
        if get_task(task).fmt != "image_tar":
            continue
        default = get_task(task).preprocess
        for pre in [Preprocess()] + ([default] if default.active else []):
            r = split_shift(task, root=args.data_dir, size=TASKS[task], seed=args.seed,
                            preprocess=pre)
            shift.append({**r, "preprocessing": preprocess_label(pre), "git_commit": commit})
    old = harness.read_results(args.out) if args.update else None
    if old:  # --update: the other tasks' split-shift records stay
        shift = [r for r in old.get("split_shift", [])
                 if r["task"] not in args.tasks] + shift
    results = harness.record_set(records, command, commit=commit, split_shift=shift)
    rows = [{"task": r["task"], "size": r["size"],
             "preprocessing": r.get("preprocessing", "none"), "pair": p["pair"], "n": p["n"],
             "balanced_acc": p["balanced_accuracy"], "chance": p["balanced_chance"],
             "acc": p["accuracy"], "majority": p["chance"], "level": p["level"],
             **{f"{family}_only": p["balanced_accuracy_by_family"][family]
                for family in FEATURE_FAMILIES}}
            for r in records for p in r["pairs"]]
    warnings = [f"({r.get('preprocessing', 'none')}) {w}" for r in records
                for w in r["warnings"]]
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
        "say little about shortcuts. `preprocessing`: none (before) or the task's default "
        "style-removing preprocessing (after; `crop` = crop to the body/head box, then "
        "resize; `stretch` = 1st..99th percentile to 0..255, `equalize` = histogram equalization, "
        "all in integers, as on the board).")
    if warnings:
        preamble += "\n\nWarnings:\n\n" + "\n".join(f"- {w}" for w in warnings)
    harness.publish(results, args.out, "Shortcut audit", harness.render_generic_table(rows),
                    preamble)
    shift_rows = [{"task": r["task"], "preprocessing": r["preprocessing"], "class": p["class"],
                   "splits": " vs ".join(p["splits"]), "n": p["n"],
                   "balanced_acc": p["balanced_accuracy"], "level": p["level"],
                   **{f"{family}_only": p["balanced_accuracy_by_family"][family]
                      for family in FEATURE_FAMILIES}}
                  for r in shift for p in r["pairs"]]
    harness.update_results_md(
        str(harness.RESULTS_MD), "Split shift",
        harness.render_generic_table(shift_rows),
        f"{harness.provenance_text(results)}. The shortcut audit's classifier on one class's "
        "train images against the same class's validation or test images (chance 0.50): a "
        "validation split carved from train scores chance by construction; a high train-vs-"
        "test score says the test images were made differently, and validation accuracy "
        "then cannot predict test accuracy (Kermany's test NORMAL images).")
    return 0


def preprocess_label(pre: Preprocess) -> str:
    """"none", "crop+equalize", "crop(t=10,m=2)+stretch"...: short, and names non-default
    crop settings."""
    if not pre.active:
        return "none"
    parts = []
    if pre.crop:
        d = Preprocess()
        tuned = (pre.crop_threshold, pre.crop_margin) != (d.crop_threshold, d.crop_margin)
        parts.append(f"crop(t={pre.crop_threshold},m={pre.crop_margin})" if tuned else "crop")
    if pre.normalize != "none":
        parts.append(pre.normalize)
    return "+".join(parts)


if __name__ == "__main__":
    sys.exit(main())
