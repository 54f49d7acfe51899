"""Users' own tasks declared in a training config (data.tasks entries, docs/your_data.md):
class-per-folder trees (split folders or one pool, folder or .tar) and CSV manifests built in
tmp_path from the real tiny fixtures (../shared/data/tiny_fixtures.tar); their validation, the
data errors, the data cache, and a run on a user's task through training, export, an all-RTL
FINN build and the deploy package, which read the task from the run, not the registry."""
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from brevitas_models import data
from brevitas_models.config import ConfigError, config_from_dict, load_config
from brevitas_models.tasks import BUILTIN, TASKS, TaskSection, get_task, spec_from_dict
from brevitas_models.train import load_data, tasks_of
from test_data import _write_tar

FIXTURES = data.data_root() / "tiny_fixtures.tar"
# Kermany names: the patient is personNNN or [NORMAL2-]IM-NNNN
PATIENT = r"^(person\d+|(?:NORMAL2-)?IM-\d+)"


def _fixture_files(prefix):
    with tarfile.open(FIXTURES) as tf:
        return {m.name.removeprefix("./")[len(prefix):]: tf.extractfile(m).read()
                for m in tf if m.isfile() and m.name.removeprefix("./").startswith(prefix)}


CXR = _fixture_files("cxr_kermany_official_val_16/")   # "NORMAL/x.jpeg" -> bytes: 8 + 8
MRI = _fixture_files("brain_mri_nickparvar_test_17/")  # 4 classes: 6, 5, 3, 3


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFPGA_CACHE", str(tmp_path / "cache"))


def _write(root: Path, files: dict) -> Path:
    for name, payload in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(payload)
    return root


def _cfg(tmp_path, *tasks, **over):
    raw = {"name": "mine", "out_dir": str(tmp_path / "runs"),
           "data": {"tasks": list(tasks), "epoch_size": 64},
           "model": {"arch": "mlp", "in_channels": 1, "hidden": [32, 16], "w_bits": 4,
                     "a_bits": 4, "head_hidden": 8},
           "train": {"epochs": 1, "batch_size": 16, "threads": 1}}
    raw.update(over)
    return config_from_dict(raw, "mine.yaml")


def _cxr_pool(tmp_path):
    return {"name": "my_cxr", "path": str(_write(tmp_path / "cxr", CXR)), "format": "image_dir",
            "negative_class": "NORMAL", "val_split": {"by": "patient", "pattern": PATIENT}}


def _dicom_cxr_pool(tmp_path):
    """The chest X-rays as a scanner would give them: DICOM files (written with pydicom from
    the real images' pixels), MONOCHROME2 and MONOCHROME1, 8 and 16 bit, with and without a
    rescale; the same patient-carrying names with .dcm."""
    from PIL import Image
    from test_image_formats import _dicom

    files = {}
    for i, (name, payload) in enumerate(sorted(CXR.items())):
        p = np.asarray(Image.open(io.BytesIO(payload)).convert("L"))
        p16 = p.astype(np.uint16) * 257
        dcm = [lambda: _dicom(p, "MONOCHROME2", 8),
               lambda: _dicom(255 - p, "MONOCHROME1", 8),
               lambda: _dicom(p16, "MONOCHROME2", 16, WindowCenter=32768, WindowWidth=65536),
               lambda: _dicom(65535 - p16, "MONOCHROME1", 16, WindowCenter=32768,
                              WindowWidth=65536),
               lambda: _dicom(p.astype(np.int16) * 16 - 2048, "MONOCHROME2", 12,
                              RescaleSlope="0.0625", RescaleIntercept=128, WindowCenter=128,
                              WindowWidth=256)][i % 5]()
        files[name.rsplit(".", 1)[0] + ".dcm"] = dcm
    return {"name": "my_cxr", "path": str(_write(tmp_path / "cxr", files)),
            "format": "image_dir", "negative_class": "NORMAL",
            "val_split": {"by": "patient", "pattern": PATIENT}}


