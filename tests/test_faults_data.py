"""No silent wrong results on the data side (issue 11): the decode cache follows its source,
>8-bit images keep their pixels, every image type is read the same way in training and on the
board, and the runtime CLI rejects bad options and reports unreadable files per row.

Real images only (the tiny fixtures of ../shared/data, converted with PIL); nothing here needs
the simulated overlay or a board."""
import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medimage
from brevitas_models import data
from brevitas_models.tasks import get_task
from deploy.pynq import inputs
from medimage import results

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = data.data_root() / "tiny_fixtures.tar"


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFPGA_CACHE", str(tmp_path / "cache"))


def _fixtures(prefix):
    """{"CLASS/file": bytes} of the fixture images under `prefix`."""
    with tarfile.open(FIXTURES) as tf:
        return {m.name.removeprefix("./")[len(prefix):]: tf.extractfile(m).read()
                for m in tf if m.isfile() and m.name.removeprefix("./").startswith(prefix)}


CXR = _fixtures("cxr_kermany_official_val_16/")
MRI = _fixtures("brain_mri_nickparvar_test_17/")


def _spec(channels=1, **over):
    return dataclasses.replace(get_task("tiny_chest_xray"), name="tmp_cxr", channels=channels,
                               split_dirs={"test": "d/test"}, **over)


def _small(payload, mode, size=(40, 32)):
    """A real fixture image, decoded and shrunk (a non-square size exercises the resize)."""
    with Image.open(io.BytesIO(payload)) as im:
        return np.asarray(im.convert(mode).resize(size, Image.BICUBIC))


def _tree(root, files):
    for name, payload in files.items():
        p = root / "d" / "test" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(payload)
    return root


def _load(root, spec=None, size=32, **kw):
    return data.load_image_tree(root, spec or _spec(), size, **kw)["test"]


def _row(split, name):
    return split.names.index(f"d/test/{name}")


# --------------------------------------------------------------------------- (1) decode cache

