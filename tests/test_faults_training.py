"""Issue 11, training side: exact resume across Brevitas' statistics phase, and checkpoint,
config and run-directory faults that must be one clear error (never a traceback or a silently
different model)."""
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import torch
import yaml

from brevitas_models.cli import main
from brevitas_models.config import ConfigError, config_from_dict, merge
from brevitas_models.train import (CheckpointError, atomic_save, check_config_matches_run,
                                   load_checkpoint, load_data, train)

from conftest import tiny_config

TWO_TASKS = ["tiny_pneumoniamnist", "tiny_breastmnist"]
STATS_STEPS = 300  # Brevitas' collect_stats_steps of the activation scales (Uint8ActPerTensorFloat)


def small_cfg(tmp_path, name, steps_per_epoch, epochs, **over):
    """A tiny MLP with batch 2, so that an epoch of `steps_per_epoch` steps costs ~1 s.
    weight_decay > 0 moves the activation scales during the statistics phase too."""
    base = {"name": name, "data": {"tasks": TWO_TASKS, "epoch_size": 2 * steps_per_epoch},
            "model": {"hidden": [8], "head_hidden": 4},
            "train": {"epochs": epochs, "batch_size": 2, "threads": 1, "weight_decay": 1e-4,
                      "patience": 10}}
    return tiny_config(tmp_path, **merge(base, over))


def assert_same(a, b, where=""):
    """Every tensor, array and value of two checkpoints is identical (wall times aside)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            if k != "seconds":
                assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def ckpt(cfg, which):
    return torch.load(cfg.run_dir / f"{which}.pt", weights_only=False)


def stats_counters(cfg):
    return {n: s["counter"] for n, s in ckpt(cfg, "last")["quant_stats"].items()}


@pytest.mark.parametrize("steps, epochs, kills", [
    # epoch 1 (310 steps) holds the whole statistics phase; killed after it, resumed
    (310, 2, [1]),
    # 160-step epochs: killed inside the phase (step 160) and right after it (step 320)
    (160, 3, [1, 1]),
])
def test_resume_is_bit_identical_across_the_statistics_phase(tmp_path, steps, epochs, kills):
    ref = small_cfg(tmp_path, "ref", steps, epochs)
    cut = small_cfg(tmp_path, "cut", steps, epochs)
    data = load_data(ref)
    train(ref, data=data, progress=False, log=lambda *a: None)
    logs = []
    done = 0
    for k in kills:
        train(cut, data=data, progress=False, stop_after_epochs=k, log=logs.append)
        done += k
        counters = set(stats_counters(cut).values())
        # the scales really are mid-phase (counter < 300) or just past it (301)
        assert counters == {min(done * steps, STATS_STEPS + 1)}
    train(cut, data=data, progress=False, log=logs.append)
    assert sum("resuming cut" in line for line in logs) == len(kills)
    for which in ("last", "best"):
        a, b = ckpt(ref, which), ckpt(cut, which)
        a.pop("config"), b.pop("config")  # differ only by name and out_dir
        assert_same(a, b, which)
    assert ckpt(ref, "last")["state"]["epoch"] == epochs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 1-epoch run (4 steps); tests copy its run directory before breaking files in it."""
    tmp = tmp_path_factory.mktemp("faults")
    cfg = small_cfg(tmp, "base", 4, 1)
    train(cfg, progress=False, log=lambda *a: None)
    return cfg


def copy_run(trained, tmp_path, name="run", **over):
    cfg = small_cfg(tmp_path, name, 4, 1, **over)
    shutil.copytree(trained.run_dir, cfg.run_dir)
    for which in ("best", "last"):  # the copy's checkpoints must carry the copy's config
        ck = ckpt(cfg, which)
        ck["config"] = cfg.to_dict()
        torch.save(ck, cfg.run_dir / f"{which}.pt")
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return cfg


