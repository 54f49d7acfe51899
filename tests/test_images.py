"""One set of image conventions (``medimage``) for training and the board: the same real files
give the same model pixels through training's loader and the runtime's, and ``medimage`` needs
only numpy and Pillow (training importing nothing from ``deploy``: tests/test_structure.py).

Real images only: the tiny data sets of ../shared/data, written out as the file types a user
may hand the board."""
import ast
import dataclasses
import io
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medimage
from brevitas_models import data
from brevitas_models.tasks import get_task
from deploy.pynq import inputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFPGA_CACHE", str(tmp_path / "cache"))


def _fixture_images(prefix: str, count: int) -> dict[str, bytes]:
    """{"CLASS/file.jpeg": bytes}: the first and last ``count // 2`` fixture JPEGs under prefix."""
    with tarfile.open(data.data_root() / "tiny_fixtures.tar") as tf:
        found = sorted((m.name.removeprefix("./"), m) for m in tf
                       if m.isfile() and m.name.removeprefix("./").startswith(prefix))
        picked = found[:count // 2] + found[-(count // 2):]
        return {name[len(prefix):]: tf.extractfile(m).read() for name, m in picked}


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def _file_types(jpeg: bytes, mode: str) -> dict[str, bytes]:
    """One real picture as the original JPEG and as PNG, 16-bit PNG, BMP and TIFF of its 8-bit
    pixels (the 16-bit file holds them in its top 8 bits, noise in the low 8)."""
    with Image.open(io.BytesIO(jpeg)) as im:
        pixels = np.asarray(im.convert(mode))
    out = {"orig.jpeg": jpeg, "png8.png": _encode(pixels, "PNG"),
           "bmp.bmp": _encode(pixels, "BMP"), "tif.tif": _encode(pixels, "TIFF")}
    if mode == "L":
        noise = np.random.default_rng(0).integers(0, 256, pixels.shape, dtype=np.uint16)
        out["png16.png"] = _encode((pixels.astype(np.uint16) << 8) | noise, "PNG")
    return out


STYLE_ROBUST = medimage.Preprocess(crop=True, normalize="equalize")


@pytest.mark.parametrize("prefix,native,size,channels,pre", [
    ("cxr_kermany_official_val_16/", 1, 28, 1, medimage.Preprocess()),  # gray X-rays: resize
    ("cxr_kermany_official_val_16/", 1, 64, 3, medimage.Preprocess()),  # + gray -> RGB
    ("brain_mri_nickparvar_test_17/", 3, 28, 1, medimage.Preprocess()),  # RGB MRIs: luma
    # the tasks' default preprocessing: crop on the 224 grid, resize, equalize (then channels)
    ("cxr_kermany_official_val_16/", 1, 64, 1, STYLE_ROBUST),
    ("brain_mri_nickparvar_test_17/", 1, 64, 1, STYLE_ROBUST),
    ("brain_mri_nickparvar_test_17/", 3, 32, 1, medimage.Preprocess(crop=True,
                                                                    normalize="stretch")),
])
def test_image_files_give_identical_pixels_in_training_and_runtime(tmp_path, prefix, native,
                                                                   size, channels, pre):
    mode = "L" if native == 1 else "RGB"
    spec = get_task("tiny_chest_xray" if prefix.startswith("cxr") else "tiny_brain_mri")
    spec = dataclasses.replace(spec, name="tmp_images", source="tree", channels=native,
                               split_dirs={"test": "test"}, preprocess=pre)
    originals = _fixture_images(prefix, 4)
    for name, jpeg in originals.items():
        cls, stem = name.split("/")[0], Path(name).stem
        for kind, payload in _file_types(jpeg, mode).items():
            p = tmp_path / "tree" / "test" / cls / f"{stem}_{kind}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(payload)
    # dedup off: the copies of one picture in other file types are the point here
    split = data.load_task(spec, root=tmp_path, size=size, channels=channels, dedup=False)["test"]
    kinds = {n.split("_")[-1] for n in split.names}
    assert kinds >= {"orig.jpeg", "png8.png", "bmp.bmp", "tif.tif"}
    assert ("png16.png" in kinds) == (native == 1)
    task = {"native_channels": native, "source_format": "image_tar",
            "preprocess": pre.to_dict(), "native_size": spec.size}
    for name, trained in zip(split.names, split.images):
        assert trained.shape == (size, size, channels) and trained.std() > 5  # a real picture
        board = inputs.load_input(tmp_path / "tree" / name, task, size, channels)
        np.testing.assert_array_equal(board, trained, err_msg=name)
        if not name.endswith("orig.jpeg"):  # every lossless type: the 8-bit PNG's pixels
            png8 = split.names.index(name.rsplit("_", 1)[0] + "_png8.png")
            np.testing.assert_array_equal(trained, split.images[png8], err_msg=name)


@pytest.mark.parametrize("task_name,size,channels", [
    ("tiny_pneumoniamnist", 28, 1), ("tiny_pneumoniamnist", 32, 3),
    ("tiny_bloodmnist", 28, 3), ("tiny_bloodmnist", 32, 1)])
def test_array_task_images_saved_as_png_give_the_training_pixels(tmp_path, task_name, size,
                                                                  channels):
    """A MedMNIST image saved as PNG is prepared as its task's arrays were in training: channels
    first, then resize (the other order gives other pixels when both change)."""
    spec = get_task(task_name)
    with np.load(data.data_root() / spec.source) as arrays:
        native = arrays["test_images"][:8]
    trained = data.load_task(task_name, size=size, channels=channels)["test"].images[:8]
    task = {"native_channels": spec.channels, "source_format": "npz"}
    for i, pixels in enumerate(native):
        png = tmp_path / f"{task_name}_{i}.png"
        Image.fromarray(pixels).save(png)
        board = inputs.load_input(png, task, size, channels)
        np.testing.assert_array_equal(board, trained[i], err_msg=png.name)
    if spec.channels == 3 and channels == 1 and size != 28:  # luma and resize do not commute
        native_hwc = native if native.ndim == 4 else native[..., None]
        other_order = medimage.to_channels(medimage.resize(native_hwc, size), channels)
        assert not np.array_equal(other_order, trained)


def _imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports anywhere (also inside functions); relative
    imports count as ".name" (they stay inside their own package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_medimage_needs_only_numpy_and_pillow():
    """It sits at the bottom: it ships to the board and training imports it. pydicom only in
    dicom.py (imported there when a DICOM file is decoded; tests/test_image_formats.py checks
    that `import medimage` does not load it)."""
    allowed = {"numpy", "PIL"} | set(sys.stdlib_module_names)
    files = sorted((ROOT / "medimage").glob("*.py"))
    assert {"__init__.py", "images.py", "preprocess.py", "dicom.py"} <= {p.name for p in files}
    outside = {p.name: sorted({m.split(".")[0] for m in _imported_modules(p)
                               if not m.startswith(".") and m.split(".")[0] not in allowed})
               for p in files}
    assert outside == {p.name: ["pydicom"] if p.name == "dicom.py" else [] for p in files}
