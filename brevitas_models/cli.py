"""`medzoo`: train, evaluate, export and predict with the multi-task QAT zoo.

  medzoo train    CONFIG.yaml [--set train.epochs=3 ...] [--data-dir DIR] [--restart]
  medzoo evaluate CONFIG.yaml|RUN_DIR [--split val|test]
  medzoo export   CONFIG.yaml|RUN_DIR [--check-images 32]
  medzoo audit    TASK|CONFIG.yaml [...] [--size 64] [--split train] [--preprocess default|none]
                  [--data-dir DIR] [--json]
  medzoo predict  RUN_DIR|CONFIG.yaml FILE_OR_FOLDER... [--task T] [--qonnx]
                  [--format json|csv] [--out FILE] [--recursive] [--with-acc] [--strict]

evaluate/export given a CONFIG use the run's best.pt and refuse when the config's model/data
fields differ from the ones the checkpoint was trained with (given a RUN_DIR, the checkpoint's
own config is used). Errors in configs, data, checkpoints or run directories print one line
naming the problem and exit 2.

predict classifies image files (or .npy model inputs) with a run's model on this machine and
writes what the board's `classify` writes (the same JSON/CSV, medimage.results): the files are
prepared as the board runtime prepares them, the labels are the board's decision (the run's
calibration.json). --qonnx runs the run's QONNX export (`medzoo export RUN_DIR` first) with
qonnx's executor: integer accumulators -> host scale/bias -> logits, as the accelerator and
its host ops do. Files that cannot be read get their own row (status "error") and exit 1;
--strict stops at the first (exit 2, no output).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from medimage.results import positive_int

from .config import ConfigError, load_config, merge, parse_override


def _config(args):
    over = {}
    for s in args.set or []:
        over = merge(over, parse_override(s))
    if getattr(args, "data_dir", None):
        over = merge(over, {"data": {"root": args.data_dir}})
    return load_config(args.config, over)


def _run_dir(target: str, overrides=None) -> Path:
    """A run directory, or a config whose run directory is meant (the config must match the
    checkpoint's model/data fields). Says on stderr which checkpoint and config are used."""
    from .train import check_config_matches_run
    p = Path(target)
    if p.is_dir():
        print(f"medzoo: using checkpoint {p / 'best.pt'} with the config stored in it",
              file=sys.stderr)
        return p
    cfg = load_config(p, overrides)
    ckpt = check_config_matches_run(cfg, str(p))
    print(f"medzoo: using checkpoint {ckpt} (its model/data config matches {p})",
          file=sys.stderr)
    return cfg.run_dir


def print_metrics(metrics: dict, title: str):
    print(f"\n{title}")
    columns = {"acc": "accuracy", "auc": "auc", "prec": "precision", "recall": "recall",
               "f1": "f1", "bal_acc": "balanced_accuracy", "sens": "sensitivity",
               "spec": "specificity", "ece": "ece"}
    print(f"  {'task':<22}{'n':>6}" + "".join(f"{c:>8}" for c in columns) + f"{'thr':>8}")
    for task, m in metrics.items():
        d = m.get("decision") or {}
        thr = "argmax" if d.get("threshold") is None else f"{d['threshold']:.3f}"
        print(f"  {task:<22}{m['n']:>6}" + "".join(
            "       –" if m.get(k) is None else f"{m[k]:8.3f}" for k in columns.values())
            + f"{thr:>8}")
    if any(m.get("decision") for m in metrics.values()):
        print("  labels as the board gives them: softmax(logits / T), binary tasks positive when "
              "P(positive) >= thr (fitted on val: calibration.json);\n  plain argmax figures: "
              "\"argmax\" in eval_<split>/metrics.json")
    else:
        print("  no calibration.json (run trained before it existed): T = 1 and argmax; "
              "`medzoo train` on its config fits one")


def cmd_train(args):
    from .train import evaluate_run, train
    cfg = _config(args)
    summary = train(cfg, progress=not args.quiet, restart=args.restart)
    metrics = evaluate_run(cfg.run_dir, "val")
    print_metrics(metrics, f"{cfg.name}: validation metrics (best epoch, "
                           f"{summary['epochs']} epochs run)")


def cmd_evaluate(args):
    from .train import evaluate_run
    run_dir = _run_dir(args.target)
    metrics = evaluate_run(run_dir, args.split)
    print_metrics(metrics, f"{run_dir.name}: {args.split} metrics")
    print(f"\nwritten: {run_dir / f'eval_{args.split}'}")


def cmd_export(args):
    from .export import export_run
    run_dir = _run_dir(args.target)
    report = export_run(run_dir, check_per_task=args.check_images)
    print(json.dumps(report, indent=2))


def cmd_audit(args):
    from .shortcut_audit import audit_task, format_table
    from .train import tasks_of

    tasks = []
    for t in args.tasks:  # a built-in task's name, or a training config: its tasks
        tasks += tasks_of(load_config(t)) if t.endswith((".yaml", ".yml")) else [t]
    results = [audit_task(t, root=args.data_dir, size=args.size, split=args.split,
                          preprocess={} if args.preprocess == "none" else None)
               for t in tasks]
    print(json.dumps(results, indent=1) if args.json else format_table(results))


def cmd_predict(args):
    from .predict import predict_files
    # a run's config names its run directory (evaluate/export take either too)
    run_dir = _run_dir(args.run_dir) if Path(args.run_dir).is_file() else args.run_dir
    return predict_files(run_dir, args.inputs, args.task,
                         "qonnx" if args.qonnx else "pytorch", args.format, args.out,
                         args.recursive, args.with_acc, args.chunk, args.strict,
                         log=lambda m: print(m, file=sys.stderr),
                         note=lambda m: print(m, file=sys.stderr))


def main(argv=None):
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser(prog="medzoo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train (or resume) a run from a YAML config")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3")
    p.add_argument("--data-dir", help="data root (default: $MEDFPGA_DATA or ../shared/data)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--restart", action="store_true",
                   help="discard this run's last.pt, best.pt, history and config snapshot "
                        "(nothing else in its directory) and train from scratch")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="per-task metrics of a run's best checkpoint")
    p.add_argument("target", help="run directory or the run's config")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("export", help="QONNX export plus the QONNX-vs-Brevitas check")
    p.add_argument("target", help="run directory or the run's config")
    p.add_argument("--check-images", type=int, default=32, help="test images per task")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("audit", help="shortcut audit: can the label be told from image style?")
    p.add_argument("tasks", nargs="+", help="built-in task names, or training configs (.yaml): "
                   "their tasks, your own declared ones included")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--preprocess", default="default", choices=["default", "none"],
                   help="the task's default preprocessing (crop + stretch for the image "
                        "trees) or none: compare the two to see what it removes")
    p.add_argument("--data-dir", help="data root (default: $MEDFPGA_DATA or ../shared/data)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("predict", help="classify image files with a run's model on this "
                       "machine; the board CLI's `classify` output")
    p.add_argument("run_dir", help="the run directory (<out_dir>/<name>, holding best.pt) or "
                   "the run's config")
    p.add_argument("inputs", nargs="+", help="image files, .npy arrays or folders")
    p.add_argument("--task", help="the task (head) to read; required with several tasks")
    p.add_argument("--qonnx", action="store_true", help="run the run's QONNX export "
                   "(medzoo export) with qonnx's executor instead of PyTorch")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--out", help="output file (default: stdout)")
    p.add_argument("--recursive", action="store_true", help="also images in subfolders")
    p.add_argument("--chunk", type=positive_int, default=256, help="images decoded at a time")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable input "
                   "(exit 2, no output) instead of reporting it in its row")
    p.add_argument("--with-acc", action="store_true", help="include the integer accumulators "
                   "of the last layer (quantized models)")
    p.set_defaults(func=cmd_predict)
    args = ap.parse_args(argv)
    try:
        rc = args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"medzoo: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable/full run directory, a file where a folder should be, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"medzoo: error: {where}{e.strerror or e}; check the path, its permissions and "
              "free space", file=sys.stderr)
        return 2
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
