"""What the runtime accepts as model input: image files, prepared exactly as training prepared
the task's images (``medimage``), or raw ``.npy`` arrays already at the model input.

An image file is decoded to the task's native channel count and goes through the task's path
(``medimage.to_model_input``) with the preprocessing the model was trained with (the task's
``preprocess`` in the metadata: crop, intensity normalization; none when absent), so a PNG of
a MedMNIST image, or a chest X-ray JPEG, gives the training pixels bit for bit. Errors are ``ImageError`` naming the file, the problem and the fix.
"""
from __future__ import annotations

import numpy as np

import medimage
from medimage import ImageError

RAW_EXTS = (".npy",)


def decode(path, channels: int) -> np.ndarray:
    """Image file -> uint8 HxWxC in the given native channel count."""
    try:
        from PIL import Image  # noqa: F401  (optional on the board: raw .npy inputs need none)
    except ImportError:
        raise ImageError("decoding image files needs Pillow: `pip3 install pillow` (or pass "
                         "raw .npy arrays)") from None
    try:
        return medimage.decode(path, channels, path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except ImageError:
        raise
    except Exception as e:  # PIL raises many types for bad data
        raise ImageError(f"{path}: cannot decode the image ({type(e).__name__}: {e}); pass a "
                         "valid PNG/JPEG/BMP/TIFF file or a .npy uint8 array") from None


def from_file(path, task: dict, size: int, channels: int) -> np.ndarray:
    """An image file of ``task`` (deploy metadata) -> the model's uint8 HxWxC input."""
    native = decode(path, int(task.get("native_channels", channels)))
    try:
        pre = medimage.Preprocess.from_dict(task.get("preprocess"))
    except (ImageError, TypeError) as e:
        raise ImageError(f"task {task.get('name')!r}: its metadata's preprocess "
                         f"{task.get('preprocess')!r} cannot be applied ({e})") from None
    return medimage.to_model_input(native, task.get("source_format"), size, channels, pre,
                                   task.get("native_size"))


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
