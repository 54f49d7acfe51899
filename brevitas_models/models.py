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
from typing import Annotated, Literal, Optional, Union

import torch
import torch.nn as nn
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerChannelFloat, SignedBinaryWeightPerTensorConst
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag,
                      TypeAdapter, field_validator, model_validator)


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

    def __init__(self, backbone: nn.Sequential, feat_dim, cfg: ModelSectionBase,
                 heads: list[Head], tasks_meta: list[dict], input_size: int):
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


# ---- config sections: the `model:` section of a run config, one class per architecture ------
# brevitas_models.config validates run configs (and finn_build a build's untrained model) with
# these and turns pydantic's errors into one-line messages. A new architecture is its section
# class here (its fields and checks), its backbone builder below, and one line in ARCHS.

class ModelSectionBase(BaseModel):
    """The fields every architecture has."""
    # the rules of brevitas_models.config.Section (that module imports this one)
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    arch: str
    mode: Literal["multitask", "multiclass"] = Field(
        "multitask", description="multitask: one head per task; multiclass: one head over the "
        "union of classes (baseline)")
    in_channels: int = Field(1, json_schema_extra={"enum": [1, 3]},
                             description="1: gray, 3: RGB (gray tasks replicated)")
    w_bits: Optional[int] = Field(4, json_schema_extra={"minimum": 1, "maximum": 8},
                                  description="weight bits; null (with a_bits null) = float")
    a_bits: Optional[int] = Field(4, json_schema_extra={"minimum": 1, "maximum": 8},
                                  description="activation bits; null = float")
    head_hidden: int = Field(16, gt=0, description="hidden units per task head")
    embed_dim: int = Field(8, gt=0, description="task embedding size")

    @field_validator("in_channels")
    @classmethod
    def _gray_or_rgb(cls, channels):
        if channels not in (1, 3):
            raise ValueError(f"{channels!r} is not one of [1, 3]")
        return channels

    @field_validator("w_bits", "a_bits")
    @classmethod
    def _bits_in_range(cls, bits):
        if bits is not None and not 1 <= bits <= 8:
            raise ValueError(f"{bits} is outside 1..8 (null = float)")
        return bits

    @model_validator(mode="after")
    def _both_bits_or_float(self):
        if (self.w_bits is None) != (self.a_bits is None):
            raise ValueError("w_bits and a_bits must both be set or both be null (float)")
        return self

    def input_size_problem(self, size: int) -> Optional[tuple[str, str]]:
        """(field, message) when this model cannot take `size` x `size` images, else None."""
        return None


class MLPSection(ModelSectionBase):
    """A multilayer perceptron backbone (TFC-like) on the flattened image."""
    arch: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64, 64], description="hidden layer widths")


def _conv_layer(layer):
    # one message for every malformed layer, as the config documents it
    if not (isinstance(layer, list) and len(layer) == 4
            and all(type(v) is int for v in layer)):
        raise ValueError(f"expected [out_channels, kernel, stride, padding], got {layer!r}")
    channels, kernel, stride, padding = layer
    if not (channels > 0 and kernel > 0 and stride > 0 and padding >= 0):
        raise ValueError("channels/kernel/stride must be positive and padding >= 0, "
                         f"got {layer!r}")
    return layer


ConvLayer = Annotated[list[int], Field(min_length=4, max_length=4), BeforeValidator(_conv_layer)]


class CNNSection(ModelSectionBase):
    """Strided 3x3-style convolutions down to a 1x1 feature map (CNV-like, no pooling)."""
    arch: Literal["cnn"]  # required: a section without `arch` is an MLP
    convs: list[ConvLayer] = Field(
        default_factory=lambda: [[16, 3, 1, 1], [32, 3, 2, 1], [32, 3, 2, 1], [64, 3, 1, 0],
                                 [64, 3, 1, 0], [128, 3, 1, 0]],
        description="[out_channels, kernel, stride, padding] per layer; must end at a 1x1 "
        "feature map")

    def input_size_problem(self, size):
        side = size
        for _, kernel, stride, padding in self.convs:
            side = (side + 2 * padding - kernel) // stride + 1
            if side < 1:
                return "convs", f"feature map vanishes for input size {size}"
        if side != 1:
            return "convs", (f"the last conv must leave a 1x1 feature map (got {side}x{side} "
                             f"for input {size}x{size}); adjust kernels/strides so the flatten "
                             "before the heads is trivial for FINN")
        return None


