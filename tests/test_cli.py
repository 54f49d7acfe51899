import subprocess
import sys

import yaml


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "brevitas_models.cli", *args],
                          capture_output=True, text=True, cwd=cwd)


def run_here(capsys, *args):
    """main() in this process (saves the ~5 s interpreter + torch start of a subprocess); an
    uncaught exception fails the test just as a traceback would."""
    from brevitas_models.cli import main
    rc = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


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
    assert f"using checkpoint {tmp_path / 'runs' / 'cli' / 'best.pt'}" in r.stderr


def test_cli_edited_config_is_refused_until_restart(tmp_path, capsys):
    cfg = {"name": "ed", "out_dir": str(tmp_path / "runs"),
           "data": {"tasks": ["tiny_breastmnist"], "epoch_size": 32},
           "model": {"arch": "mlp", "hidden": [8], "head_hidden": 4},
           "train": {"epochs": 1, "batch_size": 16, "threads": 1}}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert run_here(capsys, "train", str(p), "--quiet").returncode == 0
    cfg["model"]["w_bits"] = cfg["model"]["a_bits"] = 2  # edited after training
    p.write_text(yaml.safe_dump(cfg))
    for cmd in ("evaluate", "export"):
        r = run_here(capsys, cmd, str(p))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "model.w_bits (4 in the checkpoint, 2 in the config)" in r.stderr
        assert "--restart" in r.stderr
    # the run directory still means "the checkpoint as trained"
    r = run_here(capsys, "evaluate", str(tmp_path / "runs" / "ed"))
    assert r.returncode == 0 and "with the config stored in it" in r.stderr, r.stderr
    r = run_here(capsys, "train", str(p), "--quiet")
    assert r.returncode == 2 and "different config" in r.stderr and "--restart" in r.stderr
    r = run_here(capsys, "train", str(p), "--quiet", "--restart")
    assert r.returncode == 0 and "restart: removed" in r.stdout, r.stderr
    r = run_here(capsys, "evaluate", str(p))
    assert r.returncode == 0 and "using checkpoint" in r.stderr, r.stderr


def test_cli_bad_config_is_one_clear_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {w_bits: 12}\n")
    r = run("train", str(p))
    assert r.returncode == 2
    assert "model.w_bits" in r.stderr and "Traceback" not in r.stderr


def test_cli_empty_config_and_bad_name_are_one_line(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("")
    r = run_here(capsys, "train", str(p))
    assert r.returncode == 2 and "config file is empty" in r.stderr and "Traceback" not in r.stderr
    p.write_text("name: ../elsewhere\n")
    r = run_here(capsys, "train", str(p))
    assert r.returncode == 2 and "plain directory name" in r.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_cli_missing_run_is_clear(tmp_path):
    r = run("evaluate", str(tmp_path))
    assert r.returncode == 2 and "train the run first" in r.stderr
