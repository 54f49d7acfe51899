"""Style-removing preprocessing (medimage.preprocess): crop to the body/head box and integer
intensity normalization, on real images of the chest X-ray and brain MRI fixtures; the run
config that selects it and the record of it in stored configs. (Training == runtime pixels for
the same files: tests/test_images.py.)"""
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

import medimage
from brevitas_models import data
from brevitas_models.config import ConfigError, config_from_dict, stored_run_config
from brevitas_models.tasks import get_task
from medimage import Preprocess
from medimage.preprocess import crop_box, normalize, standardize


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFPGA_CACHE", str(tmp_path / "cache"))


def _real(prefix: str) -> list[np.ndarray]:
    """The gray pixels of the fixture images under ``prefix`` (original resolution)."""
    with tarfile.open(data.data_root() / "tiny_fixtures.tar") as tf:
        members = sorted((m for m in tf if m.isfile() and prefix in m.name), key=lambda m: m.name)
        return [medimage.decode(io.BytesIO(tf.extractfile(m).read()), 1) for m in members]


def test_crop_finds_the_head_inside_added_black_padding():
    for image in _real("brain_mri_nickparvar_test_17/")[:6]:
        image = medimage.resize(image, 224)
        box = crop_box(image)
        pad = 40
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
        y0, y1, x0, x1 = crop_box(padded)
        # the same head: the padded image's box is the plain one shifted by the padding, within
        # a few pixels (the fill share and the margin are relative to the larger frame)
        plain = box or (0, 224, 0, 224)
        moved = np.abs(np.array([y0, y1, x0, x1]) - pad - np.array(plain))
        assert moved.max() <= 10, (plain, (y0, y1, x0, x1))
        a = standardize(image, 64, Preprocess(crop=True))
        b = standardize(padded, 64, Preprocess(crop=True))
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 12  # nearly the same picture


def test_crop_leaves_an_image_without_a_body_alone():
    black = np.zeros((50, 60, 1), np.uint8)
    assert crop_box(black) is None
    speck = black.copy()
    speck[10:12, 10:12] = 200  # a stray mark, far below 1/16 of the frame
    assert crop_box(speck) is None
    assert standardize(speck, 32, Preprocess(crop=True)).shape == (32, 32, 1)


def _equalize_reference(image: np.ndarray) -> np.ndarray:
    """Histogram equalization written out pixel level by pixel level (plain Python ints)."""
    values = image.reshape(-1).tolist()
    n = len(values)
    counts = [values.count(v) for v in range(256)]
    cdf, total = [], 0
    for c in counts:
        total += c
        cdf.append(total)
    cdf_min = next(c for c in cdf if c)
    lut = [min(255, max(0, ((c - cdf_min) * 255 + (n - cdf_min) // 2) // (n - cdf_min)))
           for c in cdf]
    return np.array([lut[v] for v in values], np.uint8).reshape(image.shape)


def test_equalize_and_stretch_are_the_integer_formulas():
    for image in _real("cxr_kermany_official_val_16/")[:3]:
        small = medimage.resize(image, 48)
        eq = normalize(small, "equalize")
        np.testing.assert_array_equal(eq, _equalize_reference(small))
        assert eq.max() == 255
        order = np.argsort(small.reshape(-1), kind="stable")
        assert (np.diff(eq.reshape(-1)[order].astype(int)) >= 0).all()  # monotonic
        st = normalize(small, "stretch")
        flat = np.sort(small.reshape(-1))
        lo, hi = int(flat[int(np.ceil(0.01 * flat.size)) - 1]), \
            int(flat[int(np.ceil(0.99 * flat.size)) - 1])
        assert hi > lo
        v = np.arange(256)
        want = np.clip(((v - lo) * 255 + (hi - lo) // 2) // (hi - lo), 0, 255)
        np.testing.assert_array_equal(st, want[small])
    flat_gray = np.full((8, 8, 1), 77, np.uint8)  # one level: nothing to stretch
    for how in ("stretch", "equalize"):
        np.testing.assert_array_equal(normalize(flat_gray, how), flat_gray)


def test_default_preprocessing_of_the_image_trees_reaches_the_loader(tmp_path):
    """chest_xray/brain_mri (and their tiny fixtures) crop + stretch by default; a config can
    switch it off; the two loads are cached apart."""
    assert get_task("brain_mri").preprocess == Preprocess(crop=True, normalize="stretch")
    assert not get_task("pneumoniamnist").preprocess.active
    on, rep_on = data.load_task("tiny_brain_mri", size=64, with_report=True)
    off, rep_off = data.load_task("tiny_brain_mri", size=64, preprocess={}, with_report=True)
    assert rep_on["preprocess"]["normalize"] == "stretch" and not rep_off["preprocess"]["crop"]
    a, b = on["test"].images, off["test"].images
    assert a.shape == b.shape and not np.array_equal(a, b)
    # stretched: every image reaches white
    assert (a.reshape(len(a), -1).max(axis=1) == 255).all()
    assert len(list((tmp_path / "cache").glob("tiny_brain_mri-64px-*.npz"))) == 2


def test_preprocess_spec_errors_name_the_field():
    with pytest.raises(medimage.ImageError, match="unknown preprocess fields"):
        Preprocess.from_dict({"crop": True, "deskew": True})
    with pytest.raises(medimage.ImageError, match="preprocess.normalize"):
        Preprocess(normalize="clahe")
    with pytest.raises(medimage.ImageError, match="preprocess.crop_threshold"):
        Preprocess(crop_threshold=True)


def test_run_config_records_every_tasks_preprocessing():
    cfg = config_from_dict({"data": {"tasks": ["chest_xray", "pneumoniamnist"],
                                     "preprocess": {"pneumoniamnist": {"normalize": "stretch"}}}})
    pre = cfg.to_dict()["data"]["preprocess"]
    assert pre["chest_xray"] == {**Preprocess(crop=True, normalize="stretch").to_dict()}
    assert pre["pneumoniamnist"]["normalize"] == "stretch" and not pre["pneumoniamnist"]["crop"]
    with pytest.raises(ConfigError, match="preprocess lists \\['brain_mri'\\]"):
        config_from_dict({"data": {"tasks": ["chest_xray"], "preprocess": {"brain_mri": {}}}})
    with pytest.raises(ConfigError, match="data.preprocess.chest_xray.normalize: 'x' is not one"):
        config_from_dict({"data": {"tasks": ["chest_xray"],
                                   "preprocess": {"chest_xray": {"normalize": "x"}}}})


def test_a_stored_config_from_before_preprocessing_means_none():
    """A checkpoint trained before preprocessing existed must not be fed today's defaults."""
    old = {"name": "r", "data": {"tasks": ["chest_xray", "brain_mri"], "size": 64}}
    cfg = config_from_dict(stored_run_config(old))
    assert all(not p.crop and p.normalize == "none" for p in cfg.data.preprocess.values())
    new = config_from_dict(old)  # a user's YAML without the key: the tasks' defaults
    assert all(p.crop for p in new.data.preprocess.values())
    assert stored_run_config(new.to_dict()) == new.to_dict()


def test_a_newer_metadata_field_is_refused_by_the_runtime(tmp_path):
    from deploy.pynq import inputs

    png = tmp_path / "x.png"
    Image.fromarray(_real("cxr_kermany_official_val_16/")[0][..., 0]).save(png)
    task = {"name": "t", "native_channels": 1, "source_format": "image_tar", "native_size": 224,
            "preprocess": {"crop": True, "deskew": True}}
    with pytest.raises(medimage.ImageError, match="task 't'.*deskew.*update the runtime"):
        inputs.load_input(png, task, 64, 1)
