"""Data layer tests on the real files in shared/data (tiny sets; full 224 tars are `slow`)."""
import dataclasses
import io
import os
import tarfile
import time

import numpy as np
import pytest
import torch
from PIL import Image

import medimage
from brevitas_models import data
from brevitas_models.tasks import TASKS, get_task

ROOT = data.data_root()
FIXTURES = ROOT / "tiny_fixtures.tar"


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    # every test gets its own decode cache: no test can pass because of another one's cache
    monkeypatch.setenv("MEDFPGA_CACHE", str(tmp_path / "cache"))


def _fixture_files(prefix):
    """{basename: bytes} of the fixture images under `prefix` (e.g. the chest X-ray folder)."""
    out = {}
    with tarfile.open(FIXTURES) as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if m.isfile() and name.startswith(prefix):
                out[name[len(prefix):]] = tf.extractfile(m).read()
    return out


def _write_tar(path, files):
    with tarfile.open(path, "w") as tf:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return path


def _tree_task(tmp_path, files, split_dirs):
    spec = dataclasses.replace(get_task("tiny_chest_xray"), name="tmp_cxr", source="t.tar",
                               split_dirs=split_dirs)
    return _write_tar(tmp_path / "t.tar", files), spec


CXR = _fixture_files("cxr_kermany_official_val_16/")  # "NORMAL/x.jpeg" -> bytes


# --------------------------------------------------------------------------- registry, root

def test_registry_and_unknown_task():
    assert set(TASKS) >= {"pneumoniamnist", "breastmnist", "bloodmnist", "tiny_pneumoniamnist",
                          "tiny_breastmnist", "tiny_bloodmnist", "chest_xray", "brain_mri",
                          "tiny_chest_xray", "tiny_brain_mri"}
    for t in TASKS.values():
        assert (ROOT / t.source).is_file(), t.name
    assert get_task("breastmnist").classes[get_task("breastmnist").negative_class] == "normal+benign"
    assert get_task("pneumoniamnist").negative_class == 0
    assert get_task("bloodmnist").negative_class is None and get_task("bloodmnist").num_classes == 8
    with pytest.raises(ValueError, match=r"unknown task 'nope'.*pneumoniamnist"):
        get_task("nope")


def test_data_root_precedence_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFPGA_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    assert data.data_root(ROOT) == ROOT
    with pytest.raises(FileNotFoundError, match=r"explicit path .*nowhere.*MEDFPGA_DATA.*--data-dir"):
        data.data_root(tmp_path / "nowhere")
    monkeypatch.setenv("MEDFPGA_DATA", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=r"\$MEDFPGA_DATA .*gone"):
        data.load_task("tiny_breastmnist")


# --------------------------------------------------------------------------- npz

@pytest.mark.parametrize("name,channels", [("tiny_pneumoniamnist", 1), ("tiny_breastmnist", 1),
                                           ("tiny_bloodmnist", 3)])
def test_tiny_npz_shapes_and_counts(name, channels):
    task = get_task(name)
    splits = data.load_npz(ROOT / task.source, task)
    for s, n in {"train": 64, "val": 16, "test": 16}.items():
        sp = splits[s]
        assert sp.images.shape == (n, 28, 28, channels) and sp.images.dtype == np.uint8
        assert sp.labels.shape == (n,) and sp.labels.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(sp.labels, minlength=task.num_classes),
                                      n // task.num_classes)


def test_full_npz_official_counts():
    sp = data.load_task("breastmnist")
    assert {s: len(v) for s, v in sp.items()} == {"train": 546, "val": 78, "test": 156}
    assert np.bincount(sp["train"].labels).tolist() == [147, 399]


def _tiny_arrays():
    with np.load(ROOT / "tiny_pneumoniamnist_28.npz") as z:
        return {k: z[k] for k in z.files}


def test_npz_missing_keys(tmp_path):
    a = _tiny_arrays()
    del a["val_labels"], a["test_images"]
    np.savez(tmp_path / "x.npz", **a)
    with pytest.raises(ValueError, match=r"lacks keys \['val_labels', 'test_images'\]; found keys"):
        data.load_npz(tmp_path / "x.npz", get_task("tiny_pneumoniamnist"))


