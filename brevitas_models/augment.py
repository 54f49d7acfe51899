"""Seeded, batch-vectorized image augmentation in pure torch (no torchvision).

Follows the MTL MobileNetV2 recipe: rotation +-20 deg, zoom 0.9-1.1, brightness and contrast
+-20 %, and random erasing ("blank spots"). Input and output are float (B,C,H,W) on the 0..255
scale; the output is rounded and clamped to integers 0..255 because the FPGA only ever sees
uint8 pixels, so training must see them too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ERASE_FILLS = ("zero", "mean", "either")


@dataclass
class AugmentConfig:
    rotation_deg: float = 20.0           # rotation uniform in [-r, r] degrees
    zoom: float = 0.1                    # scale uniform in [1-z, 1+z]
    brightness: float = 0.2              # pixel gain uniform in [1-b, 1+b]
    contrast: float = 0.2                # contrast around the image mean, in [1-c, 1+c]
    erase_prob: float = 0.5              # probability of one blank rectangle per image
    erase_area: tuple[float, float] = (0.02, 0.1)  # rectangle area, fraction of the image
    erase_fill: str = "either"           # "zero", "mean" (image mean) or "either" (50/50)

    def __post_init__(self):
        for name, hi in (("rotation_deg", 180.0), ("zoom", 0.99), ("brightness", 1.0),
                         ("contrast", 1.0), ("erase_prob", 1.0)):
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


def _uniform(n, lo, hi, g):
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """x: float (B,C,H,W) 0..255 -> augmented, rounded, clamped float (B,C,H,W).

    All random numbers come from ``generator`` (on its own device, then moved to x's), always in
    the same order, so one seed gives one result whatever the magnitudes.
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

    x = x.float()
    if cfg.rotation_deg or cfg.zoom:  # skipping keeps the identity exact
        # affine_grid maps output to input coordinates: dividing by `scale` zooms in for s > 1
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1),
                             torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # "border" repeats edge pixels into the corners, like Keras' fill_mode="nearest"
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.brightness or cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast.view(b, 1, 1, 1) + mean
        x = x * gain.view(b, 1, 1, 1)
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
    return x.round().clamp(0, 255)
