"""A tiny residual MobileNet-v2-style block in Brevitas for the branch build tests
(``tests/test_residual_build.py``), exported with the project's export
(``brevitas_models.export.export_qonnx_model``) to a QONNX file + ``model.meta.json`` that the
build takes as its ``qonnx`` model source.

  uint8 image -> x/255 -> stem conv 4x4/4 -> BN -> QuantReLU          (28x28 -> 7x7)
    -> fork: [1x1 expand -> BN -> QuantReLU -> 3x3 depthwise (groups=C) -> BN -> QuantReLU
              -> 1x1 project -> BN]  +  skip
    -> add (both inputs through the SAME QuantIdentity instance: one scale, integer add)
    -> QuantReLU -> global average pool -> flatten -> fused multi-task heads

The network is ``brevitas_models.models.MultiTaskNet`` with this block as its backbone, so
the export, its metadata (tasks, output slices, host scale / bias) and the integer output
check (``check_export``) are the project's own. BatchNorm statistics are calibrated on real
training images (as the build's ``untrained`` source does)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

TASKS = ["tiny_pneumoniamnist", "tiny_breastmnist", "tiny_bloodmnist"]
INPUT_SIZE = 28


def residual_net(in_channels=1, width=8, expand=16, w_bits=4, a_bits=4, head_hidden=8,
                 tasks=TASKS, seed=0):
    import brevitas_models  # noqa: F401  (its _compat fix-up must precede Brevitas layers)
    import torch
    import torch.nn as nn
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantReLU

    from brevitas_models.models import (MultiTaskNet, ModelSectionBase, heads_for, tasks_meta,
                                        weight_quant_kwargs)
    from brevitas_models.tasks import get_task

    wq = dict(bias=False, **weight_quant_kwargs(w_bits))

    class ResidualBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = QuantConv2d(in_channels, width, 4, stride=4, **wq)
            self.bn0 = nn.BatchNorm2d(width)
            self.act0 = QuantReLU(bit_width=a_bits)
            self.expand = QuantConv2d(width, expand, 1, **wq)
            self.bn1 = nn.BatchNorm2d(expand)
            self.act1 = QuantReLU(bit_width=a_bits)
            self.dw = QuantConv2d(expand, expand, 3, padding=1, groups=expand, **wq)
            self.bn2 = nn.BatchNorm2d(expand)
            self.act2 = QuantReLU(bit_width=a_bits)
            self.project = QuantConv2d(expand, width, 1, **wq)  # linear bottleneck
            self.bn3 = nn.BatchNorm2d(width)
            # ONE quantizer for both inputs of the add: same scale, so the add is integer
            self.add_q = QuantIdentity(bit_width=a_bits + 2)
            self.act_out = QuantReLU(bit_width=a_bits)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            x = self.act0(self.bn0(self.stem(x)))
            y = self.act1(self.bn1(self.expand(x)))
            y = self.act2(self.bn2(self.dw(y)))
            y = self.bn3(self.project(y))
            z = self.act_out(self.add_q(x) + self.add_q(y))
            return self.pool(z)

    torch.manual_seed(seed)
    cfg = ModelSectionBase(arch="resblock", in_channels=in_channels, w_bits=w_bits,
                           a_bits=a_bits, head_hidden=head_hidden)
    tk = [get_task(t) for t in tasks]
    return MultiTaskNet(ResidualBlock(), width, cfg, heads_for(tk, "multitask"),
                        tasks_meta(tk), INPUT_SIZE), tk


def calibrate(model, tasks, n=48, seed=0, data_root=None):
    """BatchNorm statistics on real training images (cumulative average), a non-zero class
    bias (so the host Add is exercised); eval mode."""
    import torch

    from finn_build.data import load_images

    per = max(1, n // len(tasks))
    c = model.cfg.in_channels
    x = np.concatenate([load_images(t.name, "train", per, INPUT_SIZE, c, data_root,
                                    seed=seed)[0] for t in tasks])
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for chunk in torch.split(x, 64):
            model(chunk)
        g = torch.Generator().manual_seed(seed)
        model.heads.class_bias.copy_(0.1 * torch.randn(model.heads.class_bias.shape,
                                                        generator=g))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()
    return model


def export_residual_model(out_dir, **kw) -> tuple[Path, object]:
    """-> (path of model.onnx next to its model.meta.json, the calibrated Brevitas model)."""
    from brevitas_models.export import export_qonnx_model

    model, tasks = residual_net(**kw)
    calibrate(model, tasks)
    out = Path(out_dir)
    qpath, _ = export_qonnx_model(model, out / "model.onnx",
                                  preprocess={t.name: t.preprocess.to_dict() for t in tasks})
    return Path(qpath), model
