import json

import pytest
import torch

from brevitas_models.train import evaluate_run, load_data, multitask_loss, train


def state(run_dir, which="last"):
    return torch.load(run_dir / f"{which}.pt", weights_only=False)["model"]


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_and_resume_after_kill(tiny_cfg):
    cfg_a, cfg_b = tiny_cfg(name="a"), tiny_cfg(name="b")
    data = load_data(cfg_a)
    train(cfg_a, data=data, progress=False)
    # run b is "killed" after its first epoch, then resumed from last.pt
    out = train(cfg_b, data=data, progress=False, stop_after_epochs=1)
    assert out["epoch"] == 1
    train(cfg_b, data=data, progress=False)
    assert same_weights(state(cfg_a.run_dir), state(cfg_b.run_dir))
    hist = json.loads((cfg_b.run_dir / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    # a different seed gives different weights
    cfg_c = tiny_cfg(name="c", seed=1)
    train(cfg_c, data=data, progress=False)
    assert not same_weights(state(cfg_a.run_dir), state(cfg_c.run_dir))


def test_resume_refuses_a_changed_config(tiny_cfg):
    from brevitas_models.config import ConfigError
    cfg = tiny_cfg(name="x")
    train(cfg, progress=False, stop_after_epochs=1)
    with pytest.raises(ConfigError, match="different config"):
        train(tiny_cfg(name="x", train={"lr": 0.01}), progress=False)


def test_a_moved_run_directory_resumes_exactly(tiny_cfg, tmp_path):
    """A run trained elsewhere (e.g. on a GPU machine) and copied into another out_dir resumes:
    where a run lives is not part of what it is."""
    import shutil
    cfg_a, cfg_b = tiny_cfg(name="a"), tiny_cfg(name="b")
    data = load_data(cfg_a)
    train(cfg_a, data=data, progress=False)
    train(cfg_b, data=data, progress=False, stop_after_epochs=1)
    moved = tiny_cfg(name="b", out_dir=str(tmp_path / "elsewhere"))
    shutil.copytree(cfg_b.run_dir, moved.run_dir)
    train(moved, data=data, progress=False)
    assert same_weights(state(cfg_a.run_dir), state(moved.run_dir))
    assert [h["epoch"] for h in json.loads((moved.run_dir / "history.json").read_text())] == [1, 2]


def test_cnn_trains_and_writes_metrics_and_pngs(tiny_cfg):
    cfg = tiny_cfg("cnn", name="cnn")
    train(cfg, progress=False)
    metrics = evaluate_run(cfg.run_dir, "val")
    assert set(metrics) == {"tiny_pneumoniamnist", "tiny_breastmnist", "tiny_bloodmnist"}
    for task, m in metrics.items():
        assert m["n"] == 16 and 0 <= m["accuracy"] <= 1
        assert (cfg.run_dir / "eval_val" / f"confusion_{task}.png").read_bytes()[:4] == b"\x89PNG"
    assert (cfg.run_dir / "curves.png").exists()
    assert json.loads((cfg.run_dir / "eval_val" / "metrics.json").read_text())["split"] == "val"


def test_masked_loss_ignores_other_tasks_logits(tiny_cfg):
    cfg = tiny_cfg()
    meta = [{"slice": [0, 2], "classes": [0, 1], "negative_class": 0},
            {"slice": [2, 4], "classes": [0, 1], "negative_class": 1}]
    logits = torch.zeros(2, 4, requires_grad=True)
    labels, tids = torch.tensor([1, 0]), torch.tensor([0, 1])
    multitask_loss(logits, labels, tids, meta, cfg).backward()
    g = logits.grad
    assert g[0, 2:].abs().sum() == 0 and g[1, :2].abs().sum() == 0
    assert g[0, :2].abs().sum() > 0


def test_cross_task_negatives_push_other_images_to_the_negative_class(tiny_cfg):
    cfg = tiny_cfg(train={"loss": "cross_task_negatives"})
    meta = [{"slice": [0, 2], "classes": [0, 1], "negative_class": 0},
            {"slice": [2, 10], "classes": list(range(8)), "negative_class": None}]
    logits = torch.zeros(1, 10, requires_grad=True)
    # an image of task 1 (multi-class) still trains task 0's binary head towards class 0
    multitask_loss(logits, torch.tensor([3]), torch.tensor([1]), meta, cfg).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]
    masked = tiny_cfg()
    logits.grad = None
    multitask_loss(logits, torch.tensor([3]), torch.tensor([1]), meta, masked).backward()
    assert logits.grad[0, :2].abs().sum() == 0


def test_multiclass_and_single_task_runs(tiny_cfg):
    mc = tiny_cfg(name="mc", model={"mode": "multiclass"}, train={"epochs": 1})
    train(mc, progress=False)
    m = evaluate_run(mc.run_dir, "val", write=False)
    assert len(m) == 3
    st = tiny_cfg(name="st", data={"tasks": ["tiny_breastmnist"]}, train={"epochs": 1})
    train(st, progress=False)
    assert list(evaluate_run(st.run_dir, "val", write=False)) == ["tiny_breastmnist"]


def test_checkpoints_are_written_atomically(tiny_cfg):
    cfg = tiny_cfg(name="atomic", train={"epochs": 1})
    train(cfg, progress=False)
    assert not list(cfg.run_dir.glob("*.tmp"))
    assert {p.name for p in cfg.run_dir.glob("*.pt")} == {"best.pt", "last.pt"}


def test_run_eta_counts_the_epochs_left_and_ends_with_the_run(tiny_cfg):
    from brevitas_models.train import run_eta

    cfg = tiny_cfg("mlp", train={"epochs": 10, "patience": 3})
    # 2 epochs in 120 s: 8 epochs left at 60 s each
    assert run_eta(120.0, 2, {"epoch": 2, "bad_epochs": 0}, cfg) == \
        "; run ETA 8m00s for 8 more epochs at most"
    assert run_eta(30.0, 1, {"epoch": 9, "bad_epochs": 2}, cfg) == \
        "; run ETA 0m30s for 1 more epoch at most"
    assert run_eta(30.0, 1, {"epoch": 10, "bad_epochs": 0}, cfg) == ""  # the last epoch
    assert run_eta(30.0, 1, {"epoch": 5, "bad_epochs": 3}, cfg) == ""   # early stop now
