import json
import os

import numpy as np
import pytest

from brevitas_models.metrics import multitask_metrics, softmax, task_metrics
from brevitas_models.report import (
    plot_confusion,
    plot_curves,
    read_json,
    write_json,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _probs_from_preds(preds, k):
    """Probabilities whose argmax is `preds`."""
    p = np.full((len(preds), k), 0.1)
    p[np.arange(len(preds)), preds] = 0.8
    return p / p.sum(axis=1, keepdims=True)


# Binary case: 4 positives, 6 negatives.
# TP=3 (rows 0-2), FN=1 (row 3), FP=2 (rows 4-5), TN=4 (rows 6-9).
BIN_LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
BIN_PREDS = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])


def test_softmax_stable_and_normalized():
    p = softmax(np.array([[1000.0, 1000.0], [-1000.0, 0.0]]))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [0.5, 0.5])
    assert p[1, 1] == pytest.approx(1.0)


def test_binary_metrics_by_hand():
    m = task_metrics(BIN_LABELS, _probs_from_preds(BIN_PREDS, 2), ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(3 / 5)   # TP / (TP + FP)
    assert m["recall"] == pytest.approx(3 / 4)      # TP / (TP + FN)
    assert m["f1"] == pytest.approx(2 / 3)          # 2PR / (P + R)
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    assert m["n"] == 10
    assert m["class_counts"] == {"neg": 6, "pos": 4}
    assert m["positive_class"] == "pos"
    assert m["notes"] == []
    # plain Python types all the way down
    json.dumps(m)
    assert type(m["accuracy"]) is float and type(m["n"]) is int


def test_balanced_accuracy_sensitivity_specificity_by_hand():
    # confusion [[4, 2], [1, 3]]: negatives 4/6 right, positives 3/4 right
    m = task_metrics(BIN_LABELS, _probs_from_preds(BIN_PREDS, 2), ["neg", "pos"])
    assert m["sensitivity"] == pytest.approx(3 / 4) and m["specificity"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    swapped = task_metrics(BIN_LABELS, _probs_from_preds(BIN_PREDS, 2), ["pos", "neg"],
                           negative_class=1)
    assert swapped["sensitivity"] == pytest.approx(4 / 6)
    assert swapped["specificity"] == pytest.approx(3 / 4)
    # 3 classes, confusion [[1, 1, 0], [0, 2, 0], [1, 0, 1]]: recall 1/2, 1, 1/2;
    # true-negative rate of a vs rest 3/4, b 3/4, c 4/4
    labels, preds = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0])
    m3 = task_metrics(labels, _probs_from_preds(preds, 3), ["a", "b", "c"])
    assert m3["balanced_accuracy"] == pytest.approx(2 / 3) == m3["sensitivity"]
    assert m3["specificity"] == pytest.approx((3 / 4 + 3 / 4 + 1) / 3)


def test_expected_calibration_error_by_hand():
    from brevitas_models.metrics import expected_calibration_error

    labels = np.array([0, 0, 1, 1])
    # all four at confidence 0.9 in one bin, 3 of 4 right: |0.75 - 0.9|
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    assert expected_calibration_error(labels, probs) == pytest.approx(0.15)
    # two bins: 0.6 (1 of 2 right) and 1.0 (2 of 2 right): 0.5*|0.5-0.6| + 0.5*|1-1|
    probs = np.array([[0.6, 0.4], [0.4, 0.6], [0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(np.array([0, 0, 1, 0]), probs) == pytest.approx(0.05)
    m = task_metrics(labels, np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]]),
                     ["a", "b"])
    assert m["ece"] == pytest.approx(0.15)


def test_negative_class_one_makes_class_zero_positive():
    # breast-style task: class 1 (benign/normal) is the negative class
    m = task_metrics(BIN_LABELS, _probs_from_preds(BIN_PREDS, 2),
                     ["malignant", "benign"], negative_class=1)
    assert m["positive_class"] == "malignant"
    # positive = class 0: TP=4 (rows 6-9), FP=1 (row 3), FN=2 (rows 4-5)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(8 / 11)
    assert m["accuracy"] == pytest.approx(7 / 10)   # unaffected


def test_binary_auc_perfect_and_reversed():
    labels = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.2, 0.8, 0.9])
    perfect = task_metrics(labels, np.stack([1 - p1, p1], 1), ["a", "b"])
    reverse = task_metrics(labels, np.stack([p1, 1 - p1], 1), ["a", "b"])
    assert perfect["auc"] == pytest.approx(1.0)
    assert reverse["auc"] == pytest.approx(0.0)


