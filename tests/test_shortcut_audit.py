"""Shortcut audit on real tiny images: features, a planted style shortcut, none on random
labels, determinism, and the `medzoo audit` command."""
import json

import numpy as np
import pytest

from brevitas_models import cli, data
from brevitas_models.shortcut_audit import (FEATURE_NAMES, FRAME_FRACTION, audit, audit_task,
                                            style_features)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFPGA_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def chest_images():
    """All 96 real tiny PneumoniaMNIST images (28x28 gray) and their labels."""
    splits = data.load_task("tiny_pneumoniamnist")
    images = np.concatenate([s.images for s in splits.values()])
    labels = np.concatenate([s.labels for s in splits.values()])
    return images, labels


def _with_black_frame(images, width):
    framed = images.copy()
    framed[:, :width], framed[:, -width:] = 0, 0
    framed[:, :, :width], framed[:, :, -width:] = 0, 0
    return framed


def test_features_shape_and_finite_gray_and_rgb(chest_images):
    gray = chest_images[0]
    rgb = data.load_task("tiny_bloodmnist")["train"].images
    assert rgb.shape[-1] == 3
    for images in (gray, rgb):
        features = style_features(images)
        assert features.shape == (len(images), len(FEATURE_NAMES))
        assert np.isfinite(features).all()
    # a black image has no foreground: still finite, all dark, empty bounding box
    black = style_features(np.zeros((2, 28, 28, 1), np.uint8))
    assert np.isfinite(black).all()
    assert black[0, FEATURE_NAMES.index("dark_share")] == 1.0
    assert black[0, FEATURE_NAMES.index("bbox_area")] == 0.0


def test_padding_features_see_a_black_frame(chest_images):
    images = chest_images[0][:8]
    width = round(FRAME_FRACTION * 28)
    plain, framed = style_features(images), style_features(_with_black_frame(images, width))
    frame_dark = FEATURE_NAMES.index("frame_dark_share")
    assert (framed[:, frame_dark] == 1.0).all()
    assert (plain[:, frame_dark] < 0.5).all()  # real chest X-rays fill their frame
    area = FEATURE_NAMES.index("bbox_area")
    assert (framed[:, area] < plain[:, area]).all()


def test_audit_finds_a_planted_padding_shortcut(chest_images):
    images, _ = chest_images
    # the same real images, labels by position; class 1 only gets a black padding frame
    labels = np.arange(len(images)) % 2
    planted = np.where(labels[:, None, None, None] == 1, _with_black_frame(images, 3), images)
    result = audit(planted, labels, ["plain", "padded"])
    (pair,) = result["pairs"]
    assert pair["pair"] == "plain vs padded"
    assert pair["balanced_accuracy"] >= 0.95 and pair["level"] == "high"
    assert pair["balanced_accuracy_by_family"]["layout"] >= 0.95
    assert len(result["warnings"]) == 1 and "padding" in result["warnings"][0]


def test_audit_finds_nothing_with_random_labels(chest_images):
    images, _ = chest_images
    labels = np.random.default_rng(1).permutation(np.arange(len(images)) % 2)
    (pair,) = audit(images, labels, ["a", "b"])["pairs"]
    assert abs(pair["balanced_accuracy"] - 0.5) < 0.2 and pair["level"] == "low"
    assert pair["chance"] == 0.5 and pair["balanced_chance"] == 0.5


def test_audit_pairs_subsampling_and_determinism():
    blood = data.load_task("tiny_bloodmnist")["train"]
    blood = blood.subset(np.flatnonzero(blood.labels < 3))  # 3 classes: 3 pairs + all, fast
    names = data.get_task("tiny_bloodmnist").classes[:3]
    first = audit(blood.images, blood.labels, names, seed=3, max_per_class=6)
    assert first == audit(blood.images, blood.labels, names, seed=3, max_per_class=6)
    k = len(names)
    assert [p["pair"] for p in first["pairs"]][-1] == "all classes"
    assert len(first["pairs"]) == k * (k - 1) // 2 + 1
    assert set(first["per_class"].values()) == {6} and first["n_images"] == 6 * k
    other = audit(blood.images, blood.labels, names, seed=4, max_per_class=6)
    assert other["pairs"] != first["pairs"]  # the seed picks the subsample and the folds


def test_audit_task_and_cli(capsys):
    result = audit_task("tiny_pneumoniamnist", size=28)
    assert result["task"] == "tiny_pneumoniamnist" and result["split"] == "train"
    assert result["data_report"]["sizes"]["train"] == result["n_images"] == 64
    assert cli.main(["audit", "tiny_pneumoniamnist", "--size", "28", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["pairs"] == result["pairs"]
    assert cli.main(["audit", "tiny_pneumoniamnist", "--size", "28"]) == 0
    assert "normal vs pneumonia" in capsys.readouterr().out