def break_file(path, how):
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "text":
        path.write_text("this is not a checkpoint\n")
    elif how == "pickle":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    elif how == "foreign_dict":
        torch.save({"weights": torch.zeros(3)}, path)


FAULTS = ["empty", "truncated", "text", "pickle", "foreign_dict"]


@pytest.mark.parametrize("how", FAULTS)
def test_broken_best_pt_is_one_clear_error(trained, tmp_path, how):
    cfg = copy_run(trained, tmp_path)
    break_file(cfg.run_dir / "best.pt", how)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(cfg.run_dir / "best.pt")
    msg = str(e.value)
    assert str(cfg.run_dir / "best.pt") in msg and "--restart" in msg and "\n" not in msg


@pytest.mark.parametrize("how", FAULTS)
def test_broken_last_pt_stops_resume_with_the_fix(trained, tmp_path, how):
    cfg = copy_run(trained, tmp_path, train={"epochs": 2})
    break_file(cfg.run_dir / "last.pt", how)
    with pytest.raises(CheckpointError, match="last.pt.*--restart"):
        train(cfg, progress=False, log=lambda *a: None)


def test_last_pt_of_another_config_then_restart(trained, tmp_path):
    cfg = small_cfg(tmp_path, "run", 4, 2, model={"hidden": [16]})
    cfg.run_dir.mkdir(parents=True)
    shutil.copy(trained.run_dir / "last.pt", cfg.run_dir / "last.pt")
    (cfg.run_dir / "notes.txt").write_text("mine")
    # the stored config differs: named fields, and how to start over
    with pytest.raises(ConfigError, match=r"different config.*model\.hidden.*--restart"):
        train(cfg, progress=False, log=lambda *a: None)
    # same stored config, weights of another shape (an edited or foreign file): not a traceback
    ck = torch.load(cfg.run_dir / "last.pt", weights_only=False)
    ck["config"] = cfg.to_dict()
    torch.save(ck, cfg.run_dir / "last.pt")
    with pytest.raises(CheckpointError, match=r"do not fit.*shape.*--restart"):
        train(cfg, progress=False, log=lambda *a: None)
    logs = []
    out = train(cfg, progress=False, log=logs.append, restart=True)
    assert out["epochs"] == 2 and not any("resuming" in line for line in logs)
    assert any("restart: removed" in line and "last.pt" in line for line in logs)
    assert (cfg.run_dir / "notes.txt").read_text() == "mine"  # only the run's own files go
    model, _ = load_checkpoint(cfg.run_dir / "best.pt")
    assert model.backbone[1].weight.shape[0] == 16
    hist = yaml.safe_load((cfg.run_dir / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]


def test_weights_that_disagree_with_their_stored_config_are_refused(tmp_path):
    cfg = small_cfg(tmp_path, "w2", 4, 1, model={"w_bits": 2, "a_bits": 2})
    train(cfg, progress=False, log=lambda *a: None)
    path = cfg.run_dir / "best.pt"
    ck = torch.load(path, weights_only=False)
    assert ck["quant_signature"]["backbone.1.weight"] == 2
    ck["config"]["model"]["w_bits"] = 4  # a 4-bit config put into a 2-bit run's checkpoint
    ck["config"]["model"]["a_bits"] = 4
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match=r"bit widths.*backbone\.1\.weight: 2 bits"):
        load_checkpoint(path)
    del ck["quant_signature"]  # a checkpoint from before signatures: still loads
    torch.save(ck, path)
    assert load_checkpoint(path)[1].model.w_bits == 4


def test_evaluate_config_must_match_the_checkpoint(trained, tmp_path):
    cfg = copy_run(trained, tmp_path)
    assert check_config_matches_run(cfg, "c.yaml") == cfg.run_dir / "best.pt"
    raw = cfg.to_dict()
    edited = config_from_dict(merge(raw, {"model": {"w_bits": 2, "a_bits": 2}}))
    with pytest.raises(ConfigError, match=r"model\.w_bits \(4 in the checkpoint, 2 in the "
                                          r"config\).*--restart.*run directory"):
        check_config_matches_run(edited, "c.yaml")
    # where the data lives is not what the model is; training-only fields are not checked
    other_root = config_from_dict(merge(raw, {"data": {"root": str(tmp_path)},
                                              "train": {"lr": 0.01}}))
    check_config_matches_run(other_root, "c.yaml")


