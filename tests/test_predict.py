"""`medzoo predict`: a real tiny run on real test images written as PNG files, through the CLI
entry point (``main(argv)`` in this process). The labels and probabilities are the run's own
evaluation path's on the loader's pixels (``train.predict`` + the run's decisions), the
QONNX backend's integer accumulators are the Brevitas model's, and the output is the board
CLI's format (``medimage.results``)."""
import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_TASKS, tiny_config

# tiny_breastmnist trained with the style-removing steps: predict must apply them as training
PRE = {"tiny_breastmnist": {"crop": True, "normalize": "stretch"},
       "tiny_bloodmnist": {"normalize": "equalize"}}
N = 5  # test images per task


def medzoo(capsys, *args):
    from brevitas_models.cli import main
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained and exported tiny run, and PNG files of N real test images of every task at
    their native size and channels (what a user has), with the loader's model inputs."""
    from brevitas_models.data import load_task
    from brevitas_models.export import export_run
    from brevitas_models.train import train

    tmp = tmp_path_factory.mktemp("predict")
    cfg = tiny_config(tmp, "mlp", name="pred", train={"epochs": 1},
                      data={"preprocess": PRE})
    train(cfg, progress=False, log=lambda *a: None)
    export_run(cfg.run_dir, check_per_task=2)
    files, want_x, raw_x = {}, {}, {}
    for t in TINY_TASKS:
        native = load_task(t, root=cfg.data.root, preprocess={})["test"]
        model_in = load_task(t, root=cfg.data.root, size=cfg.data.size,
                             channels=cfg.model.in_channels,
                             preprocess=cfg.data.preprocess[t].model_dump())["test"]
        plain = load_task(t, root=cfg.data.root, size=cfg.data.size,
                          channels=cfg.model.in_channels, preprocess={})["test"]
        d = tmp / "images" / t
        d.mkdir(parents=True)
        files[t] = []
        for i in range(N):
            a = native.images[i]
            f = d / f"{i:02d}_{native.labels[i]}.png"
            Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(f)
            files[t].append(f)
        want_x[t], raw_x[t] = model_in.images[:N], plain.images[:N]
    return cfg, files, want_x, raw_x


def _reference(cfg, task, x):
    """The run's evaluation path on the loader's pixels: logits, probabilities, labels."""
    from brevitas_models.train import load_run, predict, run_decisions
    from medimage import decision as rule

    model, _ = load_run(cfg.run_dir)
    t = next(m for m in model.tasks_meta if m["name"] == task)
    lg = predict(model, x, "cpu")
    a, b = t["slice"]
    probs, labels = rule.apply(lg[:, a:b], run_decisions(cfg.run_dir)[task])
    with torch.no_grad():
        acc = model.int_outputs(torch.from_numpy(x).permute(0, 3, 1, 2).float()).numpy()
    return lg[:, a:b], probs, labels, acc


