"""Every file type a user may bring, DICOM included, through the one decoder (medimage.decode)
that training's image trees and the board runtime share: the same picture gives the same
pixels and the same model input whatever the file type, and a bad file gives one clear error
naming it. Real pictures from the tiny fixtures of ../shared/data, written out here as PNG,
TIFF, BMP, JPEG and DICOM (with pydicom)."""
import dataclasses
import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space, get_decoder

import medimage
from brevitas_models import data
from brevitas_models.tasks import get_task
from deploy.pynq import inputs

ROOT = Path(__file__).resolve().parents[1]
CXR = "cxr_kermany_official_val_16/PNEUMONIA/person1946_bacteria_4874.jpeg"  # 968x592, gray
MRI = [f"brain_mri_nickparvar_test_17/glioma/Te-gl_00{i}.jpg" for i in (10, 11, 12)]  # 512x512
PRE = get_task("chest_xray").preprocess  # the style-robust preprocessing (crop + stretch)
SIZE = 64


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFPGA_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def real():
    """The fixture JPEGs' bytes, the chest X-ray's gray pixels and an RGB picture made of three
    MRI slices (one per channel: real content with real color differences)."""
    with tarfile.open(data.data_root() / "tiny_fixtures.tar") as tf:
        raw = {n: tf.extractfile("./" + n).read() for n in [CXR] + MRI}
    gray = np.asarray(Image.open(io.BytesIO(raw[CXR])))
    rgb = np.stack([np.asarray(Image.open(io.BytesIO(raw[n])).convert("L")) for n in MRI], -1)
    assert gray.ndim == 2 and gray.std() > 20 and rgb.shape == (512, 512, 3)
    return {"raw": raw, "gray": gray, "rgb": rgb}


def _pil(pixels: np.ndarray, fmt: str, mode=None, **kw) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(pixels)
    (im.convert(mode) if mode else im).save(buf, fmt, **kw)
    return buf.getvalue()


def _dicom(pixels=None, pi="MONOCHROME2", bits=8, ts=uid.ExplicitVRLittleEndian, bare=False,
           **elements) -> bytes:
    """A Secondary Capture DICOM of ``pixels`` (dtype gives the signedness); ``bare``: no
    preamble, 'DICM' or file meta (a plain data set, implicit VR little endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid.generate_uid()
    if pixels is not None:
        ds.set_pixel_data(pixels, pi, bits)
    for key, value in elements.items():
        setattr(ds, key, value)
    if ts == uid.RLELossless:
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        ds.compress(uid.RLELossless)
    buf = io.BytesIO()
    if bare:
        del ds.file_meta
        ds.save_as(buf, implicit_vr=True, little_endian=True)
    else:
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _encapsulated(jpeg: bytes, shape, pi: str, ts=uid.JPEGBaseline8Bit) -> bytes:
    """A DICOM whose pixel data is the given compressed frame, as a scanner would write it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid.generate_uid()
    ds.Rows, ds.Columns = shape[:2]
    ds.SamplesPerPixel = 3 if len(shape) == 3 else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = pi
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _gray_files(real) -> dict[str, bytes]:
    """The chest X-ray's 8-bit pixels p in every gray file type: each decodes to p exactly."""
    p = real["gray"]
    p16 = p.astype(np.uint16) * 257  # p in the top 8 bits and in the low 8
    full16 = {"WindowCenter": 32768, "WindowWidth": 65536}  # maps p*257 back to p exactly
    identity8 = {"WindowCenter": 128, "WindowWidth": 256}  # LINEAR: the identity on 0..255
    return {
        "png8.png": _pil(p, "PNG"),
        "png16.png": _pil(p16, "PNG"),
        "tif8.tif": _pil(p, "TIFF"),
        "tif16.tiff": _pil(p16, "TIFF"),
        "bmp.bmp": _pil(p, "BMP"),
        "m2_8bit.dcm": _dicom(p, "MONOCHROME2", 8),
        "m1_8bit.dcm": _dicom(255 - p, "MONOCHROME1", 8),  # 0 = white: inverted back
        "m2_16bit_window.dcm": _dicom(p16, "MONOCHROME2", 16, **full16),
        "m1_16bit_window.dicom": _dicom(65535 - p16, "MONOCHROME1", 16, **full16),
        # 12-bit signed, stored p*16 - 2048; rescale to p: slope 1/16, intercept 128
        "m2_12bit_rescale.dcm": _dicom((p.astype(np.int16) * 16 - 2048), "MONOCHROME2", 12,
                                       RescaleSlope="0.0625", RescaleIntercept=128,
                                       **identity8),
        "m2_two_windows.dcm": _dicom(p, "MONOCHROME2", 8, WindowCenter=[128, 40],
                                     WindowWidth=[256, 400]),  # the first pair is used
        "m2_linear_exact.dcm": _dicom(p, "MONOCHROME2", 8, WindowCenter="127.5",
                                      WindowWidth=255, VOILUTFunction="LINEAR_EXACT"),
        "m2_16bit_rle.dcm": _dicom(p16, "MONOCHROME2", 16, ts=uid.RLELossless, **full16),
        "m2_bare.dcm": _dicom(p, "MONOCHROME2", 8, bare=True),  # no 'DICM': known by its name
        # the fixture JPEG itself as a DICOM's compressed pixel data (pydicom's Pillow plugin)
        "m2_jpeg.dcm": _encapsulated(real["raw"][CXR], p.shape, "MONOCHROME2"),
        "orig.jpeg": real["raw"][CXR],
    }