def test_npz_wrong_shape(tmp_path):
    a = _tiny_arrays()
    a["train_images"] = np.zeros((64, 32, 32), np.uint8)
    np.savez(tmp_path / "x.npz", **a)
    with pytest.raises(ValueError, match=r"train_images .*shape \(64, 32, 32\).*expected uint8 \(N,28,28\)"):
        data.load_npz(tmp_path / "x.npz", get_task("tiny_pneumoniamnist"))


def test_npz_one_class_split(tmp_path):
    a = _tiny_arrays()
    a["val_labels"][:] = 1
    np.savez(tmp_path / "x.npz", **a)
    with pytest.raises(ValueError, match=r"split 'val' of .*x\.npz has only one class \(\['pneumonia'\]\)"):
        data.load_npz(tmp_path / "x.npz", get_task("tiny_pneumoniamnist"))


def test_npz_label_out_of_range(tmp_path):
    a = _tiny_arrays()
    a["test_labels"][0] = 7
    np.savez(tmp_path / "x.npz", **a)
    with pytest.raises(ValueError, match=r"split 'test' .*labels \[0, 1, 7\] outside 0\.\.1"):
        data.load_npz(tmp_path / "x.npz", get_task("tiny_pneumoniamnist"))


def test_npz_corrupt_and_missing(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(os.urandom(64) + b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match=r"cannot read .*bad\.npz: not a valid npz"):
        data.load_npz(bad, get_task("tiny_pneumoniamnist"))
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes((ROOT / "tiny_pneumoniamnist_28.npz").read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"trunc\.npz: not a valid npz"):
        data.load_npz(truncated, get_task("tiny_pneumoniamnist"))
    with pytest.raises(FileNotFoundError, match=r"absent\.npz"):
        data.load_npz(tmp_path / "absent.npz", get_task("tiny_pneumoniamnist"))


# --------------------------------------------------------------------------- conversion

def test_to_channels_luma_and_replication():
    rgb = np.array([[[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]]], np.uint8)
    gray = medimage.to_channels(rgb, 1)
    assert gray.shape == (1, 2, 2, 1) and gray.dtype == np.uint8
    assert gray[0, :, :, 0].tolist() == [[76, 150], [29, 255]]  # ITU-R 601, rounded
    back = medimage.to_channels(gray, 3)
    assert back.shape == (1, 2, 2, 3) and (back == gray).all()
    blood = data.load_task("tiny_bloodmnist")["val"].images
    pil = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in blood])
    assert np.abs(medimage.to_channels(blood, 1)[..., 0].astype(int) - pil).max() <= 1
    with pytest.raises(ValueError, match="cannot convert 2 channels"):
        medimage.to_channels(np.zeros((1, 2, 2, 2), np.uint8), 1)


def test_load_task_size_and_channels():
    sp = data.load_task("tiny_pneumoniamnist", size=32, channels=3)
    im = sp["train"].images
    assert im.shape == (64, 32, 32, 3) and im.dtype == np.uint8
    assert (im[..., 0] == im[..., 2]).all()
    assert data.load_task("tiny_bloodmnist", channels=1)["test"].images.shape == (16, 28, 28, 1)
    const = np.full((2, 28, 28, 1), 77, np.uint8)
    assert (medimage.resize(const, 14) == 77).all()


# --------------------------------------------------------------------------- image trees

def test_image_tree_tiny_fixtures():
    cxr = data.load_task("tiny_chest_xray")
    assert list(cxr) == ["test"]
    t = cxr["test"]
    assert t.images.shape == (16, 224, 224, 1) and t.images.dtype == np.uint8
    assert np.bincount(t.labels).tolist() == [8, 8]
    assert t.names[0].endswith("NORMAL/NORMAL2-IM-1427-0001.jpeg") and t.labels[0] == 0
    assert t.images.std() > 10  # real pictures, not blank
    mri = data.load_task("tiny_brain_mri", size=64)["test"]
    assert mri.images.shape == (17, 64, 64, 1)
    assert np.bincount(mri.labels).tolist() == [6, 5, 3, 3]