def _labels_fit_folders(split, classes):
    for name, y in zip(split.names, split.labels):
        assert name.split("/")[-2] == classes[y], name


# ----------------------------------------------------------------------- declarations load

def test_pool_folder_resolves_and_splits(tmp_path):
    cfg = _cfg(tmp_path, _cxr_pool(tmp_path))
    t = cfg.data.tasks[0]
    # resolved and stored: the run's config lists the classes and the pool
    assert t.classes == ["NORMAL", "PNEUMONIA"] and t.splits == {"train": "."}
    stored = cfg.to_dict()["data"]["tasks"][0]
    assert stored["classes"] == ["NORMAL", "PNEUMONIA"] and stored["negative_class"] == "NORMAL"
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()  # reloads unchanged
    spec = tasks_of(cfg)[0]
    assert spec.negative_class == 0 and spec.fmt == "image_tar" and spec.size == 224
    sp, rep = data.load_task(spec, size=28, with_report=True)
    # 8 + 8 images: test 20% (2 per class), then val 10% of the rest, whole patients (one
    # per class; person1946 has two images)
    assert list(sp) == ["train", "val", "test"] and len(sp["test"]) == 4
    assert len(sp["val"]) in (2, 3) and len(sp["train"]) == 12 - len(sp["val"])
    assert rep["test_from_train"] == {"by": "image", "fraction": 0.2, "seed": 0}
    assert rep["val_from_train"]["by"] == "patient"
    for s in sp.values():
        assert np.bincount(s.labels, minlength=2).min() >= 1
        _labels_fit_folders(s, t.classes)
    names = [n for s in sp.values() for n in s.names]
    assert sorted(names) == sorted(CXR) and sp["train"].images.shape[1:] == (28, 28, 1)
    pid = (lambda n: re.match(PATIENT, Path(n).name).group(1))
    assert not {pid(n) for n in sp["train"].names} & {pid(n) for n in sp["val"].names}
    again = data.load_task(spec, size=28)
    assert all(again[s].names == sp[s].names for s in sp)  # seeded: the same split each time


def test_split_folders_in_a_tar_with_a_top_folder(tmp_path):
    items = sorted(MRI.items())
    files = {f"mri/{'Testing' if i % 3 == 0 else 'Training'}/{k}": v
             for i, (k, v) in enumerate(items)}
    files["mri/README.txt"] = b"notes, skipped"
    tar = _write_tar(tmp_path / "mri.tar", files)
    cfg = _cfg(tmp_path, {"name": "my_mri", "path": str(tar), "format": "image_dir"},
               "tiny_pneumoniamnist")
    t = cfg.data.tasks[0]
    assert t.splits == {"train": "mri/Training", "test": "mri/Testing"}
    assert t.classes == ["glioma", "meningioma", "notumor", "pituitary"]
    assert cfg.data.task_names == ["my_mri", "tiny_pneumoniamnist"]
    sp = load_data(cfg)  # the user's task pooled with a built-in one
    mine = {s: v.task_ids == 0 for s, v in sp.items()}
    assert mine["test"].sum() == 6 and mine["train"].sum() + mine["val"].sum() == 11
    assert (sp["train"].task_ids == 1).sum() == 64  # tiny_pneumoniamnist's own train split
    assert sp["val"].labels[mine["val"]].max() <= 3