def test_multiclass_macro_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    m = task_metrics(labels, _probs_from_preds(preds, 3), ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # per class precision 1/2, 2/3, 1/1; recall 1/2, 2/2, 1/2; F1 1/2, 4/5, 2/3
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["positive_class"] is None
    # one-hot-like probabilities of the true class rank perfectly
    assert task_metrics(labels, _probs_from_preds(labels, 3), ["a", "b", "c"])["auc"] \
        == pytest.approx(1.0)


def test_one_class_labels_give_auc_none_with_note():
    labels = np.array([1, 1, 1])
    m = task_metrics(labels, _probs_from_preds(np.array([1, 0, 1]), 2), ["a", "b"])
    assert m["auc"] is None
    assert any("one class" in n for n in m["notes"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    json.dumps(m)


TASKS = [
    {"name": "A", "classes": ["a0", "a1"], "slice": [0, 2], "negative_class": 0},
    {"name": "B", "classes": ["b0", "b1", "b2"], "slice": [2, 5], "negative_class": None},
]


def test_multitask_uses_each_tasks_slice():
    # With the right slice every row is correct; a shifted slice or the global
    # argmax would pick another column.
    logits = np.array([
        [5, 0, 0, 10, 0],   # A, label 0: [0:2] -> 0; [2:4] would give 1
        [0, 5, 10, 0, 0],   # A, label 1
        [10, 0, 0, 1, 3],   # B, label 2: [2:5] -> 2; [0:3] would give 0
        [0, 9, 4, 0, 0],    # B, label 0
    ], dtype=float)
    labels = np.array([0, 1, 2, 0])
    task_ids = np.array([0, 0, 1, 1])
    r = multitask_metrics(logits, labels, task_ids, TASKS)
    assert set(r) == {"A", "B"}
    assert r["A"]["n"] == 2 and r["B"]["n"] == 2
    assert r["A"]["accuracy"] == 1.0
    assert r["B"]["accuracy"] == 1.0
    assert r["B"]["confusion_matrix"] == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert r["A"]["auc"] == pytest.approx(1.0)


def test_multiclass_mode_out_of_slice_argmax_is_wrong():
    logits = np.array([
        [3, 1, 0, 0, 0],    # A, label 0: global argmax 0 -> right
        [0, 1, 5, 0, 0],    # A, label 1: global argmax 2 is task B's -> wrong
        [0, 4, 0, 0, 0],    # A, label 1: right
        [0, 0, 2, 1, 0],    # B, label 0: right
        [9, 0, 0, 1, 3],    # B, label 2: global argmax 0 is task A's -> wrong
    ], dtype=float)
    labels = np.array([0, 1, 1, 0, 2])
    task_ids = np.array([0, 0, 0, 1, 1])

    mt = multitask_metrics(logits, labels, task_ids, TASKS, mode="multitask")
    assert mt["A"]["accuracy"] == 1.0 and mt["B"]["accuracy"] == 1.0

    mc = multitask_metrics(logits, labels, task_ids, TASKS, mode="multiclass")
    a, b = mc["A"], mc["B"]
    assert a["accuracy"] == pytest.approx(2 / 3)
    assert b["accuracy"] == pytest.approx(1 / 2)
    assert a["confusion_labels"] == ["a0", "a1", "other task"]
    assert a["confusion_matrix"] == [[1, 0, 0], [0, 1, 1]]
    assert b["confusion_matrix"] == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    # positive class a1: 1 of 2 found, the one prediction of a1 is right
    assert a["recall"] == pytest.approx(1 / 2)
    assert a["precision"] == pytest.approx(1.0)
    # AUC uses probabilities renormalized to the slice: ranking still perfect
    assert a["auc"] == pytest.approx(1.0)
    json.dumps(mc)


def test_plots_write_valid_png(tmp_path):
    cm_path = tmp_path / "sub" / "cm.png"
    plot_confusion([[3, 1, 2], [0, 4, 1]], ["a", "b"], "A (multiclass)", str(cm_path))
    curves_path = tmp_path / "curves.png"
    history = [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_acc_A": 0.5, "val_acc_B": 0.4},
        {"epoch": 2, "train_loss": 0.7, "val_loss": 0.9, "val_acc_A": 0.6, "val_acc_B": None},
    ]
    plot_curves(history, str(curves_path))
    for p in (cm_path, curves_path):
        data = p.read_bytes()
        assert len(data) > len(PNG_MAGIC)
        assert data[:8] == PNG_MAGIC


def test_write_json_atomic_sorted_roundtrip(tmp_path):
    path = tmp_path / "r.json"
    obj = {"b": np.float32(0.5), "a": [np.int64(1), 2], "c": None}
    write_json(obj, str(path))
    assert os.listdir(tmp_path) == ["r.json"]
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')
    assert read_json(str(path)) == {"a": [1, 2], "b": 0.5, "c": None}
    # a failed write leaves the old file intact and no temp file behind
    with pytest.raises(TypeError):
        write_json({"x": object()}, str(path))
    assert os.listdir(tmp_path) == ["r.json"]
    assert read_json(str(path))["b"] == 0.5


def test_write_json_failure_after_temp_file_cleans_up(tmp_path, monkeypatch):
    import brevitas_models.report as report

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(report.os, "replace", boom)
    with pytest.raises(OSError):
        write_json({"a": 1}, str(tmp_path / "r.json"))
    assert os.listdir(tmp_path) == []