def test_image_tree_from_directory(tmp_path):
    for name, payload in CXR.items():
        p = tmp_path / "cxr_kermany_official_val_16" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(payload)
    from_dir = data.load_task("tiny_chest_xray", root=tmp_path, size=32)["test"]  # no tar there
    from_tar = data.load_task("tiny_chest_xray", size=32)["test"]
    np.testing.assert_array_equal(from_dir.images, from_tar.images)
    np.testing.assert_array_equal(from_dir.labels, from_tar.labels)


@pytest.mark.parametrize("payload,msg", [(b"\xff\xd8 not really a jpeg", "cannot decode image"),
                                         (b"", "empty image file")])
def test_image_tree_corrupt_member(tmp_path, payload, msg):
    files = {f"d/test/{k}": v for k, v in list(CXR.items())[:2] + list(CXR.items())[-2:]}
    files["d/test/PNEUMONIA/broken.jpeg"] = payload
    tar, spec = _tree_task(tmp_path, files, {"test": "d/test"})
    with pytest.raises(ValueError, match=rf"{msg} 'd/test/PNEUMONIA/broken\.jpeg' in .*t\.tar"):
        data.load_image_tree(tar, spec, 32)


def test_image_tree_unknown_class_folder(tmp_path):
    files = {f"d/test/{k}": v for k, v in CXR.items()}
    files["d/test/COVID/x.jpeg"] = next(iter(CXR.values()))
    tar, spec = _tree_task(tmp_path, files, {"test": "d/test"})
    with pytest.raises(ValueError, match=r"unexpected member 'd/test/COVID/x\.jpeg'"):
        data.load_image_tree(tar, spec, 32)


def test_dedup_planted_duplicate(tmp_path):
    items = sorted(CXR.items())
    normal = [kv for kv in items if kv[0].startswith("NORMAL")]
    pneu = [kv for kv in items if kv[0].startswith("PNEUMONIA")]
    files = {f"d/train/{k}": v for k, v in normal[:4] + pneu[:4]}
    files.update({f"d/test/{k}": v for k, v in normal[4:] + pneu[4:]})
    files["d/test/NORMAL/leak-copy.jpeg"] = normal[0][1]        # train image again in test
    files["d/train/PNEUMONIA/twin.jpeg"] = pneu[1][1]           # duplicate within train
    tar, spec = _tree_task(tmp_path, files, {"train": "d/train", "test": "d/test"})

    raw = data.load_image_tree(tar, spec, 32)
    assert len(raw["train"]) == 9 and len(raw["test"]) == 9
    clean, rep = data.dedup_splits(raw)
    assert rep["duplicate_groups"] == 2 and rep["groups_spanning_splits"] == 1
    assert rep["removed"] == {"train": 1, "test": 1}
    assert "d/test/NORMAL/leak-copy.jpeg" not in clean["test"].names
    assert "d/train/PNEUMONIA/twin.jpeg" not in clean["train"].names  # "twin" sorts after the original
    assert rep["examples"][0] == [f"train:d/train/{normal[0][0]}", "test:d/test/NORMAL/leak-copy.jpeg"]

    # load_task de-duplicates image trees by default and reports it
    sp, report = data.load_task(spec, root=tmp_path, size=32, with_report=True)
    assert {s: len(v) for s, v in sp.items()} == {"train": 8, "test": 8}
    assert report["dedup"]["removed"] == {"train": 1, "test": 1}


def test_dedup_on_npz_splits():
    sp = data.load_task("tiny_breastmnist")
    sp["test"].images[3] = sp["train"].images[10]
    sp["val"].images[5] = sp["train"].images[10]
    clean, rep = data.dedup_splits(sp)
    assert rep["groups_spanning_splits"] == 1 and rep["removed"] == {"train": 0, "val": 1, "test": 1}
    assert rep["examples"] == [["train:train[10]", "val:val[5]", "test:test[3]"]]
    assert len(clean["test"]) == 15 and len(clean["val"]) == 15