def _mnv2_block(block):
    # one message for every malformed entry, as the config documents it
    if not (isinstance(block, list) and len(block) == 4
            and all(type(v) is int for v in block)):
        raise ValueError("expected [t, c, n, s] (expansion, out_channels, repeats, stride), "
                         f"got {block!r}")
    t, c, n, s = block
    if not (t > 0 and c > 0 and n > 0):
        raise ValueError(f"t (expansion), c (channels) and n (repeats) must be positive, "
                         f"got {block!r}")
    if s not in (1, 2):
        raise ValueError(f"stride s must be 1 or 2, got {s} in {block!r}")
    return block


MNV2Block = Annotated[list[int], Field(min_length=4, max_length=4), BeforeValidator(_mnv2_block)]


class MobileNetV2LiteSection(ModelSectionBase):
    """A scaled-down MobileNetV2 (inverted residuals, linear bottlenecks, depthwise 3x3 convs)
    written the way our FINN build streamlines to RTL (tests/residual_helpers.py). No
    pretrained weights are reachable: it trains from scratch. See build_mobilenetv2_lite."""
    arch: Literal["mobilenetv2_lite"]
    stem_channels: int = Field(16, gt=0, description="channels of the stem 3x3 conv (times "
                               "width_mult)")
    stem_stride: int = Field(2, description="stride of the stem conv: 1 or 2")
    blocks: list[MNV2Block] = Field(
        default_factory=lambda: [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 2, 2], [4, 32, 2, 2]],
        description="[t, c, n, s] per stage: expansion factor t (1: no 1x1 expansion), "
        "out_channels c (times width_mult), n blocks, stride s (1 or 2) of the first block")
    last_channels: int = Field(128, gt=0, description="channels of the final 1x1 conv before "
                               "the global average pool (times width_mult)")
    width_mult: float = Field(1.0, gt=0, le=4, description="scales every channel count, "
                              "rounded to the nearest multiple of channel_divisor")
    channel_divisor: int = Field(8, gt=0, description="channel counts are multiples of this "
                                 "(FINN folds PE/SIMD by divisors of the channels)")
    first_w_bits: Optional[int] = Field(None, description="weight bits of the stem conv; "
                                        "null = w_bits")
    last_w_bits: Optional[int] = Field(None, description="weight bits of the final 1x1 conv; "
                                       "null = w_bits")
    add_bits: Optional[int] = Field(None, description="bits of the signed quantizer shared by "
                                    "both inputs of a residual add; null = a_bits + 2")
    block_out: Literal["relu", "linear"] = Field(
        "relu", description="requantizer of each block's output (after the add): relu = "
        "QuantReLU, the form tests/residual_helpers.py compiles to all-RTL; linear = signed "
        "QuantIdentity, MobileNetV2's linear bottleneck")

    @field_validator("blocks")
    @classmethod
    def _some_blocks(cls, blocks):
        if not blocks:
            raise ValueError("needs at least one [t, c, n, s] entry")
        return blocks

    @field_validator("stem_stride")
    @classmethod
    def _stride_1_or_2(cls, s):
        if s not in (1, 2):
            raise ValueError(f"{s} is not one of [1, 2]")
        return s

    @field_validator("first_w_bits", "last_w_bits")
    @classmethod
    def _layer_bits_in_range(cls, bits):
        if bits is not None and not 1 <= bits <= 8:
            raise ValueError(f"{bits} is outside 1..8 (null = w_bits)")
        return bits

    @field_validator("add_bits")
    @classmethod
    def _add_bits_in_range(cls, bits):
        if bits is not None and not 2 <= bits <= 16:
            raise ValueError(f"{bits} is outside 2..16 (null = a_bits + 2)")
        return bits

    @model_validator(mode="after")
    def _no_bits_on_a_float_model(self):
        for name in ("first_w_bits", "last_w_bits", "add_bits"):
            if self.w_bits is None and getattr(self, name) is not None:
                raise ValueError(f"{name}: a float model (w_bits null) takes no {name}; "
                                 "remove it or set w_bits and a_bits")
        return self

    def total_stride(self) -> int:
        s = self.stem_stride
        for _, _, _, stride in self.blocks:
            s *= stride
        return s

    def input_size_problem(self, size):
        # a stride-2 3x3 conv with padding 1 maps side -> ceil(side / 2): the map never
        # vanishes, but below the total stride the last maps are computed from padding
        total = self.total_stride()
        if size < total:
            return "blocks", (f"input size {size} is smaller than the total stride {total} "
                              "(stem_stride times the block strides); use fewer stride-2 "
                              "blocks or a larger input size (data.size)")
        return None

    def channels(self, c: int) -> int:
        """`c` times width_mult, rounded to the nearest multiple of channel_divisor (at least
        one divisor)."""
        d = self.channel_divisor
        return max(d, int(c * self.width_mult / d + 0.5) * d)