def test_predict_equals_the_runs_evaluation_on_png_files_of_every_task(run, capsys, tmp_path):
    from brevitas_models.predict import Predictor
    from medimage import results

    cfg, files, want_x, raw_x = run
    for task in TINY_TASKS:
        folder = files[task][0].parent
        # the files become the loader's pixels (the run's preprocessing applied) ...
        spec = json.loads((cfg.run_dir / "export" / "model.meta.json").read_text())
        t = next(x for x in spec["tasks"] if x["name"] == task)
        p = Predictor(cfg.run_dir)
        got_x = np.stack([p.load(f, p.task(task)) for f in files[task]])
        assert np.array_equal(got_x, want_x[task]), task
        if task in PRE:  # ... which the preprocessing changes: a run without it would differ
            assert not np.array_equal(want_x[task], raw_x[task]), task
            assert p.task(task)["preprocess"] == {**t["preprocess"], **PRE[task]}
        lg, probs, labels, acc = _reference(cfg, task, want_x[task])
        out = {}
        for backend in ("pytorch", "qonnx"):
            f = tmp_path / f"{task}_{backend}.json"
            r = medzoo(capsys, "predict", cfg.run_dir, folder, "--task", task, "--out", f,
                       "--with-acc", *(["--qonnx"] if backend == "qonnx" else []))
            assert r.returncode == 0, r.stderr
            out[backend] = got = json.loads(f.read_text())
            assert got["backend"] == backend and got["task"] == task
            assert got["images"] == N and got["failed"] == 0 and got["skipped"] == []
            rows = got["results"]
            assert [Path(x["input"]).name for x in rows] == [f.name for f in files[task]]
            assert all(x["status"] == "ok" and x["task"] == task for x in rows)
            assert [x["label_index"] for x in rows] == labels.tolist(), (task, backend)
            classes = p.task(task)["classes"]
            assert [x["label"] for x in rows] == [classes[k] for k in labels]
            # accumulators: the Brevitas model's integers (QONNX: from its own execution)
            assert np.array_equal(np.array([x["acc"] for x in rows]), np.rint(acc)), backend
            assert np.abs(acc - np.rint(acc)).max() < 1e-2
        pt, qo = out["pytorch"]["results"], out["qonnx"]["results"]
        # pytorch: the evaluation path's very numbers
        assert np.array_equal(np.array([x["logits"] for x in pt], np.float32), lg)
        p_got = np.array([list(x["probabilities"].values()) for x in pt])
        assert np.array_equal(p_got, probs), task
        assert out["pytorch"]["decision"] == run_decision(cfg, task)
        # qonnx: acc * scale + bias in float32, the same decision
        assert np.allclose([x["logits"] for x in qo], lg, rtol=0, atol=1e-5)
        assert np.allclose([list(x["probabilities"].values()) for x in qo], probs, atol=1e-4)
        assert out["qonnx"]["decision"] == t.get("decision")
        # the board CLI's rows: the same keys (medimage.results)
        want_keys = ["input", "task", "label", "label_index", "threshold", "probabilities",
                     "logits", "acc", "status"]
        assert [list(x) for x in pt] == [want_keys] * N
        shared = set(results.header(p.task(task), pt, [], 0.0))
        assert shared <= set(out["pytorch"]) and shared <= set(out["qonnx"])
    # CSV: the board's columns, one line per file, the same labels as the JSON
    f = tmp_path / "r.csv"
    task = "tiny_bloodmnist"
    r = medzoo(capsys, "predict", cfg.run_dir, *files[task], "--task", task, "--format", "csv",
               "--out", f)
    assert r.returncode == 0, r.stderr
    with open(f, newline="") as fh:
        rows = list(csv.reader(fh))
    classes = p.task(task)["classes"]
    assert rows[0] == ["input", "task", "label", "label_index"] + [f"p_{c}" for c in classes] \
        + ["status", "error", "threshold"]
    want = results.render([{**x, "status": "ok"} for x in out["pytorch"]["results"]],
                          classes, "csv", {})
    assert f.read_bytes() == want.encode()


def run_decision(cfg, task):
    return json.loads((cfg.run_dir / "calibration.json").read_text())["tasks"][task]["decision"]


