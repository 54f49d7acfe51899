import subprocess
import sys

import yaml


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "brevitas_models.cli", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_cli_train_evaluate_export(tmp_path):
    cfg = {"name": "cli", "out_dir": str(tmp_path / "runs"),
           "data": {"tasks": ["tiny_pneumoniamnist", "tiny_breastmnist"], "epoch_size": 64},
           "model": {"arch": "mlp", "hidden": [16], "head_hidden": 4},
           "train": {"epochs": 3, "batch_size": 32, "threads": 1}}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = run("train", str(p), "--set", "train.epochs=1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "tiny_breastmnist" in r.stdout and "validation metrics" in r.stdout
    r = run("evaluate", str(p), "--split", "test")
    assert r.returncode == 0, r.stderr
    assert "test metrics" in r.stdout
    r = run("export", str(p), "--check-images", "2")
    assert r.returncode == 0, r.stderr
    assert '"integer_exact": true' in r.stdout


def test_cli_bad_config_is_one_clear_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {w_bits: 12}\n")
    r = run("train", str(p))
    assert r.returncode == 2
    assert "model.w_bits" in r.stderr and "Traceback" not in r.stderr


def test_cli_missing_run_is_clear(tmp_path):
    r = run("evaluate", str(tmp_path))
    assert r.returncode == 2 and "train the run first" in r.stderr