def test_gray_file_types_and_dicom_give_the_same_pixels_and_model_input(tmp_path, real):
    p = real["gray"]
    files = _gray_files(real)
    want = medimage.to_model_input(p[..., None], "image_tar", SIZE, 1, PRE, 224)
    task = {"native_channels": 1, "source_format": "image_tar", "preprocess": PRE.to_dict(),
            "native_size": 224}
    tree = tmp_path / "tree" / "test"
    for i, (name, payload) in enumerate(files.items()):
        path = tree / ("NORMAL", "PNEUMONIA")[i % 2] / name  # the tree needs both classes
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        np.testing.assert_array_equal(medimage.decode(path, 1, str(path))[..., 0], p,
                                      err_msg=name)
        # training hands the bytes as a file object with the member's name
        from_bytes = medimage.decode(io.BytesIO(payload), 3, f"x/{name}")
        np.testing.assert_array_equal(from_bytes, np.repeat(p[..., None], 3, -1), err_msg=name)
        board = inputs.load_input(path, task, SIZE, 1)
        np.testing.assert_array_equal(board, want, err_msg=name)
    assert want.std() > 20  # a real picture, not a flat one
    # a DICOM named otherwise (IM0001): known by the 'DICM' magic at byte 128
    other = tmp_path / "IM0001"
    other.write_bytes(files["m2_16bit_window.dcm"])
    assert medimage.is_dicom(other) and not medimage.is_dicom(tree / "NORMAL" / "png8.png")
    np.testing.assert_array_equal(inputs.load_input(other, task, SIZE, 1), want)
    # training's image tree takes the DICOM members like the others: the same model inputs
    spec = dataclasses.replace(get_task("tiny_chest_xray"), name="tmp_formats", source="tree",
                               split_dirs={"test": "test"}, preprocess=PRE)
    split = data.load_task(spec, root=tmp_path, size=SIZE, channels=1, dedup=False)["test"]
    assert sorted(n.rsplit("/", 1)[1] for n in split.names) == sorted(files)
    for name, trained in zip(split.names, split.images):
        np.testing.assert_array_equal(trained, want, err_msg=name)