def test_csv_manifest(tmp_path):
    _write(tmp_path / "imgs", {f"mri/{k}": v for k, v in MRI.items()})
    rows = ["path,label,split,patient"]
    for i, k in enumerate(sorted(MRI)):
        split = ["train", "train", "val", "test"][i % 4]
        rows.append(f"mri/{k},{k.split('/')[0]},{split},p{i // 2}")
    (tmp_path / "imgs" / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = _cfg(tmp_path, {"name": "my_csv", "path": str(tmp_path / "imgs" / "labels.csv"),
                          "format": "csv", "size": 64})
    t = cfg.data.tasks[0]
    assert t.classes == ["glioma", "meningioma", "notumor", "pituitary"] and t.splits is None
    sp = data.load_task(tasks_of(cfg)[0], size=32)
    assert {s: len(v) for s, v in sp.items()} == {"train": 9, "val": 4, "test": 4}
    for s in sp.values():
        for name, y in zip(s.names, s.labels):
            assert name.split("/")[1] == t.classes[y]

    # without a split column: carved from train (test, then val), by the patient column
    rows = ["path,label,patient"] + [f"mri/{k},{k.split('/')[0]},p{i // 2}"
                                     for i, k in enumerate(sorted(MRI))]
    (tmp_path / "imgs" / "pool.csv").write_text("\n".join(rows) + "\n")
    decl = {"name": "my_pool_csv", "path": str(tmp_path / "imgs" / "pool.csv"), "format": "csv",
            "val_split": {"by": "patient", "fraction": 0.2}}
    sp = data.load_task(tasks_of(_cfg(tmp_path, decl))[0], size=32)
    assert sorted(sp) == ["test", "train", "val"] and sum(len(v) for v in sp.values()) == 17
    pat = {f"mri/{k}": f"p{i // 2}" for i, k in enumerate(sorted(MRI))}
    assert not {pat[n] for n in sp["train"].names} & {pat[n] for n in sp["val"].names}


def test_builtin_tasks_are_declarations_of_the_same_form():
    assert [d["name"] for d in BUILTIN] == list(TASKS)
    for d in BUILTIN:
        spec = spec_from_dict(d)
        assert spec == get_task(d["name"]) and spec_from_dict(spec.to_dict()) == spec
        assert not Path(d["path"]).is_absolute()  # data-root relative
        TaskSection.model_validate(spec.to_dict())
    # the Kermany patient pattern gives data.patient_id's ids
    rule = get_task("chest_xray").val_split
    for name in CXR:
        m = re.search(rule["pattern"], Path(name).name)
        assert next(g for g in m.groups() if g) == data.patient_id(name)


def test_changed_folder_is_not_served_from_the_cache(tmp_path):
    spec = tasks_of(_cfg(tmp_path, _cxr_pool(tmp_path)))[0]
    first = data.load_task(spec, size=32)
    assert list((tmp_path / "cache").glob("my_cxr-32px-*.npz"))
    assert sum(len(v) for v in first.values()) == 16
    victim, other = sorted(k for k in CXR if k.startswith("PNEUMONIA"))[:2]
    (tmp_path / "cxr" / victim).write_bytes(CXR[other])  # same class, a copy of another
    second = data.load_task(spec, size=32)
    # re-read, not served stale: de-duplication now drops the copy
    assert sum(len(v) for v in second.values()) == 15
    assert other not in [n for v in second.values() for n in v.names]  # sorts after victim


# ------------------------------------------------------------------------------ errors

def _load_error(tmp_path, task: dict) -> str:
    f = tmp_path / "user.yaml"
    f.write_text(yaml.safe_dump({"name": "x", "data": {"tasks": [task]}}))
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: data.tasks[0]") and "\n" not in msg
    return msg


def test_data_errors_name_the_file(tmp_path):
    # an empty class folder
    root = _write(tmp_path / "a", {k: v for k, v in CXR.items()})
    (root / "COVID").mkdir()
    msg = _load_error(tmp_path, {"name": "t", "path": str(root), "format": "image_dir"})
    assert "data.tasks[0].path" in msg and "class folder 'COVID' has no images" in msg
    # one class only
    root = _write(tmp_path / "b", {k: v for k, v in CXR.items() if k.startswith("NORMAL")})
    msg = _load_error(tmp_path, {"name": "t", "path": str(root), "format": "image_dir"})
    assert f"{root}: one class only (['NORMAL'])" in msg and "data.tasks[0].classes" in msg
    # a missing path
    msg = _load_error(tmp_path, {"name": "t", "path": str(tmp_path / "nope"),
                                 "format": "image_dir"})
    assert f"not found: {tmp_path / 'nope'}" in msg and "data.tasks[0].path" in msg
    # a non-image file in a class folder
    root = _write(tmp_path / "c", {**CXR, "NORMAL/scan.raw": b"\0" * 64})
    msg = _load_error(tmp_path, {"name": "t", "path": str(root), "format": "image_dir"})
    assert f"{root}: 'NORMAL/scan.raw' is not an image file" in msg
    # an unknown class in a manifest whose classes are listed
    _write(tmp_path / "m", {f"i/{k}": v for k, v in CXR.items()})
    rows = ["path,label"] + [f"i/{k},{k.split('/')[0]}" for k in sorted(CXR)]
    rows[3] = rows[3].replace(",NORMAL", ",COVID")
    (tmp_path / "m" / "l.csv").write_text("\n".join(rows) + "\n")
    # (classes listed: nothing to resolve, the manifest is checked when it is read)
    cfg = _cfg(tmp_path, {"name": "t", "path": str(tmp_path / "m" / "l.csv"), "format": "csv",
                          "classes": ["NORMAL", "PNEUMONIA"]})
    with pytest.raises(data.TaskDataError) as e:
        load_data(cfg)
    assert str(e.value).startswith(f"{tmp_path / 'm' / 'l.csv'} line 4: label 'COVID' is not "
                                   "one of classes ['NORMAL', 'PNEUMONIA']; add it to classes")
    # with classes: auto, the same manifest is read when the config loads: a third class
    assert config_from_dict({"data": {"tasks": [{"name": "t", "format": "csv", "path": str(
        tmp_path / "m" / "l.csv")}]}}).data.tasks[0].classes == ["COVID", "NORMAL", "PNEUMONIA"]
    # a manifest row whose image is missing
    rows = (["path,label"] + [f"i/{k},{k.split('/')[0]}" for k in sorted(CXR)]
            + ["i/gone.png,NORMAL"])
    (tmp_path / "m" / "l.csv").write_text("\n".join(rows) + "\n")
    msg = _load_error(tmp_path, {"name": "t", "path": str(tmp_path / "m" / "l.csv"),
                                 "format": "csv"})
    assert "line 18: image" in msg and "gone.png not found" in msg


def test_data_errors_when_loading_a_resolved_task(tmp_path):
    """A stored (resolved) declaration is checked when its files are read."""
    cfg = _cfg(tmp_path, _cxr_pool(tmp_path))
    (tmp_path / "cxr" / "COVID").mkdir()
    with pytest.raises(data.TaskDataError, match=r"cxr: class folder 'COVID' has no images"):
        load_data(cfg)
    (tmp_path / "cxr" / "COVID" / "x.png").write_bytes(CXR["NORMAL/NORMAL2-IM-1427-0001.jpeg"])
    with pytest.raises(data.TaskDataError, match=r"folder 'COVID' is not one of classes"):
        load_data(cfg)


@pytest.mark.parametrize("field,value,msg", [
    ("channels", 2, r"data.tasks\[0\].channels: 2 is not one of \[1, 3\]"),
    ("format", "dicom_dir", r"data.tasks\[0\].format: 'dicom_dir' is not one of"),
    ("classes", "NORMAL", r"data.tasks\[0\].classes: expected 'auto' or a list"),
    ("negative_class", "HEALTHY", r"data.tasks\[0\].negative_class: .*'HEALTHY' is not one of"),
    ("val_split", {"fraction": 1.5}, r"data.tasks\[0\].val_split.fraction: 1.5 is outside"),
    ("val_split", {"by": "patient"}, r"data.tasks\[0\]: val_split.by patient needs "
                                     r"val_split.pattern"),
    ("val_split", {"by": "patient", "pattern": "(x"}, r"val_split.pattern: '\(x' is not a valid"),
    ("name", "chest_xray", r"data.tasks\[0\]: name 'chest_xray' is a built-in task's"),
    ("name", "my cxr", r"data.tasks\[0\].name: 'my cxr' must be letters"),
    ("colour", 1, r"data.tasks\[0\]: unknown key\(s\) \['colour'\]"),
])
def test_declaration_field_errors(tmp_path, field, value, msg):
    task = {**_cxr_pool(tmp_path), field: value}
    assert re.search(msg, _load_error(tmp_path, task))


# ------------------------------------------------- train -> export -> build -> deploy package

def test_user_tasks_train_export_build_and_pass_selftest_on_simulated_overlay(tmp_path,
                                                                               monkeypatch):
    """A run on tasks the registry does not know (a folder pool of DICOM files, a .tar of
    split folders of JPEGs, a CSV manifest with split and patient columns): the export's metadata, the FINN build's verification images and
    the deploy package all come from the task declarations stored with the run, and the
    package's own runtime passes its selftest on the simulated overlay (its samples through
    the build's RTL in Verilator, equal to the python golden)."""
    from brevitas_models.export import export_run
    from brevitas_models.train import train
    from deploy.host.package import build_package
    from finn_build.config import config_from_dict as build_config
    from finn_build.pipeline import run_build
    from build_helpers import tiny_build_dict

    monkeypatch.setenv("FINN_BUILD_RTLSIM_OPT", "-O0")
    monkeypatch.setenv("FINN_BUILD_RTLSIM_CACHE", str(tmp_path / "rtl_cache"))
    test = ("glioma/Te-gl_0010.jpg", "meningioma/Te-me_0016.jpg", "notumor/Te-no_0021.jpg",
            "pituitary/Te-pi_0014.jpg")
    mri = {f"{'Testing' if k in test else 'Training'}/{k}": v for k, v in MRI.items()}
    tar = _write_tar(tmp_path / "mri.tar", mri)
    _write(tmp_path / "imgs", {f"mri/{k}": v for k, v in MRI.items()})
    rows = ["path,label,split,patient"] + [
        f"mri/{k},{k.split('/')[0]},{'test' if k in test else 'train'},p{i // 2}"
        for i, k in enumerate(sorted(MRI))]
    (tmp_path / "imgs" / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = _cfg(tmp_path, _dicom_cxr_pool(tmp_path),
               {"name": "my_mri", "path": str(tar), "format": "image_dir",
                "preprocess": {"crop": True, "normalize": "stretch"}},
               {"name": "my_mri_csv", "path": str(tmp_path / "imgs" / "labels.csv"),
                "format": "csv", "val_split": {"by": "patient", "fraction": 0.2}})
    assert not set(cfg.data.task_names) & set(TASKS)
    lines = []
    summary = train(cfg, progress=False, log=lines.append)
    assert summary["epochs"] == 1
    assert "task my_cxr (image_dir, " in lines[0] and lines[0].endswith("NORMAL, PNEUMONIA")
    stored = yaml.safe_load((cfg.run_dir / "config.yaml").read_text())["data"]["tasks"]
    assert stored[1]["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]

    rep = export_run(cfg.run_dir, check_per_task=4)
    assert rep["mismatched_outputs"] == 0
    meta = json.loads((cfg.run_dir / "export" / "model.meta.json").read_text())
    mt = {t["name"]: t for t in meta["tasks"]}
    assert mt["my_mri"]["task"]["classes"] == stored[1]["classes"]
    assert mt["my_mri"]["task"]["path"] == str(tar) and mt["my_mri"]["native_size"] == 224
    assert mt["my_mri"]["preprocess"]["crop"] and mt["my_cxr"]["source_format"] == "image_tar"

    d = tiny_build_dict(tmp_path / "build", "mlp")
    d["model"] = {"checkpoint": str(cfg.run_dir / "best.pt")}
    d["name"] = "user_tasks"
    bcfg = build_config(d)
    brep = run_build(bcfg, echo=lambda *a, **k: None)
    assert brep["status"] == "ok"
    res = json.loads((Path(bcfg.out_dir) / "verification" / "results.json").read_text())
    assert {i["task"] for i in res["images"]} == {"my_cxr", "my_mri", "my_mri_csv"}
    assert {i["source"] for i in res["images"]} >= {"mri.tar"}

    arc = build_package(bcfg.out_dir, bcfg, tmp_path / "pkg")
    with tarfile.open(arc) as tf:
        md = json.load(tf.extractfile(f"{bcfg.name}/metadata.json"))
        members = tf.getnames()
    pt = {t["name"]: t for t in md["tasks"]}
    assert pt["my_cxr"]["classes"] == ["NORMAL", "PNEUMONIA"]
    assert pt["my_mri"]["task"]["format"] == "image_dir" and pt["my_mri"]["native_channels"] == 1
    for t in md["tasks"]:  # a sample of every class of every task
        for c in t["classes"]:
            assert any(m.startswith(f"{bcfg.name}/samples/{t['name']}/") and m.endswith(
                f"_{c}.png") for m in members), (t["name"], c)
    with tarfile.open(arc) as tf:
        tf.extractall(tmp_path / "unpacked", filter="data")
    pkg = tmp_path / "unpacked" / bcfg.name
    r = subprocess.run([sys.executable, "-m", "deploy.pynq.cli", "selftest", "--simulate-build",
                        str(Path(bcfg.out_dir).resolve())], cwd=pkg, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(r.stdout)
    assert st["status"] == "pass" and st["passed"] == st["images"] >= 6
    assert {x["task"] for x in st["results"]} == {"my_cxr", "my_mri", "my_mri_csv"}


def test_shortcut_audit_of_a_declared_task(tmp_path, capsys):
    """`medzoo audit CONFIG.yaml` audits the config's own tasks (the data report of issue 13
    for a user's folder), built-in names still work alongside."""
    from brevitas_models.cli import main as medzoo

    decl = _cxr_pool(tmp_path)
    cfg_file = tmp_path / "mine.yaml"
    cfg_file.write_text(yaml.safe_dump({"name": "mine", "data": {"tasks": [decl]}}))
    assert medzoo(["audit", str(cfg_file), "--size", "32", "--json"]) in (0, None)
    res = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in res] == ["my_cxr"]
    assert res[0]["data_report"] and res[0]["pairs"]
    assert {c for p in res[0]["pairs"] for c in p["classes"]} == {"NORMAL", "PNEUMONIA"}


def test_npz_task_declared_like_medmnist(tmp_path):
    """A MedMNIST-layout npz of the user's (here the tiny PneumoniaMNIST arrays under another
    name): its splits and labels load as the built-in task's do; `classes: auto` cannot name
    integer labels, so it is an error that says to list them."""
    src = data.data_root() / "tiny_pneumoniamnist_28.npz"
    (tmp_path / "mine.npz").write_bytes(src.read_bytes())
    decl = {"name": "my_npz", "path": str(tmp_path / "mine.npz"), "format": "npz",
            "classes": ["normal", "pneumonia"], "channels": 1, "size": 28,
            "negative_class": "normal"}
    mine = data.load_task(tasks_of(_cfg(tmp_path, decl))[0], size=28)
    ref = data.load_task("tiny_pneumoniamnist", size=28)
    assert sorted(mine) == sorted(ref) == ["test", "train", "val"]
    for s in ref:
        assert np.array_equal(mine[s].images, ref[s].images)
        assert np.array_equal(mine[s].labels, ref[s].labels)
    with pytest.raises(ConfigError, match=r"classes"):
        _cfg(tmp_path, dict(decl, classes="auto"))
