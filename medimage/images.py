"""How a picture becomes model pixels: the one implementation for training and the board.

The model sees uint8 pixels, 0..255, HxWxC at its input size and channel count. A task's
images reach that from their native form (the task's own channel count, any size):

- decoding (``decode``): PIL, then ``convert_image`` to mode "L" (1 channel) or "RGB", 8 bits
  per sample. Images with more than 8 bits per sample (16-bit PNG/TIFF, PIL modes ``I;16*``
  and ``I``) keep their top 8 bits (``v >> 8``, the rule PIL itself applies to 16-bit RGB
  PNGs); PIL's own ``convert`` would saturate them to 255. Float images are refused. An alpha
  channel (RGBA, LA, PA) is dropped, not composited: the color values are kept as stored.
  Palette (P) images take their palette's colors; CMYK JPEGs are converted by PIL;
- DICOM (``is_dicom``: a ``.dcm``/``.dicom`` name, or the 'DICM' magic at byte 128 whatever
  the name): ``dicom.read`` gives 8-bit gray or RGB display pixels (rescale, window,
  MONOCHROME1 inversion: see ``dicom``), which then take the same ``convert_image`` step as an
  8-bit PNG with those pixels;
- channel conversion (``to_channels``): gray -> RGB replicates; RGB -> gray is ITU-R 601 luma
  computed in float32 and rounded (not PIL's integer ``convert("L")``);
- resize (``resize``): PIL bicubic to size x size, aspect not kept;
- the order (``preprocess.to_model_input``): a task stored as arrays (MedMNIST ``npz``)
  converts channels, then resizes; a task stored as image files (``image_tar``) resizes, then
  converts channels; the optional style-removing steps (crop, intensity normalization) sit
  around the resize (``preprocess``).

``IMAGE_EXTS`` is the one list of image file types, for training trees and for the runtime.

numpy only at import; Pillow is imported when an image is decoded or resized (a board
without Pillow can still classify raw arrays), pydicom only when a DICOM file is decoded.
Ships in the board's deploy package.
"""
from __future__ import annotations

import os

import numpy as np

from .dicom import DICOM_EXTS, DicomError, read as read_dicom

# DICOM in the middle: messages that list the types end with ".tiff" as before
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp") + DICOM_EXTS + (".tif", ".tiff")


class ImageError(ValueError):
    """A malformed input; the message names the input, the problem and the fix."""


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N)HWC -> C=``channels`` (replicate gray, ITU-R 601 luma for RGB -> gray)."""
    c = images.shape[-1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if c == 3 and channels == 1:
        luma = images.astype(np.float32) @ _LUMA
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    raise ImageError(f"cannot convert {c} channels to {channels}")


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 HxWxC or NxHxWxC -> size x size with PIL bicubic (aspect not kept)."""
    if images.shape[-3:-1] == (size, size):
        return images
    if images.ndim == 4:
        out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
        for i, image in enumerate(images):
            out[i] = resize(image, size)
        return out
    from PIL import Image

    gray = images.shape[-1] == 1
    resized = np.asarray(Image.fromarray(images[..., 0] if gray else images).resize(
        (size, size), Image.BICUBIC))
    return resized[..., None] if gray else resized


def convert_image(im, channels: int, name="image"):
    """PIL image -> PIL image in mode "L" (channels=1) or "RGB", 8 bits per sample.

    16-bit and 32-bit integer gray (modes ``I;16*``, ``I``, taken as 0..65535) keep their top
    8 bits, ``v >> 8``: PIL's ``convert`` clips them at 255 instead, which turns a 16-bit X-ray
    white. Float images have no known range and are refused."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.clip(np.asarray(im).astype(np.int64), 0, 65535) >> 8
        im = Image.fromarray(a.astype(np.uint8))  # 2-D uint8 -> mode "L"
    elif im.mode == "F":
        raise ImageError(f"{name}: 32-bit float image (PIL mode F) has no fixed pixel range; "
                         "save it as 8- or 16-bit PNG/TIFF")
    return im.convert("L" if channels == 1 else "RGB")  # full decode: bad data fails here


def is_dicom(file, name=None) -> bool:
    """A DICOM file: its name (``name`` or the path) ends in ``.dcm``/``.dicom``, or its
    bytes have the 'DICM' magic at offset 128 (files named otherwise, e.g. ``IM0001``).
    A file object is read at its position and put back there."""
    path = file if isinstance(file, (str, os.PathLike)) else None
    if any(str(n).lower().endswith(DICOM_EXTS) for n in (name, path) if n is not None):
        return True
    if path is not None:
        with open(path, "rb") as f:
            head = f.read(132)
    else:
        at = file.tell()
        head = file.read(132)
        file.seek(at)
    return head[128:132] == b"DICM"


def decode(file, channels: int, name="image") -> np.ndarray:
    """Image file (path or binary file object) -> uint8 HxWxC at the file's own size.

    Raises ``ImageError`` naming ``name`` for an image without a fixed 8-bit reading and for
    any DICOM file that cannot be read, ``FileNotFoundError``, and PIL's own errors (many
    types) for other data that does not decode: the caller names the file its own way."""
    from PIL import Image

    if is_dicom(file, name):
        try:
            pixels = read_dicom(file)
        except DicomError as e:
            raise ImageError(f"{name}: {e}") from None
        im = convert_image(Image.fromarray(pixels), channels, name)  # as an 8-bit PNG would
    else:
        with Image.open(file) as im:
            im = convert_image(im, channels, name)
    pixels = np.asarray(im, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels
