"""Preprocessing that removes collection style, and the order of all steps to the model input.

Two data sets we ship differ in *style* between classes (see ``brevitas_models.shortcut_audit``):
in the Nickparvar brain MRI set the ``notumor`` images are tightly cropped with little black
padding while the tumor classes are framed in black; Kermany's test normals are exposed
differently from its train normals. A model can learn that style instead of the finding. Two
optional steps take it away before the model sees an image:

- ``crop``: crop to the bounding box of the body/head. Foreground is every pixel brighter than
  ``crop_threshold`` percent of the image's 99th-percentile level (and above ``MIN_LEVEL``);
  a row or column belongs to the box when at least ``FILL_PERCENT`` percent of it is
  foreground (stray text and JPEG noise do not count); the box grows by ``crop_margin``
  percent of the side and is then resized to the model size (aspect not kept, as everywhere).
  An image whose box is smaller than 1/16 of the frame is left uncropped (no body found).
- ``normalize``: per-image intensity normalization, ``stretch`` (the 1st..99th percentile
  mapped to 0..255, clipped) or ``equalize`` (histogram equalization).

Everything is integer arithmetic on uint8 (histograms, cumulative counts, integer division),
so training (``brevitas_models.data``) and the board runtime (``deploy.pynq.inputs``), which
both call ``to_model_input``, give the same bytes on any machine with the same Pillow (whose
bicubic resize sits between the two steps). The run records the spec (``Preprocess.to_dict``)
in its metadata, and the board applies what the metadata says.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .images import ImageError, resize, to_channels

NORMALIZE = ("none", "stretch", "equalize")
MIN_LEVEL = 8          # a foreground pixel is brighter than this whatever the image (JPEG noise)
FILL_PERCENT = 5       # share of a row/column that must be foreground for the box
STRETCH_PERCENTILES = (1, 99)


@dataclass(frozen=True)
class Preprocess:
    crop: bool = False
    crop_threshold: int = 10   # percent of the image's 99th-percentile level
    crop_margin: int = 2       # percent of the side added around the box
    normalize: str = "none"    # one of NORMALIZE

    def __post_init__(self):
        if self.normalize not in NORMALIZE:
            raise ImageError(f"preprocess.normalize must be one of {NORMALIZE}, got "
                             f"{self.normalize!r}")
        for name, lo, hi in (("crop_threshold", 0, 100), ("crop_margin", 0, 50)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ImageError(f"preprocess.{name} must be an integer in [{lo}, {hi}], "
                                 f"got {v!r}")

    @property
    def active(self) -> bool:
        return self.crop or self.normalize != "none"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Preprocess":
        """A metadata/config dict (None or {} = nothing) -> Preprocess; unknown keys are an
        error (a newer run's metadata on an older runtime must not be half applied)."""
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ImageError(f"unknown preprocess fields {unknown}; this version knows "
                             f"{sorted(cls.__dataclass_fields__)}: update the runtime")
        return cls(**d)


NONE = Preprocess()


def _level(gray: np.ndarray) -> np.ndarray:
    """uint8 HxWxC -> HxW level used for the crop mask: the brightest channel."""
    return gray[..., 0] if gray.shape[-1] == 1 else gray.max(axis=-1)


def _percentile(cdf: np.ndarray, n: int, percent: int) -> int:
    """Smallest level whose cumulative count reaches ``percent`` % of ``n`` (integers only)."""
    return int(np.searchsorted(cdf * 100, n * percent, side="left"))


def _cdf(image: np.ndarray) -> np.ndarray:
    return np.cumsum(np.bincount(image.reshape(-1), minlength=256).astype(np.int64))


def crop_box(image: np.ndarray, threshold: int = 10, margin: int = 2
             ) -> tuple[int, int, int, int] | None:
    """uint8 HxWxC -> (y0, y1, x0, x1) of the body/head box (end exclusive), or None."""
    level = _level(image)
    h, w = level.shape
    p99 = _percentile(_cdf(level), level.size, 99)
    fg = level > max(MIN_LEVEL, p99 * threshold // 100)
    rows = np.flatnonzero(fg.sum(axis=1) * 100 >= w * FILL_PERCENT)
    cols = np.flatnonzero(fg.sum(axis=0) * 100 >= h * FILL_PERCENT)
    if not len(rows) or not len(cols):
        return None
    my, mx = h * margin // 100, w * margin // 100
    y0, y1 = max(0, rows[0] - my), min(h, rows[-1] + 1 + my)
    x0, x1 = max(0, cols[0] - mx), min(w, cols[-1] + 1 + mx)
    if (y1 - y0) * (x1 - x0) * 16 < h * w:
        return None
    return int(y0), int(y1), int(x0), int(x1)


def crop(image: np.ndarray, threshold: int = 10, margin: int = 2) -> np.ndarray:
    box = crop_box(image, threshold, margin)
    if box is None:
        return image
    y0, y1, x0, x1 = box
    return image[y0:y1, x0:x1]


def normalize(image: np.ndarray, how: str) -> np.ndarray:
    """uint8 (..., H, W, C) one image -> intensity-normalized uint8 (one table for all
    channels, so colours keep their relations)."""
    if how == "none":
        return image
    cdf = _cdf(image)
    n = int(cdf[-1])
    if how == "stretch":
        lo = _percentile(cdf, n, STRETCH_PERCENTILES[0])
        hi = _percentile(cdf, n, STRETCH_PERCENTILES[1])
        if hi <= lo:
            return image
        v = np.arange(256, dtype=np.int64)
        lut = np.clip(((v - lo) * 255 + (hi - lo) // 2) // (hi - lo), 0, 255)
    elif how == "equalize":
        cdf_min = int(cdf[np.flatnonzero(cdf)[0]])  # count of the darkest level present
        if n == cdf_min:
            return image  # one level only
        lut = np.clip(((cdf - cdf_min) * 255 + (n - cdf_min) // 2) // (n - cdf_min), 0, 255)
    else:
        raise ImageError(f"unknown normalization {how!r}; one of {NORMALIZE}")
    return lut.astype(np.uint8)[image]


def standardize(native: np.ndarray, size: int, pre: Preprocess = NONE,
                grid: int | None = None) -> np.ndarray:
    """One image's pixels at its own channels: crop -> resize -> normalize.

    The crop box is found on the image brought to ``grid`` x ``grid`` first (the task's native
    size, e.g. 224): a file of any size, and a ``grid``-sized copy of it (the deploy package's
    samples), give the same box and so the same bytes."""
    if pre.crop:
        native = crop(resize(native, grid) if grid else native, pre.crop_threshold,
                      pre.crop_margin)
    return normalize(resize(native, size), pre.normalize)


def to_model_input(native: np.ndarray, source_format: str, size: int, channels: int,
                   pre: Preprocess | dict | None = None, grid: int | None = None
                   ) -> np.ndarray:
    """A task's native uint8 (N)HWC pixels -> the model input, in training's order.

    Arrays (MedMNIST ``npz``): channels, then crop/resize/normalize. Image files: crop,
    resize, normalize at the file's channels, then channels. ``grid``: see ``standardize``."""
    pre = pre if isinstance(pre, Preprocess) else Preprocess.from_dict(pre)
    if native.ndim == 4 and pre.active:  # per image: every image has its own box and levels
        out = np.empty((len(native), size, size, channels), np.uint8)
        for i, image in enumerate(native):
            out[i] = to_model_input(image, source_format, size, channels, pre, grid)
        return out
    if source_format == "npz":
        return standardize(to_channels(native, channels), size, pre, grid)
    return to_channels(standardize(native, size, pre, grid), channels)
