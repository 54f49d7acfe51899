"""Per-task decisions (medimage.decision) and their fitting on validation
(brevitas_models.calibration): synthetic logits of known calibration, and a tiny real run."""
import json

import numpy as np
import pytest
import torch

from brevitas_models import calibration as C
from medimage import decision as D


def _sample(rng, probs):
    """One label per row of probs (inverse CDF)."""
    u = rng.random((len(probs), 1))
    return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_recovers_a_known_temperature(true_t):
    """Labels drawn from softmax(z) and logits z * T: the model is off by exactly T, so the
    NLL minimum is at T (to sampling error)."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(20000, 4))
    y = _sample(rng, D.probabilities(z))
    got = C.fit_temperature(z * true_t, y)
    assert got == pytest.approx(true_t, rel=0.05)
    # calibrated already: T = 1
    assert C.fit_temperature(z, y) == pytest.approx(1.0, rel=0.05)
    r = C.fit_task(z[:, :2] * true_t, (y % 2), ["a", "b"], None)
    assert r["val"]["nll_after"] <= r["val"]["nll_before"]
    assert r["decision"]["threshold"] is None  # no negative class: argmax


def _balanced_accuracy(p, is_pos, t):
    pred = p >= t
    return (np.mean(pred[is_pos]) + np.mean(~pred[~is_pos])) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_maximizes_balanced_accuracy(seed):
    rng = np.random.default_rng(seed)
    n = 300
    is_pos = rng.random(n) < 0.25  # imbalanced: argmax at 0.5 is not the best
    p = np.clip(rng.normal(np.where(is_pos, 0.45, 0.3), 0.12), 0, 1).round(3)  # with ties
    t = C.fit_threshold(p, is_pos)
    u = np.unique(p)
    cands = np.unique(np.concatenate([u, (u[:-1] + u[1:]) / 2, [0.0, 0.5, 1.0, 1.01]]))
    best = max(_balanced_accuracy(p, is_pos, c) for c in cands)
    assert _balanced_accuracy(p, is_pos, t) == pytest.approx(best, abs=1e-12)
    assert _balanced_accuracy(p, is_pos, t) > _balanced_accuracy(p, is_pos, 0.5)
    # the rule applies it as fitted: positive when P >= t
    d = {"temperature": 1.0, "threshold": t, "positive_class": 1}
    probs = np.stack([1 - p, p], axis=1)
    assert np.array_equal(D.decide(probs, d), (p >= t).astype(int))


def test_threshold_ties_take_the_one_closest_to_one_half():
    # every t in (0.3, 0.6] separates perfectly: the middle of the gap between the scores
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.8, 0.9])
    pos = np.array([0, 0, 0, 1, 1, 1], bool)
    assert C.fit_threshold(p, pos) == pytest.approx(0.45)
    assert C.fit_threshold(p, np.zeros(6, bool)) is None  # one class only: undefined


def test_decide_binary_multiclass_and_no_decision():
    probs = np.array([[0.7, 0.3], [0.45, 0.55], [0.6, 0.4]])
    assert D.decide(probs, None).tolist() == [0, 1, 0]
    assert D.decide(probs, {"temperature": 2.0, "threshold": None,
                            "positive_class": None}).tolist() == [0, 1, 0]
    d = {"temperature": 1.0, "threshold": 0.4, "positive_class": 1}
    assert D.decide(probs, d).tolist() == [0, 1, 1]  # 0.4 >= 0.4: positive
    d0 = {"temperature": 1.0, "threshold": 0.65, "positive_class": 0}  # class 0 positive
    assert D.decide(probs, d0).tolist() == [0, 1, 1]
    assert D.decide(probs[2], d0) == 1 and isinstance(D.decide(probs[2], d0), int)
    multi = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert D.decide(multi, {"temperature": 3.0}).tolist() == [1, 0]
    # temperature: same order, flatter or sharper probabilities
    z = np.array([[2.0, 0.0, -1.0]])
    assert np.allclose(D.probabilities(z, 2.0), D.probabilities(z / 2))
    assert D.probabilities(z, 2.0).max() < D.probabilities(z).max()
    probs_t, labels = D.apply(z, {"temperature": 2.0})
    assert labels.tolist() == [0] and probs_t.dtype == np.float64
    for bad, n in (({"temperature": 0}, 2), ({"threshold": 1.5, "positive_class": 1}, 2),
                   ({"threshold": 0.5, "positive_class": 1}, 3),
                   ({"threshold": 0.5, "positive_class": None}, 2)):
        with pytest.raises(ValueError):
            D.check(bad, n)
    D.check(None, 2)
    D.check(d0, 2)


def test_metrics_use_the_decision():
    from brevitas_models.metrics import multitask_metrics

    tasks = [{"name": "b", "classes": ["neg", "pos"], "slice": [0, 2], "negative_class": 0}]
    logits = np.array([[0.0, -0.2], [0.0, 0.3], [0.0, -1.0], [0.0, 1.0]])
    labels, tids = np.array([1, 1, 0, 0]), np.zeros(4, int)
    plain = multitask_metrics(logits, labels, tids, tasks)["b"]
    d = {"temperature": 2.0, "threshold": 0.45, "positive_class": 1}
    m = multitask_metrics(logits, labels, tids, tasks, decisions={"b": d})["b"]
    assert plain["accuracy"] == 0.5 and plain["decision"] is None
    # P(pos) at T=2: 0.475, 0.537, 0.378, 0.622 -> pos, pos, neg, pos
    assert m["accuracy"] == 0.75 and m["decision"] == d
    assert m["auc"] == plain["auc"]  # T keeps the order
    assert m["ece"] != plain["ece"]  # computed on the scaled probabilities


def _fit_of(run_dir):
    return json.loads((run_dir / "calibration.json").read_text())


def test_tiny_run_writes_calibration_and_evaluates_the_boards_decision(tiny_cfg):
    from brevitas_models.train import (evaluate_run, load_data, load_run, predict,
                                       run_decisions, train)
    from finn_build.model_io import checkpoint_decisions

    cfg = tiny_cfg(name="cal", train={"epochs": 1})
    data = load_data(cfg)
    train(cfg, data=data, progress=False)
    cal = _fit_of(cfg.run_dir)
    assert set(cal["tasks"]) == set(cfg.data.tasks) and cal["split"] == "val"
    for name, t in cal["tasks"].items():
        d = t["decision"]
        binary = name != "tiny_bloodmnist"
        assert d["temperature"] > 0 and (d["threshold"] is not None) == binary
        assert t["n_val"] == 16
        assert t["val"]["nll_after"] <= t["val"]["nll_before"] + 1e-12
        if binary:  # fitted to maximize it on val
            v = t["val"]
            assert v["balanced_accuracy_decision"] >= v["balanced_accuracy_argmax"]
    decisions = run_decisions(cfg.run_dir)
    assert decisions == {n: t["decision"] for n, t in cal["tasks"].items()}
    assert checkpoint_decisions(cfg.run_dir / "best.pt") == decisions  # what a build exports
    # evaluation reports the labels the board gives: recompute them with the shared rule
    m = evaluate_run(cfg.run_dir, "val", data=data)
    model, _ = load_run(cfg.run_dir)
    val = data["val"]
    logits = predict(model, val.images, "cpu")
    for i, t in enumerate(model.tasks_meta):
        rows = val.task_ids == i
        a, b = t["slice"]
        _, labels = D.apply(logits[rows, a:b], decisions[t["name"]])
        assert m[t["name"]]["accuracy"] == pytest.approx(np.mean(labels == val.labels[rows]))
        assert m[t["name"]]["decision"] == decisions[t["name"]]
    written = json.loads((cfg.run_dir / "eval_val" / "metrics.json").read_text())
    assert written["decisions"] == decisions
    for name in cfg.data.tasks:  # argmax figures kept
        assert written["argmax"][name]["decision"] is None
        if name != "tiny_bloodmnist":  # binary: P(positive) is monotone in T, AUC unchanged
            assert written["argmax"][name]["auc"] == pytest.approx(
                written["metrics"][name]["auc"])
    # a finished run resumed without calibration.json gets it (the same fit)
    (cfg.run_dir / "calibration.json").unlink()
    train(cfg, data=data, progress=False)
    assert _fit_of(cfg.run_dir) == cal


def test_a_stale_calibration_is_refit_never_used(tiny_cfg):
    from brevitas_models.export import sha256_file
    from brevitas_models.train import evaluate_run, load_data, run_decisions, train

    cfg = tiny_cfg(name="stale", train={"epochs": 1})
    data = load_data(cfg)
    train(cfg, data=data, progress=False)
    old = _fit_of(cfg.run_dir)
    # best.pt rewritten after the fit (another model): calibration.json is of other bytes
    best = cfg.run_dir / "best.pt"
    ck = torch.load(best, weights_only=False)
    for k, v in ck["model"].items():
        if k.endswith("out.weight"):
            v.mul_(-1.0)  # the heads' answers flipped: a very different calibration
    torch.save(ck, best)
    logs = []
    decisions = run_decisions(cfg.run_dir, data=data, log=logs.append)
    assert any("fitted to another best.pt" in line and "refitting" in line for line in logs)
    new = _fit_of(cfg.run_dir)
    assert new["checkpoint_sha256"] == sha256_file(best) != old["checkpoint_sha256"]
    assert decisions == {n: t["decision"] for n, t in new["tasks"].items()}
    assert decisions != {n: t["decision"] for n, t in old["tasks"].items()}
    # evaluation of a stale one refits as well (said so), then uses the refit
    json_text = (cfg.run_dir / "calibration.json").read_text()
    (cfg.run_dir / "calibration.json").write_text(json.dumps(old))
    logs.clear()
    m = evaluate_run(cfg.run_dir, "val", data=data, write=False, log=logs.append)
    assert any("refitting" in line for line in logs)
    assert (cfg.run_dir / "calibration.json").read_text() == json_text
    assert {n: v["decision"] for n, v in m.items()} == decisions
    # an unusable file is refused (with the fix), and training replaces it
    (cfg.run_dir / "calibration.json").write_text('{"tasks": {"tiny_breastmnist": {"classes": '
                                                  '["a", "b"], "decision": {"temperature": -1}}}}')
    with pytest.raises(C.CalibrationError, match="temperature.*medzoo train"):
        run_decisions(cfg.run_dir, data=data)
    train(cfg, data=data, progress=False)
    assert _fit_of(cfg.run_dir)["checkpoint_sha256"] == sha256_file(best)


def test_no_calibration_means_argmax(tiny_cfg):
    """A run trained before calibration existed: T = 1 and argmax everywhere."""
    from brevitas_models.train import evaluate_run, load_data, run_decisions, train

    cfg = tiny_cfg(name="old", data={"tasks": ["tiny_breastmnist"]}, train={"epochs": 1})
    data = load_data(cfg)
    train(cfg, data=data, progress=False)
    (cfg.run_dir / "calibration.json").unlink()
    assert run_decisions(cfg.run_dir) is None
    m = evaluate_run(cfg.run_dir, "val", data=data, write=True)
    written = json.loads((cfg.run_dir / "eval_val" / "metrics.json").read_text())
    assert m["tiny_breastmnist"]["decision"] is None and written["decisions"] is None
    assert written["argmax"] == written["metrics"]
