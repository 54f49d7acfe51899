"""Image preprocessing exactly as training saw it (numpy + PIL; runs on the board).

Training (``brevitas_models.data``) hands the model uint8 pixels, 0..255, at the model's
input size and channel count:

- a task stored as arrays (MedMNIST ``npz``): native pixels -> channel conversion -> resize;
- a task stored as image files (``image_tar``): decode with PIL, ``convert`` to the task's
  native mode ("L" or "RGB"), resize (PIL bicubic) -> channel conversion;
- channel conversion: gray -> RGB replicates; RGB -> gray is ITU-R 601 luma computed in
  float32 and rounded (the same expression as training, not PIL's integer ``convert("L")``).

An image file given to the runtime is decoded to the task's native mode and goes through the
task's path above, so a PNG of a MedMNIST image gives the training pixels bit for bit.

Decoding to 8 bit is ``convert_image``, shared with training: images with more than 8 bits per
sample (16-bit PNG/TIFF, PIL modes ``I;16*`` and ``I``) keep their top 8 bits (``v >> 8``, the
rule PIL itself applies to 16-bit RGB PNGs); PIL's own ``convert`` would saturate them to 255.
``IMAGE_EXTS`` is the one list of image file types, for training trees and for the runtime.
"""
from __future__ import annotations

import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # training trees read the same
RAW_EXTS = (".npy",)


class ImageError(ValueError):
    """A malformed input; the message names the input, the problem and the fix."""


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8 HxWxC -> C=``channels`` (replicate gray, ITU-R 601 luma for RGB -> gray)."""
    c = img.shape[-1]
    if c == channels:
        return img
    if c == 1 and channels == 3:
        return np.repeat(img, 3, axis=-1)
    if c == 3 and channels == 1:
        luma = img.astype(np.float32) @ _LUMA
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    raise ImageError(f"cannot convert {c} channels to {channels}")


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 HxWxC -> size x size x C with PIL bicubic (aspect not kept, as in training)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    from PIL import Image

    c = img.shape[-1]
    r = np.asarray(Image.fromarray(img[..., 0] if c == 1 else img).resize(
        (size, size), Image.BICUBIC))
    return r[..., None] if c == 1 else r


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


def decode(path, channels: int) -> np.ndarray:
    """Image file -> uint8 HxWxC in the given native channel count (PIL ``convert``)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImageError("decoding image files needs Pillow: `pip3 install pillow` (or pass "
                         "raw .npy arrays)") from None
    try:
        with Image.open(path) as im:
            im = convert_image(im, channels, path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except ImageError:
        raise
    except Exception as e:  # PIL raises many types for bad data
        raise ImageError(f"{path}: cannot decode the image ({type(e).__name__}: {e}); pass a "
                         "valid PNG/JPEG/BMP/TIFF file or a .npy uint8 array") from None
    a = np.asarray(im, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def from_file(path, task: dict, size: int, channels: int) -> np.ndarray:
    """An image file of ``task`` -> the model's uint8 HxWxC input, as in training."""
    native = int(task.get("native_channels", channels))
    img = decode(path, native)
    if task.get("source_format") == "npz":  # arrays: channels first, then resize
        return resize(to_channels(img, channels), size)
    return to_channels(resize(img, size), channels)


def check_raw(a, name: str, size: int, channels: int) -> np.ndarray:
    """A raw pixel array must already be the model input: HxW (gray) or HxWxC uint8."""
    a = np.asarray(a)
    want = (size, size, channels)
    shape = a.shape
    if a.ndim == 2 and channels == 1:
        a = a[..., None]
    kind = "gray" if channels == 1 else "RGB"
    if a.shape != want:
        raise ImageError(
            f"{name}: raw array has shape {tuple(shape)}, expected {want} "
            f"({size}x{size} {kind}, uint8){' or ' + str(want[:2]) if channels == 1 else ''}; "
            "resize it to the model input or pass an image file (PNG/JPEG), which the runtime "
            "decodes and resizes as in training")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.integer) or a.size and (a.min() < 0 or a.max() > 255):
            raise ImageError(f"{name}: raw array has dtype {a.dtype}; expected uint8 pixels "
                             "0..255 (convert with .astype(np.uint8) after scaling to 0..255)")
        a = a.astype(np.uint8)
    return a


def load_input(item, task: dict, size: int, channels: int, name=None) -> np.ndarray:
    """A path (image file or .npy) or an array -> model input uint8 HxWxC."""
    if isinstance(item, np.ndarray):
        return check_raw(item, name or "array", size, channels)
    path = str(item)
    if path.lower().endswith(RAW_EXTS):
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except Exception as e:
            raise ImageError(f"{path}: cannot read the .npy array ({type(e).__name__}: {e}); "
                             "save it with numpy.save") from None
        return check_raw(arr, path, size, channels)
    return from_file(path, task, size, channels)
