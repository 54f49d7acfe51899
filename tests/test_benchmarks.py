"""benchmarks/: the shared harness on the real results files (the --update merge, the
docs/results.md section update, the record-set schema) and every driver's --help. Nothing
here runs a benchmark."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DRIVERS = ["bench_accuracy", "bench_hardware", "bench_rtlsim", "bench_rtlsim_ceiling",
           "bench_generalization", "bench_shortcut_audit", "bench_layers"]


def test_update_keeps_the_records_not_rerun_with_their_commit(tmp_path):
    out = tmp_path / "rtlsim.json"
    shutil.copy(RESULTS / "rtlsim.json", out)
    old = json.loads(out.read_text())
    rerun, kept = old["records"][0], old["records"][1:]
    assert kept, "rtlsim.json needs two records for this test"
    new = [dict(rerun, cycles_per_image=-1, git_commit="new-commit")]

    records, command = harness.keep_other_records(
        out, new, lambda r: r["model"], "python -m benchmarks.bench_rtlsim --update")

    assert [r["model"] for r in records] == [r["model"] for r in kept] + [rerun["model"]]
    # records not run now keep the commit they ran at (or the set's, if they had none)
    assert [r["git_commit"] for r in records[:-1]] == [
        r.get("git_commit", old["git_commit"]) for r in kept]
    assert records[-1]["cycles_per_image"] == -1 and records[-1]["git_commit"] == "new-commit"
    assert command == old["command"] + "; python -m benchmarks.bench_rtlsim --update"


def test_update_gives_records_without_a_commit_the_commit_of_their_set(tmp_path):
    out = tmp_path / "old.json"
    out.write_text(json.dumps({"git_commit": "abc", "command": "first", "records": [
        {"model": "a"}, {"model": "b", "git_commit": "def"}, {"model": "c"}]}))
    records, command = harness.keep_other_records(
        out, [{"model": "c", "git_commit": "new"}], lambda r: r["model"], "second")
    assert records == [{"model": "a", "git_commit": "abc"}, {"model": "b", "git_commit": "def"},
                       {"model": "c", "git_commit": "new"}]
    assert command == "first; second"


def test_update_without_earlier_results_keeps_only_the_new_ones(tmp_path):
    new = [{"model": "a", "git_commit": "x"}]
    assert harness.keep_other_records(tmp_path / "none.json", new, lambda r: r["model"],
                                      "cmd") == (new, "cmd")


def test_publish_replaces_only_its_section_of_results_md(tmp_path):
    results_md = tmp_path / "results.md"
    shutil.copy(ROOT / "docs" / "results.md", results_md)
    before = results_md.read_text()
    inode_before = results_md.stat().st_ino
    begin = "<!-- BEGIN rtl-simulation-speed-ceiling -->"
    end = "<!-- END rtl-simulation-speed-ceiling -->"
    assert begin in before and end in before
    results = harness.record_set([{"model": "m", "speedup_bound": 1.5}], "python -m x",
                                 commit="c0ffee", date="2000-01-01")

    harness.publish(results, tmp_path / "out.json", "RTL simulation speed ceiling",
                    "| model |\n|---|\n| m |\n", harness.provenance_text(results) + ".",
                    results_md=results_md)

    after = results_md.read_text()
    section = after[after.index(begin):after.index(end) + len(end)]
    assert section == (f"{begin}\nFrom `python -m x` at commit `c0ffee` (2000-01-01).\n\n"
                       f"| model |\n|---|\n| m |\n{end}")
    # everything outside the section is byte for byte what it was
    assert after[:after.index(begin)] == before[:before.index(begin)]
    assert after[after.index(end):] == before[before.index(end):]
    # written to a new file and renamed over the old one, no temp file left behind
    assert results_md.stat().st_ino != inode_before
    assert sorted(os.listdir(tmp_path)) == ["out.json", "results.md"]
    assert json.loads((tmp_path / "out.json").read_text()) == results


@pytest.mark.parametrize("name, fields", [
    ("hardware", {"clock_mhz": 100.0, "total_seconds": 1.0, "notes": ""}),
    ("rtlsim", {"total_seconds": 1.0, "notes": ""}),
    ("rtlsim_ceiling", {}),
    ("accuracy", {}),
])
def test_record_set_has_the_keys_of_the_results_files(name, fields):
    """New record sets must mix with the ones written before the harness."""
    old = json.loads((RESULTS / f"{name}.json").read_text())
    new = harness.record_set([], "python -m x", **fields)
    assert set(new) == set(old)
    assert isinstance(new["date"], str) and new["command"] == "python -m x"


def test_tables_rendered_from_the_results_files_are_the_ones_in_results_md():
    """The table format is unchanged: the committed records render to the committed tables."""
    from benchmarks.bench_accuracy import target_summary
    from benchmarks.bench_generalization import STUDY, summary_rows, target_lines
    from benchmarks.bench_hardware import HW_COLUMNS
    from benchmarks.bench_rtlsim import COLUMNS, flat

    results_md = (ROOT / "docs" / "results.md").read_text()
    hardware = json.loads((RESULTS / "hardware.json").read_text())
    rtlsim = json.loads((RESULTS / "rtlsim.json").read_text())
    accuracy = json.loads((RESULTS / "accuracy.json").read_text())
    assert harness.render_generic_table(hardware["records"], HW_COLUMNS) in results_md
    assert harness.render_generic_table([flat(r) for r in rtlsim["records"]], COLUMNS) in results_md
    # accuracy.json holds bench_accuracy's records and bench_generalization's (its "study")
    own = [r for r in accuracy["records"] if r.get("study") is None]
    study = [r for r in accuracy["records"] if r.get("study") == STUDY]
    assert own and study
    test_split = [r for r in own if r["split"] == "test"]
    assert harness.render_accuracy_table(test_split) in results_md
    assert target_summary(own) in results_md
    assert harness.render_generic_table(summary_rows(study)) in results_md
    assert "\n".join(target_lines(study)) in results_md


def test_command_line_names_the_module_and_its_arguments():
    assert (harness.command_line("benchmarks.bench_rtlsim", ["--configs", "a.yaml", "--update"])
            == "python -m benchmarks.bench_rtlsim --configs a.yaml --update")
    assert (harness.command_line("benchmarks.bench_rtlsim", [])
            == "python -m benchmarks.bench_rtlsim")


@pytest.mark.parametrize("driver", DRIVERS)
def test_driver_answers_help(driver):
    run = subprocess.run([sys.executable, "-m", f"benchmarks.{driver}", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"python -m benchmarks.{driver}" in run.stdout  # the docstring's usage lines


def _rec(model, w, a, task, acc, auc=0.9):
    return {"model": model, "w_bits": w, "a_bits": a, "mode": "multitask", "loss": "ce",
            "task": task, "split": "test", "acc": acc, "auc": auc, "precision": 0.5,
            "recall": 0.25, "f1": 1 / 3, "n": 40}


def test_render_accuracy_table_sorted_and_formatted():
    recs = [_rec("cnn", 2, 2, "A", 0.6), _rec("cnn", 8, 8, "B", 0.85),
            _rec("cnn", None, None, "A", 0.9), _rec("cnn", 1, 1, "A", 0.5),
            _rec("cnn", 8, 8, "A", 0.87654, auc=None), _rec("cnn", 4, 4, "A", 0.8)]
    md = harness.render_accuracy_table(recs)
    rows = [r for r in md.strip().splitlines()[2:]]
    assert len(rows) == 6
    bits_task = [(c[3], c[5]) for c in
                 ([x.strip() for x in r.strip("|").split("|")] for r in rows)]
    assert bits_task == [("float", "A"), ("8", "A"), ("8", "B"), ("4", "A"),
                         ("2", "A"), ("1", "A")]
    assert "| 0.877 | – | 0.500 | 0.250 | 0.333 | 40 |" in rows[1]
    assert md.splitlines()[0].startswith("| model |")


def test_render_generic_table():
    md = harness.render_generic_table([{"x": 1, "y": 0.12345}, {"x": 2}], ["x", "y"])
    assert md.splitlines() == ["| x | y |", "|---|---|", "| 1 | 0.123 |", "| 2 | – |"]


def test_update_results_md_replaces_only_its_section(tmp_path):
    path = tmp_path / "docs" / "results.md"
    os.makedirs(path.parent)
    harness.update_results_md(str(path), "Accuracy", "| a |\n|---|\n| old |\n", preamble="First run.")
    harness.update_results_md(str(path), "Hardware estimates", "| lut |\n|---|\n| 1234 |\n")
    before = path.read_text()
    hw_block = before[before.index("<!-- BEGIN hardware-estimates -->"):]
    assert "<!-- END hardware-estimates -->" in hw_block

    harness.update_results_md(str(path), "Accuracy", "| a |\n|---|\n| new \\d |\n")
    after = path.read_text()
    assert "new \\d" in after and "old" not in after and "First run." not in after
    assert after.count("## Accuracy") == 1 and after.count("<!-- BEGIN accuracy -->") == 1
    assert after[after.index("<!-- BEGIN hardware-estimates -->"):] == hw_block
    assert after.index("## Accuracy") < after.index("## Hardware estimates")
    assert [f.name for f in path.parent.iterdir()] == ["results.md"]


def test_layers_table_rendered_from_layers_json_is_the_one_in_results_md():
    from benchmarks.bench_layers import table, verdicts

    layers = json.loads((RESULTS / "layers.json").read_text())
    results_md = (ROOT / "docs" / "results.md").read_text()
    assert layers["records"]
    assert table(layers["records"]) in results_md
    assert "\n".join(verdicts(layers["records"])) in results_md


def test_mnv2_fine_tunes_start_from_and_distill_the_float_run_of_their_seed():
    from benchmarks.bench_mnv2 import GRID, run_config
    configs = {(n, s): run_config(n, s, "runs/bench") for n in GRID for s in (0, 1)}  # all valid
    assert configs["mnv2_mt_w4a4_ft_e90", 0].train.init_from == "runs/bench/mnv2_mt_float_e90"
    assert configs["mnv2_mt_w4a4_ft_e60", 1].train.init_from == "runs/bench/mnv2_mt_float_e60_s1"
    assert configs["mnv2_mt_float_e60", 1].model.w_bits is None
    assert configs["mnv2_mt_w4a4_ft_e60", 1].model.w_bits == 4
    kd = configs["mnv2_mt_w4a4_kd9_e90", 1].train
    assert kd.init_from == kd.distill.teacher == "runs/bench/mnv2_mt_float_e90_s1"
    assert (kd.distill.weight, kd.distill.temperature) == (0.9, 4)
