"""Augmentation tests on real tiny images."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import brevitas_models.augment as aug_module
from brevitas_models.augment import AugmentConfig, augment
from brevitas_models.config import AugmentSection, ConfigError, config_from_dict
from brevitas_models.data import data_root

OFF = dict(rotation_deg=0, zoom=0, brightness=0, contrast=0, erase_prob=0)
# the augmentation against style, each group spelled as off (the defaults, other "ready" ranges)
STYLE_OFF = dict(crop_area=(1.0, 1.0), crop_ratio=(1.0, 1.0), pad_prob=0.0,
                 pad_fraction=(0.3, 0.5), gamma=(1.0, 1.0), sharpen=(0.0, 0.0),
                 noise_std=(0.0, 0.0), jpeg_prob=0.0, jpeg_quality=(5, 10))
# each group against style on, alone
STYLE_ON = {"crop_area": dict(crop_area=(0.5, 0.9)), "crop_ratio": dict(crop_ratio=(0.6, 1.6)),
            "pad": dict(pad_prob=1.0), "gamma": dict(gamma=(0.5, 2.0)),
            "sharpen": dict(sharpen=(-1.0, 1.0)), "noise": dict(noise_std=(2.0, 6.0)),
            "jpeg": dict(jpeg_prob=1.0)}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "configs.md"


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


# ----------------------------------------------------------------- augmentation against style

def _replay_recipe_draws(b, g):
    """The draws of the original recipe, in its order (rotation .. erase fill choice)."""
    for _ in range(7):
        torch.rand(b, generator=g)
    torch.rand(b, 2, generator=g)
    torch.rand(b, generator=g)


def test_style_fields_off_by_default_draw_nothing(batch):
    """Old configs must reproduce old runs: the defaults draw exactly the recipe's numbers from
    the generator (the batch order of the next step comes from the same generator)."""
    for base in ({}, OFF, dict(brightness=0.5, contrast=0.5, erase_fill="mean")):
        g_default, g_off, g_replay = _g(10), _g(10), _g(10)
        out = augment(batch, AugmentConfig(**base), g_default)
        assert torch.equal(out, augment(batch, AugmentConfig(**base, **STYLE_OFF), g_off))
        _replay_recipe_draws(len(batch), g_replay)
        assert torch.equal(g_default.get_state(), g_replay.get_state())
        assert torch.equal(g_off.get_state(), g_replay.get_state())
    assert torch.equal(augment(batch, AugmentConfig(**OFF, **STYLE_OFF), _g(11)), batch)


def test_section_defaults_are_augment_config_defaults():
    # train.py builds AugmentConfig from the section's fields: same defaults, same old runs
    section = {k: v for k, v in vars(AugmentSection()).items() if k != "enabled"}
    assert AugmentConfig(**section) == AugmentConfig()


@pytest.mark.parametrize("group", sorted(STYLE_ON))
def test_each_style_group_changes_images_seeded(batch, group):
    cfg = AugmentConfig(**OFF, **STYLE_ON[group])
    out = augment(batch, cfg, _g(12))
    assert out.shape == batch.shape and torch.equal(out, out.round())
    assert out.min() >= 0 and out.max() <= 255
    changed = (out != batch).flatten(1).any(1)
    assert changed.float().mean() > 0.9
    assert torch.equal(out, augment(batch, cfg, _g(12)))
    assert not torch.equal(out, augment(batch, cfg, _g(13)))


def test_everything_on_seeded_and_in_range(batch):
    cfg = AugmentConfig(**_docs_preset())
    g1, g2 = _g(14), _g(14)
    out = augment(batch, cfg, g1)
    assert torch.equal(out, augment(batch, cfg, g2)) and torch.equal(g1.get_state(), g2.get_state())
    assert not torch.equal(out, augment(batch, cfg, _g(15)))
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255


def test_padding_makes_a_black_frame(batch):
    x = batch.clamp(min=1)  # no black pixel of its own
    for crop in ((1.0, 1.0), (0.5, 0.5)):  # a crop window inside the image: the frame stays black
        cfg = AugmentConfig(**OFF, crop_area=crop, pad_prob=1.0, pad_fraction=(0.2, 0.2))
        out = augment(x, cfg, _g(16))
        for img in (out != 0).all(1):  # the content: one solid box of about 0.8 x 0.8 of the side
            rows, cols = img.any(1).nonzero().flatten(), img.any(0).nonzero().flatten()
            box = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.all() and img.sum() == box.numel()
            assert 21 <= len(rows) <= 24 and 21 <= len(cols) <= 24  # 0.8 * 28 = 22.4
    half = augment(x, AugmentConfig(**OFF, pad_prob=0.5), _g(17))
    framed = (half == 0).flatten(1).any(1).float().mean()
    assert 0.25 < framed < 0.75


def test_crop_area_zooms_in():
    ramp = torch.arange(40.0).repeat(16, 1, 40, 1) * 5  # columns 0..195
    out = augment(ramp, AugmentConfig(**OFF, crop_area=(0.25, 0.25)), _g(18))
    span = out.amax((1, 2, 3)) - out.amin((1, 2, 3))
    assert ((span > 85) & (span < 105)).all()  # half the side of the window: half the ramp
    assert (out.diff(dim=3) >= 0).all()  # still a left-to-right ramp


def test_gamma_monotonic_per_pixel(batch):
    for gamma, sign in (((0.5, 2.0), 0), ((0.5, 0.9), 1), ((1.2, 2.0), -1)):
        out = augment(batch, AugmentConfig(**OFF, gamma=gamma), _g(19))
        x, y = batch.flatten(1), out.flatten(1)
        order = x.argsort(1)
        assert (y.gather(1, order).diff(dim=1) >= 0).all()  # brighter stays brighter
        if sign:  # gamma < 1 lifts every pixel, gamma > 1 lowers it (0 and 255 stay)
            assert ((y - x) * sign >= 0).all() and ((y - x) * sign > 0).any()


def test_blur_and_sharpen(batch):
    def roughness(t):
        return (t.diff(dim=2).abs().mean() + t.diff(dim=3).abs().mean()).item()
    blurred = augment(batch, AugmentConfig(**OFF, sharpen=(-1.0, -1.0)), _g(20))
    sharpened = augment(batch, AugmentConfig(**OFF, sharpen=(1.0, 1.0)), _g(20))
    assert roughness(blurred) < 0.8 * roughness(batch) < roughness(batch) < roughness(sharpened)
    flat = torch.full((4, 1, 20, 20), 90.0)  # no edge: nothing to blur or sharpen
    assert torch.equal(augment(flat, AugmentConfig(**OFF, sharpen=(-1.0, 4.0)), _g(21)), flat)


def test_noise_std():
    x = torch.full((8, 1, 64, 64), 128.0)
    out = augment(x, AugmentConfig(**OFF, noise_std=(5.0, 5.0)), _g(22))
    std = (out - x).flatten(1).std(1)
    assert ((std > 4.5) & (std < 5.5)).all()


def test_jpeg_changes_only_the_drawn_images(batch, monkeypatch):
    real = aug_module._jpeg
    for x in (batch, batch[:, :1]):  # RGB and gray images
        seen = []
        monkeypatch.setattr(aug_module, "_jpeg", lambda img, q: seen.append(q) or real(img, q))
        out = augment(x, AugmentConfig(**OFF, jpeg_prob=0.5, jpeg_quality=(30, 60)), _g(23))
        changed = (out != x).flatten(1).any(1)
        assert 0.2 < changed.float().mean() < 0.8
        assert changed.sum() == len(seen) and all(30 <= q <= 60 for q in seen)
        assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize("field,value", [
    ("crop_area", (0.0, 1.0)), ("crop_area", (0.8, 0.5)), ("crop_area", (0.5, 1.2)),
    ("crop_ratio", (0.05, 1.0)), ("pad_prob", 1.5), ("pad_fraction", (0.5, 0.95)),
    ("gamma", (2.0, 0.5)), ("gamma", 1.0), ("sharpen", (-1.5, 0.0)), ("noise_std", (-1.0, 2.0)),
    ("noise_std", (1.0, 2.0, 3.0)), ("jpeg_prob", -0.1), ("jpeg_quality", (0, 90)),
    ("jpeg_quality", (30.5, 90))])
def test_style_config_validation(field, value):
    with pytest.raises(ValueError, match=f"AugmentConfig.{field}"):
        AugmentConfig(**{field: value})


@pytest.mark.parametrize("aug,message", [
    ({"gamma": [2.0, 0.5]}, r"data.augment.gamma: must be \[lo, hi\]"),
    ({"crop_area": [0, 1]}, "data.augment.crop_area: must be"),
    ({"noise_std": [3]}, "data.augment.noise_std: must be"),
    ({"jpeg_quality": [30, 101]}, "data.augment.jpeg_quality: must be"),
    ({"jpeg_quality": [30.0, 90]}, "jpeg_quality.*integer"),
    ({"pad_prob": 1.5}, "data.augment.pad_prob"),
    ({"sharpen": 0.5}, "data.augment.sharpen: expected a list")])
def test_style_section_validation(aug, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": {"augment": aug}})


def _docs_preset() -> dict:
    """The augment fields of the YAML snippet in docs/configs.md, "Augmentation against style"."""
    text = DOCS.read_text().split("## Augmentation against style", 1)[1]
    block = re.search(r"^((?:    .+\n)+)", text, re.M).group(1)  # the first indented block
    return yaml.safe_load("\n".join(line[4:] for line in block.splitlines()))["data"]["augment"]


def test_docs_preset_is_a_valid_config():
    cfg = config_from_dict({"data": {"augment": _docs_preset()}})
    built = AugmentConfig(**{k: v for k, v in vars(cfg.data.augment).items() if k != "enabled"})
    assert built.pad_prob > 0 and built.jpeg_prob > 0 and built.gamma != (1.0, 1.0)