def test_cache_reused_and_invalidated(tmp_path):
    tar = tmp_path / "fixtures.tar"
    tar.write_bytes(FIXTURES.read_bytes())
    spec = get_task("tiny_brain_mri")
    first = data.load_image_tree(tar, spec, 48)
    caches = list(data.cache_dir().glob("tiny_brain_mri-48px-*.npz"))
    assert len(caches) == 1 and not list(data.cache_dir().glob("*.tmp"))
    # poison the cache: if the second load returns the poison, it came from the cache
    with np.load(caches[0]) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["test_images"] = np.zeros_like(arrays["test_images"])
    with open(caches[0], "wb") as f:
        np.savez(f, **arrays)
    second = data.load_image_tree(tar, spec, 48)
    assert second["test"].images.max() == 0 and second["test"].names == first["test"].names
    # the key is the archive's content: a touched but unchanged tar still uses the cache...
    st = tar.stat()
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert data.load_image_tree(tar, spec, 48)["test"].images.max() == 0
    # ...and a changed one never does (same bytes but one, same size, same mtime)
    raw = bytearray(tar.read_bytes())
    raw[-1] ^= 1  # tar padding: the images are the same, the archive is not
    tar.write_bytes(bytes(raw))
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = data.load_image_tree(tar, spec, 48)
    np.testing.assert_array_equal(third["test"].images, first["test"].images)
    assert len(list(data.cache_dir().glob("tiny_brain_mri-48px-*.npz"))) == 2


# --------------------------------------------------------------------------- patient split

def test_patient_id():
    assert data.patient_id("person1946_bacteria_4874.jpeg") == "person1946"
    assert data.patient_id("train/PNEUMONIA/person12_virus_44.jpeg") == "person12"
    assert data.patient_id("IM-0115-0001.jpeg") == "IM-0115"
    assert data.patient_id("NORMAL2-IM-1427-0001.jpeg") == "NORMAL2-IM-1427"
    # same patient, several images: must not be split into IM-0011 and IM-0011-0001
    assert data.patient_id("IM-0011-0001-0002.jpeg") == data.patient_id("IM-0011-0001.jpeg")
    with pytest.raises(ValueError, match="cannot get a patient id from 'scan.png'"):
        data.patient_id("scan.png")


def test_patient_split_no_leak_on_real_names():
    with tarfile.open(ROOT / "chest_xray_kermany_224.tar") as tf:
        names = [n for n in tf.getnames() if "/train/" in n and n.endswith(".jpeg")]
    labels = np.array([int("/PNEUMONIA/" in n) for n in names])
    tr, va = data.patient_split(names, labels, val_fraction=0.1, seed=0)
    assert len(tr) + len(va) == len(names) and not set(tr) & set(va)
    ptr = {data.patient_id(names[i]) for i in tr}
    pva = {data.patient_id(names[i]) for i in va}
    assert pva and not ptr & pva
    for c in (0, 1):  # stratified: about 10 % of each class
        frac = np.mean(labels[va] == c) * len(va) / np.sum(labels == c)
        assert 0.09 < frac < 0.13
    tr2, va2 = data.patient_split(names, labels, val_fraction=0.1, seed=0)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, data.patient_split(names, labels, 0.1, seed=1)[1])


def test_stratified_split():
    labels = np.repeat([0, 1, 2], [100, 50, 20])
    tr, va = data.stratified_split(labels, 0.1, seed=3)
    assert np.bincount(labels[va]).tolist() == [10, 5, 2]
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(170))
    with pytest.raises(ValueError, match="val_fraction"):
        data.stratified_split(labels, 1.5)


# --------------------------------------------------------------------------- multi-task, batches