def test_dicom_without_a_window_maps_its_min_max_to_0_255(real):
    p = real["gray"].astype(np.int64)
    assert (p.min(), p.max()) == (0, 255)
    # 16 bits stored as 100*p + 5000: min-max gives p back (the 16-bit PNG rule, v >> 8, would not)
    stored = (p * 100 + 5000).astype(np.uint16)
    assert not np.array_equal(stored >> 8, p)
    got = medimage.decode(io.BytesIO(_dicom(stored, "MONOCHROME2", 16)), 1)[..., 0]
    np.testing.assert_array_equal(got, p)
    # CT-like: signed stored values with an intercept (Hounsfield units), no window
    ct = _dicom((p * 4 - 1024).astype(np.int16), "MONOCHROME2", 16, RescaleIntercept=-1024,
                RescaleSlope=1)
    np.testing.assert_array_equal(medimage.decode(io.BytesIO(ct), 1)[..., 0], p)
    # a range that is not 0..255: (v - lo) * 255 / (hi - lo), rounded half up
    q = p[100:300, 200:500] // 3 + 40
    lo, hi = q.min(), q.max()
    ref = ((q - lo) * 510 + (hi - lo)) // (2 * (hi - lo))
    for stored, bits, extra in ((q.astype(np.uint16), 16, {}),
                                (q.astype(np.uint8), 8, {"RescaleIntercept": 10})):
        got = medimage.decode(io.BytesIO(_dicom(stored, "MONOCHROME2", bits, **extra)), 1)
        np.testing.assert_array_equal(got[..., 0], ref)
    # 8-bit stored, no rescale: kept as is, not stretched
    got = medimage.decode(io.BytesIO(_dicom(q.astype(np.uint8), "MONOCHROME2", 8)), 1)
    np.testing.assert_array_equal(got[..., 0], q)
    flat = medimage.decode(io.BytesIO(_dicom(np.full((8, 9), 700, np.uint16), "MONOCHROME2",
                                             16)), 1)
    assert flat.shape == (8, 9, 1) and not flat.any()


def test_dicom_windows_follow_the_standard(real):
    p = real["gray"].astype(np.int64)

    def windowed(**window):
        return medimage.decode(io.BytesIO(_dicom(real["gray"], "MONOCHROME2", 8, **window)),
                               1)[..., 0].astype(np.int64)

    # LINEAR, c=100 w=51: x <= 74.5 -> 0, x > 124.5 -> 255, a straight line between
    y = windowed(WindowCenter=100, WindowWidth=51)
    np.testing.assert_array_equal(y == 0, p <= 74)
    np.testing.assert_array_equal(y == 255, p >= 125)
    mid = (p > 74) & (p < 125)
    np.testing.assert_array_equal(y[mid], np.floor(((p[mid] - 99.5) / 50 + 0.5) * 255 + 0.5))
    # width 1: a threshold at c - 0.5
    np.testing.assert_array_equal(windowed(WindowCenter=100, WindowWidth=1), (p >= 100) * 255)
    # MONOCHROME1 is inverted after the window
    m1 = medimage.decode(io.BytesIO(_dicom(real["gray"], "MONOCHROME1", 8, WindowCenter=100,
                                           WindowWidth=51)), 1)[..., 0]
    np.testing.assert_array_equal(m1, 255 - y)
    y = windowed(WindowCenter=128, WindowWidth=64, VOILUTFunction="SIGMOID")
    np.testing.assert_array_equal(y, np.floor(255 / (1 + np.exp(-4 * (p - 128) / 64)) + 0.5))


