"""DICOM files -> 8-bit display pixels, the same kind any other image file gives.

``images.decode`` calls ``read`` for DICOM files (see ``images.is_dicom``) and treats the result
as an 8-bit PNG with those pixels (gray or RGB, then the requested channel count), so a DICOM
and a PNG holding the same picture give the same model input.

What ``read`` does, in order:

1. pixel data: pydicom's ``pixel_array``. Uncompressed transfer syntaxes and RLE always decode;
   compressed ones (JPEG, JPEG 2000, JPEG-LS, HTJ2K) decode when an installed pydicom plugin
   handles them (Pillow covers JPEG baseline/extended 8-bit and JPEG 2000); any other is an
   error naming the transfer syntax and the plugin to install. Multi-frame files are refused:
   the classifier takes one image, and picking a frame for the user could classify the wrong
   one. A file without Pixel Data (7FE0,0010) is an error.
2. gray (MONOCHROME1/2), in float64:
   - Modality LUT: ``v * RescaleSlope + RescaleIntercept`` (1 and 0 when absent). A Modality
     LUT Sequence is refused (rare; its table is not applied here);
   - VOI: the file's first WindowCenter/WindowWidth pair, with its VOILUTFunction (LINEAR by
     default, LINEAR_EXACT, SIGMOID: PS3.3 C.11.2.1.2 and C.11.2.1.3) to 0..255. Without a
     window: 8-bit unsigned stored data with no rescale is kept as is (it already is display
     pixels); anything else maps its min..max to 0..255 (a flat image gives 0). A VOI LUT
     Sequence is not used (the min-max rule applies instead). Values are rounded half up;
   - MONOCHROME1 (0 = white) is inverted, ``255 - y``, so every gray image is 0 = black.
3. color: RGB as stored; YBR_FULL/YBR_FULL_422 are converted to RGB by pydicom, and JPEG 2000
   YBR_ICT/YBR_RCT come out of the decoder as RGB. More than 8 bits per sample keep the top 8
   of BitsStored (the 16-bit PNG rule). PALETTE COLOR and other interpretations are refused.

Errors are ``DicomError`` with the problem and the fix; ``images.decode`` adds the file name
and raises ``ImageError``. pydicom is imported only here and only when a DICOM file is read:
``import medimage`` (the board runtime) does not need it.
"""
from __future__ import annotations

import warnings

import numpy as np

DICOM_EXTS = (".dcm", ".dicom")
_CONVERT = ("convert it to an uncompressed transfer syntax (dcmtk: `dcmdjpeg in.dcm out.dcm`; "
            "GDCM: `gdcmconv --raw in.dcm out.dcm`) or export the image as PNG")
_COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


class DicomError(ValueError):
    """A DICOM file that cannot be read here; the message says why and what to do."""


def read(file) -> np.ndarray:
    """DICOM path or binary file object -> uint8 HxW (gray) or HxWx3 (RGB) display pixels."""
    try:
        import pydicom
    except ImportError:
        raise DicomError("reading DICOM files needs pydicom: `pip install pydicom` (or export "
                         "the image as PNG)") from None
    with warnings.catch_warnings():  # pydicom warns about header oddities; our errors say enough
        warnings.simplefilter("ignore")
        ds = _dataset(pydicom, file)
        arr = _pixels(ds)
    pi = str(ds.get("PhotometricInterpretation", "")).strip()
    if pi in ("MONOCHROME1", "MONOCHROME2") and arr.ndim == 2:
        y = _to_8bit(ds, arr)
        return 255 - y if pi == "MONOCHROME1" else y
    if pi in _COLOR and arr.ndim == 3 and arr.shape[-1] == 3:
        shift = max(int(ds.get("BitsStored") or 8) - 8, 0)
        return (arr.astype(np.uint32) >> shift).clip(0, 255).astype(np.uint8)
    raise DicomError(f"photometric interpretation {pi or 'missing'!r} with "
                     f"{ds.get('SamplesPerPixel', '?')} samples per pixel is not read here "
                     "(MONOCHROME1/2, RGB and YBR_FULL* are); export the image as PNG")


