"""The model zoo: multi-task quantized networks with one shared backbone and fused heads.

Every model maps a batch of images (B, C, H, W) holding integer pixel values 0..255 (what
the hardware receives as UINT8) to ONE logits tensor (B, K) holding every task's logits;
`tasks_meta[i]["slice"]` says which columns belong to which task. The fused head is what lets the
whole multi-task network run as a single FINN dataflow stream:

  features f (D) -- shared backbone, quantized
  hidden  = QuantReLU(W1 f + b)        W1: (T*H, D), one H-row block per task
                                       b:  block t = P_t e_t, the task embedding e_t
                                           projected by the head's own P_t (folded to a
                                           constant bias at export, absorbed into FINN
                                           thresholds)
  logits  = W2 hidden * s + c          W2: (K, T*H), block-diagonal: task t's classes
                                           only see task t's hidden block

Because each hidden block feeds only its own task's classes, computing all blocks for every
image is exactly the same as running T separate heads; the hardware does that in one MVAU
per layer and the host picks a slice. The last layer's float scale s and per-class bias c
are the only float ops left; FINN leaves them to the host.

Weights are narrow-range signed integers (INT-b in [-(2^(b-1)-1), 2^(b-1)-1]; 1 bit means
bipolar {-1, +1}), activations unsigned b-bit; `w_bits=None` builds the float baseline with
the same topology.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from brevitas.nn import QuantConv2d, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerChannelFloat, SignedBinaryWeightPerTensorConst

from .config import ModelSection


@dataclass(frozen=True)
class Head:
    name: str
    num_classes: int


def weight_quant_kwargs(w_bits):
    if w_bits is None:
        return {"weight_quant": None}
    if w_bits == 1:
        return {"weight_quant": SignedBinaryWeightPerTensorConst}
    # Int8WeightPerChannelFloat is narrow-range: INT4 weights live in [-7, 7], which FINN's
    # RTL MVU on DSP48E1 needs (it has no room for the asymmetric -8).
    return {"weight_quant": Int8WeightPerChannelFloat, "weight_bit_width": w_bits}


def act(a_bits, return_quant_tensor=False):
    if a_bits is None:
        return nn.ReLU()
    return QuantReLU(bit_width=a_bits, return_quant_tensor=return_quant_tensor)


class FusedHeads(nn.Module):
    """All task heads as two layers: stacked hidden blocks, then a block-diagonal output."""

    def __init__(self, in_features, heads: list[Head], hidden, embed_dim, w_bits, a_bits):
        super().__init__()
        self.heads = list(heads)
        T, H = len(heads), hidden
        K = sum(h.num_classes for h in heads)
        wq = weight_quant_kwargs(w_bits)
        self.hidden = QuantLinear(in_features, T * H, bias=False, **wq)
        self.task_embedding = nn.Parameter(torch.randn(T, embed_dim) * 0.1)
        self.embed_proj = nn.Parameter(torch.randn(T, H, embed_dim) / embed_dim ** 0.5 * 0.1)
        # return_quant_tensor so the output layer knows its integer scale (see int_outputs)
        self.act = act(a_bits, return_quant_tensor=a_bits is not None)
        self.out = QuantLinear(T * H, K, bias=False, return_quant_tensor=a_bits is not None, **wq)
        self.class_bias = nn.Parameter(torch.zeros(K))
        mask = torch.zeros(K, T * H)
        start = 0
        for t, h in enumerate(heads):
            mask[start:start + h.num_classes, t * H:(t + 1) * H] = 1
            start += h.num_classes
        self.register_buffer("block_mask", mask)
        with torch.no_grad():
            self.out.weight.mul_(mask)
        # Off-block weights get zero gradient, so Adam never moves them off zero.
        self.out.weight.register_hook(lambda g: g * self.block_mask)

    def task_bias(self):
        return torch.einsum("the,te->th", self.embed_proj, self.task_embedding).reshape(-1)

    def forward(self, f):
        h = self.act(self.hidden(f) + self.task_bias())
        y = self.out(h)
        if hasattr(y, "scale"):  # QuantTensor: keep the accumulator scale for int_outputs
            self._acc_scale = y.scale
            y = y.value
        return y + self.class_bias


class MultiTaskNet(nn.Module):
    """Input scaling -> backbone -> flatten -> fused heads."""

    def __init__(self, backbone: nn.Sequential, feat_dim, cfg: ModelSection, heads: list[Head],
                 tasks_meta: list[dict], input_size: int):
        super().__init__()
        self.cfg = cfg
        self.tasks_meta = tasks_meta  # name, classes, slice, negative_class per task
        self.input_size = input_size
        self.backbone = backbone
        self.heads = FusedHeads(feat_dim, heads, cfg.head_hidden, cfg.embed_dim,
                                cfg.w_bits, cfg.a_bits)

    @property
    def num_outputs(self):
        return sum(h.num_classes for h in self.heads.heads)

    def forward(self, x):
        # Pixels arrive as 0..255; a scalar Mul that FINN moves past the first MatMul/Conv,
        # leaving an integer UINT8 x INT-weight product in hardware.
        x = x * (1.0 / 255.0)
        x = self.backbone(x)
        return self.heads(torch.flatten(x, 1))

    @torch.no_grad()
    def int_outputs(self, x):
        """Integer accumulator of the last layer (logits before the float scale and bias)."""
        if self.cfg.w_bits is None:
            raise ValueError("a float model has no integer outputs")
        logits = self.forward(x)
        acc = (logits - self.heads.class_bias) / self.heads._acc_scale
        return acc

    def output_scale(self):
        return self.heads._acc_scale

    def apply_head_mask(self):
        with torch.no_grad():
            self.heads.out.weight.mul_(self.heads.block_mask)


def build_mlp(cfg: ModelSection, input_size: int):
    layers, d = [nn.Flatten()], cfg.in_channels * input_size * input_size
    for width in cfg.hidden:
        layers += [QuantLinear(d, width, bias=False, **weight_quant_kwargs(cfg.w_bits)),
                   nn.BatchNorm1d(width), act(cfg.a_bits)]
        d = width
    return nn.Sequential(*layers), d


def build_cnn(cfg: ModelSection, input_size: int):
    # Strided convolutions instead of max-pooling: FINN's pooling layers are HLS-only on
    # Zynq-7000, strided sliding windows have an RTL implementation.
    layers, c_in = [], cfg.in_channels
    for c_out, k, s, p in cfg.convs:
        layers += [QuantConv2d(c_in, c_out, k, stride=s, padding=p, bias=False,
                               **weight_quant_kwargs(cfg.w_bits)),
                   nn.BatchNorm2d(c_out), act(cfg.a_bits)]
        c_in = c_out
    return nn.Sequential(*layers), c_in  # config validation guarantees a 1x1 map


ARCHS = {"mlp": build_mlp, "cnn": build_cnn}


def heads_for(tasks, mode: str) -> list[Head]:
    """Per-task heads, or one head over the union of classes for the multi-class baseline."""
    if mode == "multiclass":
        return [Head("all", sum(len(t.classes) for t in tasks))]
    return [Head(t.name, len(t.classes)) for t in tasks]


def build_model(cfg: ModelSection, tasks, input_size: int = 28) -> MultiTaskNet:
    if isinstance(cfg, dict):
        cfg = ModelSection(**cfg)
    if cfg.arch not in ARCHS:
        raise ValueError(f"model.arch: unknown architecture {cfg.arch!r}; known: {sorted(ARCHS)}")
    backbone, feat = ARCHS[cfg.arch](cfg, input_size)
    return MultiTaskNet(backbone, feat, cfg, heads_for(tasks, cfg.mode), tasks_meta(tasks),
                        input_size)


def tasks_meta(tasks) -> list[dict]:
    """Each task's classes and the output columns holding its logits (the same columns in
    multiclass mode, where one head covers the union of classes in task order)."""
    out, start = [], 0
    for t in tasks:
        out.append({"name": t.name, "classes": list(t.classes),
                    "slice": [start, start + len(t.classes)],
                    "negative_class": getattr(t, "negative_class", None)})
        start += len(t.classes)
    return out