def test_color_file_types_and_dicom_give_the_same_pixels(real):
    rgb = real["rgb"]
    luma = np.asarray(Image.fromarray(rgb).convert("L"))  # what any RGB file gives as gray
    alpha = rgb[..., :1] // 2 + 1
    exact = {
        "png.png": _pil(rgb, "PNG"),
        "rgba.png": _pil(np.concatenate([rgb, alpha], -1), "PNG"),  # alpha dropped
        "tif.tif": _pil(rgb, "TIFF"),
        "bmp.bmp": _pil(rgb, "BMP"),
        "rgb.dcm": _dicom(rgb, "RGB", 8),
        "rgb16.dcm": _dicom(rgb.astype(np.uint16) * 257, "RGB", 16),  # top 8 bits kept
    }
    for name, payload in exact.items():
        np.testing.assert_array_equal(medimage.decode(io.BytesIO(payload), 3, name), rgb,
                                      err_msg=name)
        np.testing.assert_array_equal(medimage.decode(io.BytesIO(payload), 1, name)[..., 0],
                                      luma, err_msg=name)
    # YBR_FULL: converted to RGB (8-bit color transforms round: at most 1 off)
    ybr = medimage.decode(io.BytesIO(_dicom(convert_color_space(rgb, "RGB", "YBR_FULL"),
                                            "YBR_FULL", 8)), 3)
    assert np.abs(ybr.astype(int) - rgb).max() <= 1 and (ybr == rgb).mean() > 0.5
    # an RGB JPEG, as a file and as a JPEG-baseline DICOM (YBR_FULL_422): the same picture
    jpeg = _pil(rgb, "JPEG", quality=95)
    from_jpeg = medimage.decode(io.BytesIO(jpeg), 3)
    np.testing.assert_array_equal(from_jpeg, np.asarray(Image.open(io.BytesIO(jpeg))))
    from_dcm = medimage.decode(io.BytesIO(_encapsulated(jpeg, rgb.shape, "YBR_FULL_422")), 3)
    assert np.abs(from_dcm.astype(int) - from_jpeg).max() <= 1
    assert (from_dcm != from_jpeg).mean() < 1e-3
    # a CMYK JPEG comes back as RGB: as close to the picture as the RGB JPEG is
    cmyk = medimage.decode(io.BytesIO(_pil(rgb, "JPEG", "CMYK", quality=95)), 3)
    assert np.abs(cmyk.astype(int) - rgb).mean() <= np.abs(from_jpeg.astype(int) - rgb).mean()
    # gray JPEG as RGB: replicated
    gray_jpeg = medimage.decode(io.BytesIO(real["raw"][CXR]), 3)
    np.testing.assert_array_equal(gray_jpeg, np.repeat(real["gray"][..., None], 3, -1))


def test_alpha_and_palette_images(real):
    gray = real["rgb"][..., 0]
    la = _pil(np.stack([gray, real["rgb"][..., 1]], -1), "PNG")  # LA: alpha dropped
    assert Image.open(io.BytesIO(la)).mode == "LA"
    np.testing.assert_array_equal(medimage.decode(io.BytesIO(la), 1)[..., 0], gray)
    np.testing.assert_array_equal(medimage.decode(io.BytesIO(la), 3),
                                  np.repeat(gray[..., None], 3, -1))
    # palette: index i shows color palette[i]; the picture lives in the indices
    palette = np.stack([np.arange(256), 255 - np.arange(256), np.arange(256) * 7 % 256], -1)
    im = Image.frombytes("P", gray.shape[::-1], gray.tobytes())
    im.putpalette(palette.astype(np.uint8).tobytes())
    buf = io.BytesIO()
    im.save(buf, "PNG")
    got = medimage.decode(io.BytesIO(buf.getvalue()), 3)
    np.testing.assert_array_equal(got, palette[gray])
    # a gray palette stored backwards (index 255 - v shows v) decodes to the gray picture
    im = Image.frombytes("P", gray.shape[::-1], (255 - gray).tobytes())
    im.putpalette(np.repeat(255 - np.arange(256), 3).astype(np.uint8).tobytes())
    buf = io.BytesIO()
    im.save(buf, "PNG")
    np.testing.assert_array_equal(medimage.decode(io.BytesIO(buf.getvalue()), 1)[..., 0], gray)


def _no_decoder_syntax():
    for ts in (uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.HTJ2KLossless):
        if not get_decoder(ts).is_available:
            return ts
    pytest.skip("every compressed syntax has a plugin installed here")