def test_predict_reports_unreadable_files_per_row_and_strict_stops(run, capsys, tmp_path):
    cfg, files, _, _ = run
    task = "tiny_pneumoniamnist"
    d = tmp_path / "in"
    d.mkdir()
    for f in files[task][:2]:
        (d / f.name).write_bytes(f.read_bytes())
    (d / "zz_broken.png").write_bytes(b"this is not a png")
    (d / "notes.txt").write_text("not an input")
    np.save(d / "raw.npy", np.zeros((28, 28), np.uint8))  # a model input as an array
    out = tmp_path / "r.json"
    r = medzoo(capsys, "predict", cfg.run_dir, d, "--task", task, "--out", out)
    assert r.returncode == 1, r.stderr
    assert "skipped 1 files" in r.stderr and "notes.txt" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("medzoo: error: 1 of 4 inputs could not be read")
    assert "zz_broken.png" in last and "--strict" in last
    got = json.loads(out.read_text())
    assert got["failed"] == 1 and got["images"] == 4
    assert got["skipped"] == [str(d / "notes.txt")]
    by = {Path(x["input"]).name: x for x in got["results"]}
    bad = by.pop("zz_broken.png")
    assert bad["status"] == "error" and "zz_broken.png: cannot decode the image" in bad["error"]
    assert bad["task"] == task
    assert all(x["status"] == "ok" for x in by.values()) and "raw.npy" in by
    r = medzoo(capsys, "predict", cfg.run_dir, d, "--task", task, "--strict", "--out",
               tmp_path / "s.json")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("medzoo: error: ") and "zz_broken.png: cannot decode" in last
    assert "--strict" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "r.json"]


def test_predict_user_errors_are_one_line_exit_2(run, capsys, tmp_path):
    cfg, files, _, _ = run
    png = files["tiny_breastmnist"][0]
    tasks = ", ".join(TINY_TASKS)
    no_export = tmp_path / "no_export"
    no_export.mkdir()
    for name in ("best.pt", "config.yaml", "calibration.json"):
        (no_export / name).write_bytes((cfg.run_dir / name).read_bytes())
    cases = [
        ((cfg.run_dir, png, "--task", "chest"),
         f"unknown task 'chest'; this model's tasks are: {tasks}"),
        ((cfg.run_dir, png), f"--task is required: this model has tasks {tasks}"),
        ((tmp_path / "nowhere", png, "--task", "tiny_breastmnist"),
         "nowhere: no such run directory"),
        ((tmp_path, png, "--task", "tiny_breastmnist"), "best.pt not found"),
        ((cfg.run_dir, tmp_path / "nope.png", "--task", "tiny_breastmnist"),
         "nope.png: no such file or folder"),
        ((cfg.run_dir, png, "--task", "tiny_breastmnist", "--out", tmp_path),
         "is a folder; give a file name"),
        ((no_export, png, "--task", "tiny_breastmnist", "--qonnx"),
         f"no QONNX export ({no_export}/export/model.onnx + model.meta.json); export it "
         f"first: medzoo export {no_export}"),
    ]
    for args, msg in cases:
        r = medzoo(capsys, "predict", *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("medzoo: error: ") and msg in lines[0], \
            (args, r.stderr)
    # a stale export (best.pt changed since) is refused, not silently used
    stale = tmp_path / "stale"
    stale.mkdir()
    for name in ("best.pt", "config.yaml", "calibration.json", "export"):
        src = cfg.run_dir / name
        if src.is_dir():
            (stale / name).mkdir()
            for f in src.iterdir():
                (stale / name / f.name).write_bytes(f.read_bytes())
        else:
            (stale / name).write_bytes(src.read_bytes())
    ck = torch.load(stale / "best.pt", weights_only=False)
    ck["epoch"] += 1
    torch.save(ck, stale / "best.pt")
    r = medzoo(capsys, "predict", stale, png, "--task", "tiny_breastmnist", "--qonnx")
    assert r.returncode == 2 and "export of another best.pt" in r.stderr
    assert f"medzoo export {stale}" in r.stderr


def test_predict_takes_the_runs_config_like_evaluate_and_export(run, capsys, tmp_path):
    cfg, files, _, _ = run
    task = "tiny_breastmnist"
    f = tmp_path / "r.json"
    r = medzoo(capsys, "predict", cfg.run_dir / "config.yaml", files[task][0], "--task", task,
               "--out", f)
    assert r.returncode == 0, r.stderr
    assert f"using checkpoint {cfg.run_dir / 'best.pt'}" in r.stderr
    got = json.loads(f.read_text())
    assert got["run_dir"] == str(cfg.run_dir) and got["results"][0]["status"] == "ok"