def test_cache_follows_moves_replacements_and_corrupt_files_in_a_folder(tmp_path):
    items = sorted(CXR.items())
    root = _tree(tmp_path / "tree", dict(items[:3] + items[-3:]))
    first = _load(root)
    assert _load(root).names == first.names
    assert len(list(data.cache_dir().glob("tmp_cxr-*.npz"))) == 1  # unchanged: cache reused

    # (a) an image moved to the other class folder: new name, new label
    moved = items[0][0]                                     # NORMAL/...
    (root / "d/test" / moved).rename(root / "d/test/PNEUMONIA" / Path(moved).name)
    second = _load(root)
    assert f"d/test/{moved}" not in second.names
    assert second.labels[_row(second, "PNEUMONIA/" + Path(moved).name)] == 1
    assert np.bincount(second.labels).tolist() == [2, 4]

    # (b) a file's content replaced by another image
    target, other = items[1][0], items[-1][0]
    (root / "d/test" / target).write_bytes(CXR[other])
    third = _load(root)
    np.testing.assert_array_equal(third.images[_row(third, target)],
                                  third.images[_row(third, other)])
    assert not np.array_equal(third.images[_row(third, target)],
                              second.images[_row(second, target)])

    # (c) a corrupt file added: the clear decode error, not the cached arrays
    (root / "d/test/NORMAL/broken.jpeg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match=r"cannot decode image 'd/test/NORMAL/broken\.jpeg'"):
        _load(root)
    assert not list(data.cache_dir().rglob("*.tmp"))  # caches are written by rename only


def test_cache_sees_a_same_size_same_mtime_rewrite(tmp_path):
    """BMP files of one size have one byte count: only the content (ctime) tells them apart."""
    normal, pneu = sorted(k for k in CXR if k.startswith("N")), sorted(
        k for k in CXR if k.startswith("P"))
    bmps = {}
    for k in normal[:2] + pneu[:2]:
        b = io.BytesIO()
        Image.fromarray(_small(CXR[k], "L")).save(b, "BMP")
        bmps[k.replace(".jpeg", ".bmp")] = b.getvalue()
    root = _tree(tmp_path / "tree", bmps)
    first = _load(root)
    a, b = sorted(bmps)[:2]
    f = root / "d/test" / a
    st = f.stat()
    assert len(bmps[a]) == len(bmps[b])
    f.write_bytes(bmps[b])
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = _load(root)
    np.testing.assert_array_equal(second.images[_row(second, a)], first.images[_row(first, b)])


def test_cache_follows_a_rewritten_tar_of_the_same_size_and_mtime(tmp_path):
    items = sorted(CXR.items())
    keep = dict(items[:3] + items[-3:])
    name = items[0][0]                    # NORMAL/NORMAL2-IM-1427-0001.jpeg

    def write(files):
        with tarfile.open(tmp_path / "t.tar", "w") as tf:
            for n, payload in files.items():
                info = tarfile.TarInfo(f"d/test/{n}")
                info.size, info.mtime = len(payload), 0
                tf.addfile(info, io.BytesIO(payload))

    write(keep)
    tar = tmp_path / "t.tar"
    st = tar.stat()
    first = _load(tar)
    assert first.labels[_row(first, name)] == 0
    moved = dict(keep)  # the same image moved to the other class (tar headers: same size)
    moved["PNEUMONIA/" + Path(name).name] = moved.pop(name)
    write(moved)
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tar.stat().st_size == st.st_size and tar.stat().st_mtime_ns == st.st_mtime_ns
    second = _load(tar)
    assert second.labels[_row(second, "PNEUMONIA/" + Path(name).name)] == 1
    assert np.bincount(second.labels).tolist() == [2, 4]


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    from brevitas_models.files import write_atomic

    target = tmp_path / "c" / "x.npz"

    def boom(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    for unique in (False, True):  # the build's fixed temp name, the shared cache's fresh one
        with pytest.raises(KeyboardInterrupt):
            write_atomic(target, boom, unique=unique)
    assert list((tmp_path / "c").iterdir()) == []


# --------------------------------------------------------------------------- (2) image types

def _png48(arr16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), straight from the PNG spec."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    h, w, _ = arr16.shape
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr16)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _save(arr, fmt):
    b = io.BytesIO()
    Image.fromarray(arr).save(b, fmt)
    return b.getvalue()


def _variants(a8: np.ndarray) -> dict[str, bytes]:
    """The same pixels as 8-bit PNG and as every other type; 16-bit ones carry `a8` in their top
    8 bits and noise in the low 8 (so only the documented v >> 8 gives `a8` back)."""
    rng = np.random.default_rng(0)
    a16 = (a8.astype(np.uint16) << 8) | rng.integers(0, 256, a8.shape, dtype=np.uint16)
    out = {"png8.png": _save(a8, "PNG"), "bmp.bmp": _save(a8, "BMP"),
           "tif8.tif": _save(a8, "TIFF"), "tiff8.TIFF": _save(a8, "TIFF")}
    if a8.ndim == 2:
        out["png16.png"] = _save(a16, "PNG")                      # PIL mode I;16
        out["tif16.tiff"] = _save(a16, "TIFF")                    # PIL mode I;16
        out["tif32.tif"] = _save(a16.astype(np.int32), "TIFF")    # PIL mode I
    else:
        out["png48.png"] = _png48(a16)
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_type_gives_the_8bit_pixels_in_training_and_runtime(tmp_path, channels):
    mode = "L" if channels == 1 else "RGB"
    src = MRI if channels == 3 else CXR   # brain MRIs are stored as RGB JPEGs
    first = sorted(src)
    pick = {"NORMAL": first[0], "PNEUMONIA": first[-1]}
    files = {}
    for cls, k in pick.items():
        for v, payload in _variants(_small(src[k], mode)).items():
            files[f"{cls}/{v}"] = payload
    if channels == 1:
        assert Image.open(io.BytesIO(files["NORMAL/png16.png"])).mode == "I;16"
        assert Image.open(io.BytesIO(files["NORMAL/tif32.tif"])).mode == "I"
    root = _tree(tmp_path / "tree", files)
    spec = _spec(channels)
    split = _load(root, spec, size=24)
    assert sorted(split.names) == sorted(f"d/test/{k}" for k in files)  # none skipped
    task = {"native_channels": channels, "source_format": "image_tar"}
    for cls in pick:
        want = split.images[_row(split, f"{cls}/png8.png")]
        assert want.std() > 5  # a real picture
        for v in _variants(np.zeros((2, 2) if channels == 1 else (2, 2, 3), np.uint8)):
            got = split.images[_row(split, f"{cls}/{v}")]
            np.testing.assert_array_equal(got, want, err_msg=f"training {cls}/{v}")
            board = inputs.from_file(root / "d/test" / cls / v, task, 24, channels)
            np.testing.assert_array_equal(board, want, err_msg=f"runtime {cls}/{v}")
            assert split.hashes[_row(split, f"{cls}/{v}")] == split.hashes[
                _row(split, f"{cls}/png8.png")]  # dedup sees them as one image


def test_float_images_are_refused_with_one_clear_error(tmp_path):
    a = _small(CXR[sorted(CXR)[0]], "L").astype(np.float32)
    files = {"NORMAL/a.png": _save(a.astype(np.uint8), "PNG"),
             "PNEUMONIA/f.tif": _save(a, "TIFF")}
    root = _tree(tmp_path / "tree", files)
    with pytest.raises(ValueError, match=r"PNEUMONIA/f\.tif: 32-bit float image .* save it as "
                                         r"8- or 16-bit"):
        _load(root)
    with pytest.raises(medimage.ImageError, match=r"f\.tif: 32-bit float image"):
        inputs.from_file(root / "d/test/PNEUMONIA/f.tif", {}, 24, 1)


def test_unknown_file_types_are_an_error_and_notes_are_reported(tmp_path):
    items = sorted(CXR.items())
    files = dict(items[:2] + items[-2:])
    files.update({"NORMAL/notes.txt": b"reviewed by X", "PNEUMONIA/.DS_Store": b"\0\0",
                  "PNEUMONIA/._x.jpeg": b"\0\5\26\7"})   # macOS resource fork, not an image
    root = _tree(tmp_path / "tree", files)
    rep = {}
    assert len(_load(root, report=rep)) == 4
    assert rep["skipped_files"] == ["d/test/NORMAL/notes.txt", "d/test/PNEUMONIA/.DS_Store",
                                    "d/test/PNEUMONIA/._x.jpeg"]
    rep2 = {}
    _load(root, report=rep2)  # from the cache: still reported
    assert rep2 == rep
    (root / "d/test/NORMAL/scan.gif").write_bytes(_save(np.zeros((4, 4), np.uint8), "GIF"))
    with pytest.raises(ValueError, match=r"file 'd/test/NORMAL/scan\.gif' .* not an image type "
                                         r"read here \(\.png, .*\.tiff\); convert it to PNG"):
        _load(root)


def test_one_extension_list_for_training_and_board():
    # the board CLI and `medzoo predict` expand folders with medimage.results
    from medimage import results

    assert data.IMAGE_EXTS is medimage.IMAGE_EXTS and results.IMAGE_EXTS is medimage.IMAGE_EXTS
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"} <= set(medimage.IMAGE_EXTS)


# --------------------------------------------------------------------------- (3) runtime CLI

def _cli(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "deploy.pynq.cli"] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_rejects_bad_options_before_loading_anything(tmp_path):
    """No package exists here: each error must come from the option check, not the loader."""
    (tmp_path / "imgs").mkdir()
    cases = [(["classify", "imgs", "--chunk", "0"], "argument --chunk: must be 1 or more, got 0"),
             (["classify", "imgs", "--chunk", "-3"], "argument --chunk: must be 1 or more, got -3"),
             (["classify", "imgs", "--chunk", "ten"], "argument --chunk: 'ten' is not a whole"),
             (["classify", "imgs", "--batch-size", "0"], "argument --batch-size: must be 1 or"),
             (["throughput", "--repeats", "0"], "argument --repeats: must be 1 or more, got 0"),
             (["selftest", "--batch-size", "-1"], "argument --batch-size: must be 1 or more"),
             (["classify", "imgs", "--out", "imgs"], "--out imgs is a folder; give a file name"),
             (["classify", "imgs", "--out", "missing/r.csv"],
              "--out missing/r.csv: folder missing does not exist; create it first"),
             (["throughput", "--out", "."], "--out . is a folder")]
    for args, msg in cases:
        r = _cli(args, tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (args, r.stderr)
        assert lines[0].startswith("error: ") and msg in lines[0], (args, lines[0])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["imgs"]  # nothing written


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path):
    dest = tmp_path / "r.json"
    results.write("first\n", dest)
    assert dest.read_text() == "first\n"
    blocker = tmp_path / "dir"
    (blocker / "x").mkdir(parents=True)   # os.replace onto a non-empty folder fails
    with pytest.raises(results.UsageError, match=r"cannot write .*dir: .*choose another --out"):
        results.write("second\n", blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "r.json"]


def _brightness_model(x: np.ndarray, names):
    """A real, tiny classifier (mean pixel > 100 -> 'bright'), standing in for the FPGA."""
    out = []
    for a, n in zip(x, names):
        p = float(a.mean()) / 255
        out.append({"input": n, "task": "t", "label": "bright" if p > 100 / 255 else "dark",
                    "label_index": int(p > 100 / 255),
                    "probabilities": {"dark": 1 - p, "bright": p}, "mean": float(a.mean())})
    return out


def _mixed_folder(tmp_path):
    """Real images plus one corrupt file, one truncated PNG and one wrong-shape .npy."""
    d = tmp_path / "in"
    d.mkdir()
    for k in sorted(CXR)[:2] + sorted(CXR)[-2:]:
        (d / Path(k).name).write_bytes(CXR[k])
    png = _save(_small(CXR[sorted(CXR)[3]], "L"), "PNG")
    (d / "b_cut.png").write_bytes(png[: len(png) // 2])
    (d / "c_junk.jpg").write_bytes(b"this is not an image")
    np.save(d / "d_wrong.npy", np.zeros((27, 28), np.uint8))
    (d / "readme.txt").write_text("not an image")
    return d


def test_classify_reports_each_unreadable_file_in_its_row(tmp_path):
    d = _mixed_folder(tmp_path)
    files, skipped = results.expand([d], recursive=False)
    assert [p.name for p in skipped] == ["readme.txt"]
    task = {"native_channels": 1, "source_format": "image_tar"}
    load = lambda f: inputs.load_input(f, task, 28, 1)  # noqa: E731 - the runtime's real loader
    rows = results.classify_files(files, load, _brightness_model, chunk=3)
    assert [r["input"] for r in rows] == [str(f) for f in files]  # every file, in order
    by = {Path(r["input"]).name: r for r in rows}
    assert by["b_cut.png"]["status"] == "error" and "b_cut.png: cannot decode" in by[
        "b_cut.png"]["error"]
    assert "c_junk.jpg: cannot decode the image" in by["c_junk.jpg"]["error"]
    assert "d_wrong.npy: raw array has shape (27, 28)" in by["d_wrong.npy"]["error"]
    good = [r for r in rows if r["status"] == "ok"]
    assert len(good) == 4
    for r in good:  # each result belongs to its own file (no shift past the bad ones)
        assert r["mean"] == pytest.approx(float(load(r["input"]).mean()))
    assert len({r["mean"] for r in good}) == 4

    text = results.render([{**r, "task": "t"} for r in rows], ["dark", "bright"], "csv", {})
    table = list(__import__("csv").reader(io.StringIO(text)))
    assert table[0] == ["input", "task", "label", "label_index", "p_dark", "p_bright", "status",
                        "error", "threshold"]
    assert all(row[8] == "" for row in table[1:])  # no threshold: argmax
    assert [row[6] for row in table[1:]] == [r["status"] for r in rows]
    bad_row = next(row for row in table[1:] if row[0].endswith("c_junk.jpg"))
    assert bad_row[2] == "" and "cannot decode" in bad_row[7]
    js = json.loads(results.render(rows, ["dark", "bright"], "json", {"failed": 3}))
    assert js["failed"] == 3 and js["results"][0]["status"] in ("ok", "error")

    with pytest.raises(results.UsageError, match=r"b_cut\.png: cannot decode.*--strict: nothing"):
        results.classify_files(files, load, _brightness_model, chunk=3, strict=True)