def test_bad_dicom_files_give_one_clear_error_naming_the_file(tmp_path, real, monkeypatch):
    p = real["gray"]
    good = _dicom(p, "MONOCHROME2", 8)
    ts = _no_decoder_syntax()
    two = np.stack([p, p])
    cases = {
        "cut.dcm": (good[: len(good) // 2], r"cannot decode the pixel data.*corrupt or truncated"),
        "text.dcm": (b"reviewed by X, nothing to see\n" * 20, r"no Pixel Data"),
        "header_only.dcm": (_dicom(None, PatientName="Doe^J"), r"no Pixel Data \(7FE0,0010\)"),
        "lossless.dcm": (_encapsulated(b"\xff\xd8 not decoded anyway", p.shape, "MONOCHROME2",
                                       ts),
                         rf"transfer syntax {re.escape(ts.name)} \({ts}\) cannot be decoded "
                         r"here.*pip install pylibjpeg.*uncompressed transfer syntax"),
        "frames.dcm": (_dicom(two, "MONOCHROME2", 8), r"2 frames; the classifier takes one"),
        "bad_window.dcm": (_dicom(p, "MONOCHROME2", 8, WindowCenter=10, WindowWidth=0),
                           r"WindowWidth 0 < 1 is invalid"),
    }
    task = {"native_channels": 1, "source_format": "image_tar"}
    for name, (payload, msg) in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(medimage.ImageError, match=rf"^{re.escape(str(path))}: {msg}"):
            medimage.decode(path, 1, str(path))
        with pytest.raises(medimage.ImageError, match=rf"^{re.escape(str(path))}: {msg}"):
            inputs.load_input(path, task, SIZE, 1)
    # training: the member's name, and the archive
    files = {"d/test/NORMAL/a.png": _pil(p, "PNG"), "d/test/PNEUMONIA/cut.dcm": good[:5000]}
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w") as tf:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    spec = dataclasses.replace(get_task("tiny_chest_xray"), name="tmp_bad", source="t.tar",
                               split_dirs={"test": "d/test"}, preprocess=PRE)
    with pytest.raises(ValueError, match=r"^d/test/PNEUMONIA/cut\.dcm: cannot .*in .*t\.tar"):
        data.load_image_tree(tar, spec, SIZE)
    # no pydicom: one error saying what to install
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(medimage.ImageError, match=r"x\.dcm: reading DICOM files needs pydicom"):
        medimage.decode(io.BytesIO(good), 1, "x.dcm")


def test_bad_image_files_give_one_clear_error_naming_the_file(tmp_path, real):
    png = _pil(real["gray"], "PNG")
    task = {"native_channels": 1, "source_format": "image_tar"}
    for name, payload in {"cut.png": png[: len(png) // 2], "notes.png": b"not a picture\n",
                          "notes.jpg": b"\xff\xd8 not a jpeg"}.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(medimage.ImageError,
                           match=rf"^{re.escape(str(path))}: cannot decode the image"):
            inputs.load_input(path, task, SIZE, 1)


def test_file_objects_are_read_where_they_stand_and_put_back(real):
    payload = b"junk" + _dicom(real["gray"], "MONOCHROME2", 8)
    f = io.BytesIO(payload)
    f.seek(4)
    assert medimage.is_dicom(f) and f.tell() == 4
    np.testing.assert_array_equal(medimage.decode(f, 1)[..., 0], real["gray"])
    png = io.BytesIO(_pil(real["gray"], "PNG"))
    assert not medimage.is_dicom(png) and png.tell() == 0
    assert {".dcm", ".dicom"} <= set(medimage.IMAGE_EXTS)
    assert medimage.IMAGE_EXTS[-1] == ".tiff"  # messages listing the types end as before


def test_import_medimage_does_not_import_pydicom(tmp_path, real):
    """The board runtime ships medimage: pydicom is needed only once a DICOM file comes."""
    dcm = tmp_path / "a.dcm"
    dcm.write_bytes(_dicom(real["gray"][:32, :32], "MONOCHROME2", 8))
    png = tmp_path / "a.png"
    png.write_bytes(_pil(real["gray"][:32, :32], "PNG"))
    code = ("import sys, medimage, deploy.pynq.inputs\n"
            "print('pydicom' in sys.modules)\n"
            f"medimage.decode({str(png)!r}, 1)\n"
            "print('pydicom' in sys.modules)\n"
            f"medimage.decode({str(dcm)!r}, 1)\n"
            "print('pydicom' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]
