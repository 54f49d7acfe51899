"""Seeded, batch-vectorized image augmentation in pure torch (no torchvision).

Follows the MTL MobileNetV2 recipe: rotation +-20 deg, zoom 0.9-1.1, brightness and contrast
+-20 %, and random erasing ("blank spots"). Input and output are float (B,C,H,W) on the 0..255
scale; the output is rounded and clamped to integers 0..255 because the FPGA only ever sees
uint8 pixels, so training must see them too.

"Augmentation against style", off by default: a random resized crop, a black padding frame,
gamma, blur/sharpen, gaussian noise and JPEG re-compression vary the framing and the look of
each image source, so that a model cannot tell the classes apart by those alone
(docs/configs.md, "Augmentation against style").
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ERASE_FILLS = ("zero", "mean", "either")
BINOMIAL5 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)  # blur taps of `sharpen`
# (lo, hi) fields -> the interval both ends must lie in; crop_area's lo must also be > 0
RANGES = {"crop_area": (0.0, 1.0), "crop_ratio": (0.1, 10.0), "pad_fraction": (0.0, 0.9),
          "gamma": (0.1, 10.0), "sharpen": (-1.0, 4.0), "noise_std": (0.0, 100.0),
          "jpeg_quality": (1, 100)}


@dataclass
class AugmentConfig:
    rotation_deg: float = 20.0           # rotation uniform in [-r, r] degrees
    zoom: float = 0.1                    # scale uniform in [1-z, 1+z]
    brightness: float = 0.2              # pixel gain uniform in [1-b, 1+b]
    contrast: float = 0.2                # contrast around the image mean, in [1-c, 1+c]
    erase_prob: float = 0.5              # probability of one blank rectangle per image
    erase_area: tuple[float, float] = (0.02, 0.1)  # rectangle area, fraction of the image
    erase_fill: str = "either"           # "zero", "mean" (image mean) or "either" (50/50)
    # Against style. The defaults are off and draw nothing from the generator, so a config
    # without these fields reproduces the runs made before they existed.
    crop_area: tuple[float, float] = (1.0, 1.0)     # crop window area, fraction of the image
    crop_ratio: tuple[float, float] = (1.0, 1.0)    # window width/height, log-uniform
    pad_prob: float = 0.0                # probability of shrinking the image into a black frame
    pad_fraction: tuple[float, float] = (0.05, 0.15)  # frame share of each side (both edges)
    gamma: tuple[float, float] = (1.0, 1.0)         # 255*(x/255)**gamma, log-uniform
    sharpen: tuple[float, float] = (0.0, 0.0)       # x + a*(x - blur(x)): a=-1 blurs fully
    noise_std: tuple[float, float] = (0.0, 0.0)     # gaussian noise std on the 0..255 scale
    jpeg_prob: float = 0.0               # probability of a JPEG re-compression per image
    jpeg_quality: tuple[int, int] = (30, 90)        # JPEG quality, uniform integer

    def __post_init__(self):
        for name, hi in (("rotation_deg", 180.0), ("zoom", 0.99), ("brightness", 1.0),
                         ("contrast", 1.0), ("erase_prob", 1.0), ("pad_prob", 1.0),
                         ("jpeg_prob", 1.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v <= hi:
                raise ValueError(f"AugmentConfig.{name} must be a number in [0, {hi}], got {v!r}")
        a = tuple(self.erase_area)
        if len(a) != 2 or not 0 < a[0] <= a[1] <= 1:
            raise ValueError(f"AugmentConfig.erase_area must be (lo, hi) with 0 < lo <= hi <= 1, "
                             f"got {self.erase_area!r}")
        self.erase_area = a
        if self.erase_fill not in ERASE_FILLS:
            raise ValueError(f"AugmentConfig.erase_fill must be one of {ERASE_FILLS}, "
                             f"got {self.erase_fill!r}")
        for name, (lo, hi) in RANGES.items():
            v = getattr(self, name)
            v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
            kind = int if name == "jpeg_quality" else (int, float)
            if (len(v) != 2 or not all(isinstance(e, kind) for e in v)
                    or not lo <= v[0] <= v[1] <= hi or (name == "crop_area" and v[0] <= 0)):
                raise ValueError(f"AugmentConfig.{name} must be (lo, hi) with "
                                 f"{lo} {'<' if name == 'crop_area' else '<='} lo <= hi <= {hi}, "
                                 f"got {getattr(self, name)!r}")
            setattr(self, name, v)


def _uniform(n, lo, hi, g):
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """x: float (B,C,H,W) 0..255 -> augmented, rounded, clamped float (B,C,H,W).

    All random numbers come from ``generator`` (on its own device, then moved to x's) in a fixed
    order: first those of the recipe above, always, whatever the magnitudes; then those of each
    enabled group against style, in the order below. One seed and one set of enabled groups
    give one result; a group that is off draws nothing (old configs reproduce old runs).
    """
    if x.ndim != 4:
        raise ValueError(f"augment expects (B,C,H,W), got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    g = generator
    angle = _uniform(b, -1, 1, g).to(x.device) * math.radians(cfg.rotation_deg)
    scale = 1 + _uniform(b, -1, 1, g).to(x.device) * cfg.zoom
    gain = 1 + _uniform(b, -1, 1, g).to(x.device) * cfg.brightness
    contrast = 1 + _uniform(b, -1, 1, g).to(x.device) * cfg.contrast
    erase = (torch.rand(b, generator=g, device=g.device) < cfg.erase_prob).to(x.device)
    area = _uniform(b, *cfg.erase_area, g).to(x.device) * h * w
    log_ratio = _uniform(b, math.log(0.3), math.log(1 / 0.3), g).to(x.device)
    pos = torch.rand(b, 2, generator=g, device=g.device).to(x.device)
    use_mean = (torch.rand(b, generator=g, device=g.device) < 0.5).to(x.device)

    crop = cfg.crop_area != (1, 1) or cfg.crop_ratio != (1, 1)
    if crop:
        crop_area = _uniform(b, *cfg.crop_area, g).to(x.device)
        crop_ratio = torch.exp(_uniform(b, *map(math.log, cfg.crop_ratio), g)).to(x.device)
        crop_pos = _uniform((b, 2), -1, 1, g).to(x.device)
    if cfg.pad_prob:
        padded = torch.rand(b, generator=g, device=g.device) < cfg.pad_prob
        pad = (_uniform(b, *cfg.pad_fraction, g) * padded).to(x.device)
        pad_pos = _uniform((b, 2), -1, 1, g).to(x.device)
    if cfg.gamma != (1, 1):
        gamma = torch.exp(_uniform(b, *map(math.log, cfg.gamma), g)).to(x.device)
    if cfg.sharpen != (0, 0):
        sharpen = _uniform(b, *cfg.sharpen, g).to(x.device)
    if cfg.noise_std != (0, 0):
        std = _uniform((b, 1, 1, 1), *cfg.noise_std, g)
        noise = (std * torch.randn(x.shape, generator=g, device=g.device)).to(x.device)
    if cfg.jpeg_prob:  # stays on the CPU, where Pillow runs
        jpeg = (torch.rand(b, generator=g, device=g.device) < cfg.jpeg_prob).cpu()
        quality = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (b,),
                                generator=g, device=g.device).cpu()

    x = x.float()
    if cfg.rotation_deg or cfg.zoom or crop or cfg.pad_prob:  # skipping keeps the identity exact
        # affine_grid maps output to input coordinates: dividing by `scale` zooms in for s > 1
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1),
                             torch.stack([sin, cos, zero], 1)], 1)
        if crop or cfg.pad_prob:
            # Output -> crop window, in the frame of the rotated image; composed with the
            # rotation, so that the image is resampled once (less blur than two passes).
            half = torch.ones(b, 2, device=x.device)  # window half-sizes (x, y); 1 = whole side
            center = torch.zeros(b, 2, device=x.device)
            if crop:
                half = torch.stack([torch.sqrt(crop_area * crop_ratio),
                                    torch.sqrt(crop_area / crop_ratio)], 1).clamp(max=1)
                center = crop_pos * (1 - half)  # the window stays inside the image
            inner, offset = torch.ones(b, 1, device=x.device), torch.zeros(b, 2, device=x.device)
            if cfg.pad_prob:  # the image fills a box of half-size 1-pad at a random place
                inner = 1 - pad.view(b, 1)
                offset = pad_pos * pad.view(b, 1)
            s = half / inner
            frame = torch.zeros(b, 2, 3, device=x.device)
            frame[:, 0, 0], frame[:, 1, 1] = s[:, 0], s[:, 1]
            frame[:, :, 2] = center - s * offset
            theta = theta[:, :, :2] @ frame
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # "border" repeats edge pixels into the corners, like Keras' fill_mode="nearest"
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if cfg.pad_prob:
            # The frame is set to 0 by a mask, not by zeros padding: a crop window inside the
            # image would otherwise fill the frame with image content.
            ys = (torch.arange(h, device=x.device) * 2 + 1) / h - 1  # pixel centres, -1..1
            xs = (torch.arange(w, device=x.device) * 2 + 1) / w - 1
            keep = (((ys.view(1, h, 1) - offset[:, 1].view(b, 1, 1)).abs() < inner.view(b, 1, 1))
                    & ((xs.view(1, 1, w) - offset[:, 0].view(b, 1, 1)).abs()
                       < inner.view(b, 1, 1)))
            x = x * keep.unsqueeze(1)
    if cfg.gamma != (1, 1):  # before contrast/brightness, while x is still within 0..255
        x = 255 * (x.clamp(min=0) / 255) ** gamma.view(b, 1, 1, 1)
    if cfg.brightness or cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast.view(b, 1, 1, 1) + mean
        x = x * gain.view(b, 1, 1, 1)
    if cfg.sharpen != (0, 0):  # unsharp masking around a 5x5 binomial (~gaussian sigma 1) blur
        # separable, as shifted sums: about twice as fast on the CPU as a depthwise conv2d
        p = F.pad(x, (2, 2, 2, 2), mode="replicate")
        p = sum(k * p[:, :, i:i + h] for i, k in enumerate(BINOMIAL5))
        blur = sum(k * p[:, :, :, i:i + w] for i, k in enumerate(BINOMIAL5))
        x = x + sharpen.view(b, 1, 1, 1) * (x - blur)
    if cfg.noise_std != (0, 0):
        x = x + noise
    if cfg.erase_prob:
        rh = torch.sqrt(area * torch.exp(log_ratio)).round().clamp(1, h)
        rw = torch.sqrt(area / torch.exp(log_ratio)).round().clamp(1, w)
        y0 = (pos[:, 0] * (h - rh + 1)).floor()
        x0 = (pos[:, 1] * (w - rw + 1)).floor()
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        box = ((ys >= y0.view(b, 1, 1)) & (ys < (y0 + rh).view(b, 1, 1))
               & (xs >= x0.view(b, 1, 1)) & (xs < (x0 + rw).view(b, 1, 1)) & erase.view(b, 1, 1))
        if cfg.erase_fill == "zero":
            use_mean = torch.zeros_like(use_mean)
        elif cfg.erase_fill == "mean":
            use_mean = torch.ones_like(use_mean)
        fill = x.mean(dim=(1, 2, 3)) * use_mean
        x = torch.where(box.unsqueeze(1), fill.view(b, 1, 1, 1), x)
    x = x.round().clamp(0, 255)
    if cfg.jpeg_prob:
        for i in jpeg.nonzero().flatten().tolist():
            x[i] = _jpeg(x[i], int(quality[i]))
    return x


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """One (C,H,W) 0..255 image through a JPEG encode/decode at `quality`.

    torch has no JPEG codec, so this is the one step that is not batch-vectorized: Pillow on
    uint8 arrays on the CPU, image by image, only for the images drawn for it. Three channels
    are coded as one RGB image (Pillow's default chroma subsampling), else each channel as a
    gray image.
    """
    a = img.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    planes = [a] if a.shape[2] == 3 else [a[:, :, j] for j in range(a.shape[2])]
    out = []
    for p in planes:
        buf = io.BytesIO()
        Image.fromarray(p).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    a = out[0] if a.shape[2] == 3 else np.stack(out, 2)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).to(img)