def test_batch_larger_than_the_epoch_is_refused_before_training(tmp_path):
    cfg = tiny_config(tmp_path, name="big", data={"tasks": TWO_TASKS, "epoch_size": None},
                      train={"batch_size": 4096, "epochs": 1, "threads": 1})
    with pytest.raises(ConfigError, match=r"train.batch_size 4096 .*128 images"):
        train(cfg, progress=False, log=lambda *a: None)
    assert not (cfg.run_dir / "last.pt").exists()


def test_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    cfg = tiny_config(tmp_path, name="x")
    with pytest.raises(ConfigError, match="is not a directory"):
        train(cfg, progress=False)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_failed_save_leaves_no_tmp_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"a": 1}, path)
    (tmp_path / "last.pt.tmp").symlink_to("/dev/full")  # every write: no space left on device
    with pytest.raises(OSError, match=r"last\.pt: cannot write the checkpoint"):
        atomic_save({"a": torch.zeros(1000)}, path)
    assert not os.path.lexists(tmp_path / "last.pt.tmp")
    assert torch.load(path, weights_only=False) == {"a": 1}


def cli(capsys, *args):
    """medzoo in this process (a subprocess costs ~5 s of imports); an uncaught exception fails
    the test as a traceback would."""
    rc = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


def one_line_error(r):
    """Exit 2 and one error line (besides the line naming the checkpoint used)."""
    err = [line for line in r.stderr.strip().splitlines() if not line.startswith("medzoo: using")]
    return r.returncode == 2 and len(err) == 1 and err[0].startswith("medzoo: error:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_gpu_and_full_disk_are_one_line(trained, tmp_path, capsys):
    cfg = copy_run(trained, tmp_path, train={"epochs": 2})
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg.to_dict()))
    r = cli(capsys, "train", str(p), "--quiet", "--set", "train.device=cuda")
    assert one_line_error(r) and "train.device" in r.stderr and "auto" in r.stderr, r.stderr
    (cfg.run_dir / "last.pt.tmp").symlink_to("/dev/full")
    r = cli(capsys, "train", str(p), "--quiet")
    assert one_line_error(r) and "last.pt" in r.stderr and "free space" in r.stderr, r.stderr
    assert not os.path.lexists(cfg.run_dir / "last.pt.tmp")
    assert ckpt(cfg, "last")["state"]["epoch"] == 1  # the old checkpoint is intact


def test_cli_broken_checkpoint_is_one_line(trained, tmp_path, capsys):
    cfg = copy_run(trained, tmp_path)
    break_file(cfg.run_dir / "best.pt", "truncated")
    r = cli(capsys, "evaluate", str(cfg.run_dir))
    assert one_line_error(r), r.stderr
    assert "best.pt: unreadable checkpoint" in r.stderr


def test_build_with_an_edited_train_config_refuses_the_old_checkpoint(trained, tmp_path):
    """A build config names model.checkpoint + model.train_config: once the train config is
    edited, its existing best.pt is not the model it describes."""
    from finn_build.config import ModelSource
    from finn_build.model_io import checkpoint_model

    cfg = copy_run(trained, tmp_path)
    yml = tmp_path / "train.yaml"
    yml.write_text(yaml.safe_dump(cfg.to_dict()))
    src = ModelSource(checkpoint=str(cfg.run_dir / "best.pt"), train_config=str(yml))
    assert checkpoint_model(src) is not None
    yml.write_text(yaml.safe_dump(merge(cfg.to_dict(), {"model": {"w_bits": 2}})))
    with pytest.raises(ConfigError, match=r"model\.w_bits"):
        checkpoint_model(src)