def build_mlp(cfg: MLPSection, input_size: int):
    layers, d = [nn.Flatten()], cfg.in_channels * input_size * input_size
    for width in cfg.hidden:
        layers += [QuantLinear(d, width, bias=False, **weight_quant_kwargs(cfg.w_bits)),
                   nn.BatchNorm1d(width), act(cfg.a_bits)]
        d = width
    return nn.Sequential(*layers), d


def build_cnn(cfg: CNNSection, input_size: int):
    # Strided convolutions instead of max-pooling: FINN's pooling layers are HLS-only on
    # Zynq-7000, strided sliding windows have an RTL implementation.
    layers, c_in = [], cfg.in_channels
    for c_out, k, s, p in cfg.convs:
        layers += [QuantConv2d(c_in, c_out, k, stride=s, padding=p, bias=False,
                               **weight_quant_kwargs(cfg.w_bits)),
                   nn.BatchNorm2d(c_out), act(cfg.a_bits)]
        c_in = c_out
    return nn.Sequential(*layers), c_in  # config validation guarantees a 1x1 map


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand -> BN -> act] -> 3x3 depthwise -> BN -> act -> 1x1
    project -> BN (linear bottleneck), then the add with the input when stride 1 and the
    channels match, then the output requantizer."""

    def __init__(self, c_in, c_out, t, stride, cfg: MobileNetV2LiteSection):
        super().__init__()
        wq = dict(bias=False, **weight_quant_kwargs(cfg.w_bits))
        hidden = c_in * t
        self.expand = None
        if t != 1:  # as in MobileNetV2: t == 1 has no expansion conv
            self.expand = nn.Sequential(QuantConv2d(c_in, hidden, 1, **wq),
                                        nn.BatchNorm2d(hidden), act(cfg.a_bits))
        self.dw = nn.Sequential(QuantConv2d(hidden, hidden, 3, stride=stride, padding=1,
                                            groups=hidden, **wq),
                                nn.BatchNorm2d(hidden), act(cfg.a_bits))
        self.project = nn.Sequential(QuantConv2d(hidden, c_out, 1, **wq), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out
        self.add_q = None
        if self.residual and cfg.a_bits is not None:
            # ONE quantizer for both inputs: same scale, so the add is an integer add
            self.add_q = QuantIdentity(bit_width=cfg.add_bits or cfg.a_bits + 2)
        if cfg.a_bits is None:
            self.out_q = nn.ReLU() if cfg.block_out == "relu" else nn.Identity()
        elif cfg.block_out == "relu":
            self.out_q = QuantReLU(bit_width=cfg.a_bits)
        else:
            self.out_q = QuantIdentity(bit_width=cfg.a_bits)  # signed: linear bottleneck

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.dw(y))
        if self.residual:
            y = self.add_q(x) + self.add_q(y) if self.add_q is not None else x + y
        return self.out_q(y)


def build_mobilenetv2_lite(cfg: MobileNetV2LiteSection, input_size: int):
    """A scaled-down MobileNetV2 backbone, trained from scratch (no pretrained weights are
    reachable here), in the form our FINN build streamlines (tests/residual_helpers.py):

      stem 3x3 conv (stride stem_stride, first_w_bits) -> BN -> QuantReLU
      -> InvertedResidual blocks from `blocks` ([t, c, n, s]: n blocks, the first with stride s)
      -> 1x1 conv (last_channels, last_w_bits) -> BN -> QuantReLU -> global average pool

    Every conv is bias-free with a BatchNorm after it (folded into FINN thresholds). The
    activations are QuantReLU: ReLU6's fixed ceiling becomes the quantizer's clip value,
    initialized from activation statistics and then learned. A residual add takes both inputs
    through one shared signed QuantIdentity (add_bits), so the add is integer; its output is
    requantized by `block_out` (default QuantReLU, the requantizer residual_helpers compiles
    to all-RTL; MobileNetV2 has no activation there: `linear`). A block without a residual add
    gets the same requantizer after its projection, so every block hands the next one a
    quantized stream."""
    wq = weight_quant_kwargs
    c0 = cfg.channels(cfg.stem_channels)
    layers = [QuantConv2d(cfg.in_channels, c0, 3, stride=cfg.stem_stride, padding=1,
                          bias=False, **wq(cfg.first_w_bits or cfg.w_bits)),
              nn.BatchNorm2d(c0), act(cfg.a_bits)]
    c_in = c0
    for t, c, n, s in cfg.blocks:
        c_out = cfg.channels(c)
        for i in range(n):
            layers.append(InvertedResidual(c_in, c_out, t, s if i == 0 else 1, cfg))
            c_in = c_out
    c_last = cfg.channels(cfg.last_channels)
    layers += [QuantConv2d(c_in, c_last, 1, bias=False, **wq(cfg.last_w_bits or cfg.w_bits)),
               nn.BatchNorm2d(c_last), act(cfg.a_bits), nn.AdaptiveAvgPool2d(1)]
    return nn.Sequential(*layers), c_last


# Every architecture: its config section and its backbone builder.
ARCHS = {"mlp": (MLPSection, build_mlp), "cnn": (CNNSection, build_cnn),
         "mobilenetv2_lite": (MobileNetV2LiteSection, build_mobilenetv2_lite)}


def _arch_of(section):
    # a section without `arch` is an MLP (the default model)
    if isinstance(section, dict):
        return section.get("arch", "mlp")
    return getattr(section, "arch", None)


# The type of a `model:` section: the class of its `arch` (a discriminated union).
AnyModelSection = Annotated[
    Union[tuple(Annotated[cls, Tag(arch)] for arch, (cls, _) in ARCHS.items())],
    Discriminator(_arch_of)]
_ANY_MODEL_SECTION = TypeAdapter(AnyModelSection)


def ModelSection(**fields) -> ModelSectionBase:  # noqa: N802  (built like the one class it was)
    """The validated section of `fields["arch"]` (default mlp), e.g.
    ``ModelSection(arch="mlp", hidden=[32])``; pydantic's ValidationError (a ValueError) when a
    field is wrong."""
    return _ANY_MODEL_SECTION.validate_python(fields)


def heads_for(tasks, mode: str) -> list[Head]:
    """Per-task heads, or one head over the union of classes for the multi-class baseline."""
    if mode == "multiclass":
        return [Head("all", sum(len(t.classes) for t in tasks))]
    return [Head(t.name, len(t.classes)) for t in tasks]


def build_model(cfg: ModelSectionBase, tasks, input_size: int = 28) -> MultiTaskNet:
    if isinstance(cfg, dict):
        cfg = ModelSection(**cfg)
    if cfg.arch not in ARCHS:
        raise ValueError(f"model.arch: unknown architecture {cfg.arch!r}; known: {sorted(ARCHS)}")
    backbone, feat = ARCHS[cfg.arch][1](cfg, input_size)
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