def test_build_multitask():
    mt = data.build_multitask(["tiny_pneumoniamnist", "tiny_breastmnist", "tiny_bloodmnist"])
    tr = mt["train"]
    assert tr.images.shape == (192, 28, 28, 1) and tr.images.dtype == np.uint8
    assert tr.tasks == ("tiny_pneumoniamnist", "tiny_breastmnist", "tiny_bloodmnist")
    assert np.bincount(tr.task_ids).tolist() == [64, 64, 64]
    assert tr.labels[tr.task_ids == 2].max() == 7
    rgb = data.build_multitask(["tiny_breastmnist", "tiny_chest_xray"], size=28, channels=3)
    assert set(rgb) == {"train", "val", "test"}  # chest fixtures only have "test"
    assert np.bincount(rgb["test"].task_ids).tolist() == [16, 16]
    assert rgb["train"].images.shape == (64, 28, 28, 3) and set(rgb["train"].task_ids) == {0}


def test_iterate_batches_proportional():
    tr = data.build_multitask(["tiny_pneumoniamnist", "tiny_breastmnist"])["train"]
    batches = list(data.iterate_batches(tr, 50, True, torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [50, 50, 28]
    x, y, t = batches[0]
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 255 and torch.equal(x, x.round()) and x.max() > 1
    assert y.dtype == torch.int64 and t.dtype == torch.int64
    # every sample exactly once: match each image back to the pool by its pixels + task
    seen = torch.cat([b[0] for b in batches]).flatten(1)
    pool = torch.from_numpy(tr.images).permute(0, 3, 1, 2).flatten(1).float()
    assert torch.equal(seen.sum(0), pool.sum(0))
    again = list(data.iterate_batches(tr, 50, True, torch.Generator().manual_seed(0)))
    assert torch.equal(again[0][0], x)
    ordered = next(data.iterate_batches(tr, 64, False, torch.Generator()))
    assert torch.equal(ordered[2], torch.zeros(64, dtype=torch.int64))


def test_iterate_batches_balanced():
    tasks = data.build_multitask(["tiny_pneumoniamnist", "tiny_breastmnist"])["train"]
    keep = np.concatenate([np.arange(64), 64 + np.arange(8)])  # 64 vs 8: imbalanced
    small = data.MultiTaskData(tasks.images[keep], tasks.labels[keep], tasks.task_ids[keep], tasks.tasks)
    g = torch.Generator().manual_seed(1)
    tids = torch.cat([b[2] for b in data.iterate_batches(small, 100, True, g, "balanced", 4000)])
    assert len(tids) == 4000 and 0.45 < tids.float().mean() < 0.55
    prop = torch.cat([b[2] for b in data.iterate_batches(small, 100, True, g, "proportional")])
    assert prop.float().mean() == pytest.approx(8 / 72)
    with pytest.raises(ValueError, match="sampling"):
        next(data.iterate_batches(small, 10, True, g, "uniform"))


# --------------------------------------------------------------------------- full 224 sets



@pytest.mark.slow
def test_brain_mri_full_dedup_numbers():
    sp, rep = data.load_task("brain_mri", with_report=True)
    d = rep["dedup"]
    assert d["duplicate_groups"] == 300 and d["groups_spanning_splits"] == 189
    assert d["groups_by_splits"] == {"train+test": 189, "train": 108, "test": 3}
    assert d["removed"] == {"train": 207, "test": 219}
    assert {s: len(v) for s, v in sp.items()} == {"train": 4948, "val": 553, "test": 1092}
    assert sp["train"].images.shape[1:] == (224, 224, 1)
    train_h = set(sp["train"].hashes) | set(sp["val"].hashes)
    assert not train_h & set(sp["test"].hashes)


@pytest.mark.slow
def test_chest_xray_full_dedup_and_patient_val():
    t0 = time.time()
    sp, rep = data.load_task("chest_xray", with_report=True)
    first = time.time() - t0
    d = rep["dedup"]
    assert d["duplicate_groups"] == 30 and d["groups_spanning_splits"] == 0
    assert d["removed"] == {"train": 26, "test": 6}
    assert {s: len(v) for s, v in sp.items()} == {"train": 4670, "val": 520, "test": 618}
    ptr = {data.patient_id(n) for n in sp["train"].names}
    assert not ptr & {data.patient_id(n) for n in sp["val"].names}
    t0 = time.time()
    data.load_task("chest_xray")
    assert time.time() - t0 < first  # second load comes from the cache