def _dataset(pydicom, file):
    # force: a file named .dcm may lack the 128-byte preamble and 'DICM' (a bare data set)
    try:
        ds = pydicom.dcmread(file, force=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise DicomError(f"cannot read the DICOM file ({type(e).__name__}: {e}); it is corrupt "
                         "or truncated: pass the complete file") from None
    if "PixelData" not in ds:
        raise DicomError("no Pixel Data (7FE0,0010): not an image DICOM (a report, a float "
                         "image, ...) or not a DICOM file at all; pass an image DICOM file")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise DicomError(f"{frames} frames; the classifier takes one image: save the frame "
                         "to classify as a single-frame DICOM or PNG")
    if "ModalityLUTSequence" in ds:
        raise DicomError("uses a Modality LUT Sequence, which is not applied here; export "
                         "the image as PNG, or with RescaleSlope/RescaleIntercept")
    if "TransferSyntaxUID" not in ds.file_meta:  # a bare data set: its encoding as read
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                          pydicom.uid.ExplicitVRLittleEndian if little else
                                          pydicom.uid.ExplicitVRBigEndian)
    return ds


def _pixels(ds) -> np.ndarray:
    from pydicom.pixels import get_decoder

    ts = ds.file_meta.TransferSyntaxUID
    syntax = f"transfer syntax {ts.name} ({ts})"
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DicomError(f"{syntax} has no pydicom decoder; {_CONVERT}") from None
    if not decoder.is_available:
        plugins = "; ".join(decoder.missing_dependencies) or "none known"
        raise DicomError(f"{syntax} cannot be decoded here: no installed pydicom plugin "
                         f"decodes it (plugins and what they need: {plugins}); install one, "
                         f"e.g. `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg`, "
                         f"or {_CONVERT}")
    try:
        return ds.pixel_array
    except Exception as e:  # pydicom and its plugins raise many types for bad data
        raise DicomError(f"cannot decode the pixel data, {syntax} ({type(e).__name__}: {e}); "
                         "the file is corrupt or truncated, or the installed plugin cannot "
                         f"decode this variant: pass a complete file, install another pydicom "
                         f"plugin (pylibjpeg, gdcm), or {_CONVERT}") from None


def _number(ds, keyword, default: float) -> float:
    """A numeric element; the first value when it holds several (WindowCenter may)."""
    v = ds.get(keyword)
    if v is None or v == "":
        return default
    if not isinstance(v, (int, float)):
        v = v[0]
    return float(v)


def _to_8bit(ds, arr: np.ndarray) -> np.ndarray:
    """Gray stored values -> Modality LUT -> VOI -> uint8 (see the module docstring)."""
    slope, intercept = _number(ds, "RescaleSlope", 1.0), _number(ds, "RescaleIntercept", 0.0)
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        if (arr.dtype == np.uint8 and int(ds.get("BitsStored") or 8) == 8
                and (slope, intercept) == (1.0, 0.0)):
            return arr  # 8-bit stored values are display values already
        x = arr.astype(np.float64) * slope + intercept
        lo, hi = x.min(), x.max()
        y = (x - lo) * 255 / (hi - lo) if hi > lo else np.zeros_like(x)
    else:
        x = arr.astype(np.float64) * slope + intercept
        y = _window(x, _number(ds, "WindowCenter", 0.0), _number(ds, "WindowWidth", 0.0),
                    str(ds.get("VOILUTFunction") or "LINEAR").strip().upper())
    return np.floor(np.clip(y, 0, 255) + 0.5).astype(np.uint8)


def _window(x: np.ndarray, c: float, w: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2/3 with output range 0..255 (clipped by the caller)."""
    if function == "LINEAR":
        if w < 1:
            raise DicomError(f"WindowWidth {w:g} < 1 is invalid for a LINEAR window; fix the "
                             "header (or remove the window) or export the image as PNG")
        if w == 1:  # a threshold: the formula's middle range is empty
            return np.where(x > c - 0.5, 255.0, 0.0)
        return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    if w <= 0:
        raise DicomError(f"WindowWidth {w:g} <= 0 is invalid; fix the header (or remove the "
                         "window) or export the image as PNG")
    if function == "LINEAR_EXACT":
        return ((x - c) / w + 0.5) * 255
    if function == "SIGMOID":
        with np.errstate(over="ignore"):  # far below the center: exp -> inf, y -> 0
            return 255 / (1 + np.exp(-4 * (x - c) / w))
    raise DicomError(f"VOILUTFunction {function!r} is not one of LINEAR, LINEAR_EXACT, "
                     "SIGMOID; fix the header or export the image as PNG")
