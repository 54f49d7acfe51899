"""Augmentation tests on real tiny images."""
import numpy as np
import pytest
import torch

from brevitas_models.augment import AugmentConfig, augment
from brevitas_models.data import data_root

OFF = dict(rotation_deg=0, zoom=0, brightness=0, contrast=0, erase_prob=0)


@pytest.fixture(scope="module")
def batch():
    with np.load(data_root() / "tiny_bloodmnist_like_28.npz") as z:
        x = z["train_images"][:32]
    return torch.from_numpy(x).permute(0, 3, 1, 2).float()  # (32,3,28,28), 0..255


def _g(seed):
    return torch.Generator().manual_seed(seed)


def test_seeded_reproducible_and_seed_dependent(batch):
    cfg = AugmentConfig()
    a, b = augment(batch, cfg, _g(0)), augment(batch, cfg, _g(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(batch, cfg, _g(1)))
    assert not torch.equal(a, batch)


def test_output_integral_in_range_same_shape(batch):
    out = augment(batch * 1.3, AugmentConfig(brightness=0.5, contrast=0.5), _g(2))  # pushes past 255
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() == 255


def test_identity_when_all_off(batch):
    assert torch.equal(augment(batch, AugmentConfig(**OFF), _g(3)), batch)


def test_brightness_only_scales(batch):
    out = augment(batch, AugmentConfig(**{**OFF, "brightness": 0.2}), _g(4))
    ratio = out.sum((1, 2, 3)) / batch.sum((1, 2, 3))
    assert (ratio > 0.79).all() and (ratio < 1.21).all() and ratio.std() > 0.01


def test_rotation_moves_pixels_keeps_mean(batch):
    out = augment(batch, AugmentConfig(**{**OFF, "rotation_deg": 20}), _g(5))
    assert (out - batch).abs().mean() > 1
    # border padding + bilinear sampling: the average brightness barely changes
    assert (out.mean((1, 2, 3)) - batch.mean((1, 2, 3))).abs().max() < 15


def test_erasing_area_and_fill():
    x = torch.full((64, 1, 40, 40), 200.0)
    out = augment(x, AugmentConfig(**{**OFF, "erase_prob": 1.0, "erase_fill": "zero"}), _g(6))
    frac = (out == 0).float().mean((1, 2, 3))
    assert (frac > 0.015).all() and (frac < 0.12).all()  # 2-10 % of the area, rounding aside
    assert set(out.unique().tolist()) == {0.0, 200.0}
    half = augment(x, AugmentConfig(**{**OFF, "erase_prob": 0.5, "erase_fill": "zero"}), _g(7))
    touched = (half != 200).flatten(1).any(1).float().mean()
    assert 0.3 < touched < 0.7
    ramp = torch.arange(40.0).repeat(8, 1, 40, 1) * 5  # columns 0..195, image mean 97.5
    filled = augment(ramp, AugmentConfig(**{**OFF, "erase_prob": 1.0, "erase_fill": "mean"}), _g(8))
    changed = filled != ramp
    assert changed.flatten(1).any(1).all() and (filled[changed] == 98).all()


@pytest.mark.parametrize("field,value", [("rotation_deg", -1), ("zoom", 1.5), ("brightness", -0.1),
                                         ("contrast", 2), ("erase_prob", 1.2),
                                         ("erase_area", (0.2, 0.1)), ("erase_fill", "noise")])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=f"AugmentConfig.{field}"):
        AugmentConfig(**{field: value})
