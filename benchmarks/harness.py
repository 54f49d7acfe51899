"""What the benchmark drivers share: the common options, the provenance of a record set, the
``--update`` merge with the records already written, and writing the results JSON and the
driver's section of docs/results.md."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from brevitas_models.files import write_text_atomic
from brevitas_models.report import write_json
from finn_build.provenance import git_commit, now

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "docs" / "results.md"
DASH = "–"  # rendered for missing (None) values


def argument_parser(doc: str, out: str | None = None,
                    update: str | None = None) -> argparse.ArgumentParser:
    """A driver's parser with its docstring as the description (kept as written), plus
    ``--out`` (the results JSON, default ``out``) and ``--update`` (``update`` names what one
    run selects, e.g. "configs") where given."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if out is not None:
        parser.add_argument("--out", default=out, help="results JSON (default: %(default)s)")
    if update is not None:
        parser.add_argument("--update", action="store_true",
                            help=f"re-run only the given {update} and keep the other records "
                                 "of --out (each record names the commit it ran at)")
    return parser


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command recorded with the results: ``python -m <module> <arguments>``.
    (Not sys.argv itself: under ``-m`` its first entry is the module's file path.)"""
    return " ".join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def record_set(records: list, command: str, commit: str | None = None,
               date: str | None = None, **fields) -> dict:
    """The results JSON: the records, the commit and date they were written at (now, unless
    given), the command(s) that made them, and the driver's own ``fields`` (notes, ...)."""
    return {"git_commit": commit or git_commit(), "date": date or now(), "command": command,
            **fields, "records": records}


def provenance_text(results: dict) -> str:
    """How a driver's docs/results.md section starts: where its figures come from."""
    return (f"From `{results['command']}` at commit `{results['git_commit']}` "
            f"({results['date']})")


def read_results(path) -> dict | None:
    """The results JSON at ``path``; None when there is none yet."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def keep_other_records(out_path, records: list, key, command: str):
    """``--update``: the records of ``out_path`` whose ``key(record)`` was not run now (each
    keeping the commit it ran at), then the new ones; the commands joined.
    -> (records, command)"""
    old = read_results(out_path)
    if old is None:
        return records, command
    done = {key(r) for r in records}
    kept = [dict(r, git_commit=r.get("git_commit", old["git_commit"]))
            for r in old["records"] if key(r) not in done]
    return kept + records, f"{old['command']}; {command}"


def study_record_set(path, study: str, records: list, command: str, commit: str) -> dict:
    """The records of one study in a results file that several drivers share (accuracy.json:
    bench_accuracy, bench_generalization, bench_mnv2): the other studies' records stay, each
    with the commit it ran at; the commands of every contribution are kept."""
    old = read_results(path) or {"records": [], "command": ""}
    others = [dict(r, git_commit=r.get("git_commit", old.get("git_commit")))
              for r in old["records"] if r.get("study") != study]
    commands = [c for c in old["command"].split("; ") if c and c != command] + [command]
    return record_set(others + records, "; ".join(commands), commit=commit)


def publish(results: dict, out_path, section: str, table_md: str, preamble: str,
            results_md=RESULTS_MD) -> None:
    """Write ``results`` to ``out_path`` and replace section ``section`` of ``results_md``
    (other sections untouched); both files are written to a temp file and renamed, so a
    reader never sees half of one."""
    write_json(results, str(out_path))
    update_results_md(str(results_md), section, table_md, preamble)


# ---------------------------------------------------------------- docs/results.md tables


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
    text = Path(path).read_text(encoding="utf-8") if Path(path).exists() else "# Results\n"
    i, j = text.find(begin), text.find(end)
    if i != -1 and j > i:
        # plain string slicing: tables may contain backslashes re.sub would mangle
        text = text[:i] + block + text[j + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## {section_title}\n\n{block}\n"
    write_text_atomic(Path(path), text)
