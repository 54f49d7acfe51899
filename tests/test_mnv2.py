"""arch mobilenetv2_lite (brevitas_models/models.py): config checks, the built structure,
training with the real loop on the tiny tasks, QONNX export checked integer-exact."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU

from brevitas_models.config import ConfigError, config_from_dict, load_config, merge
from brevitas_models.models import InvertedResidual, build_model
from brevitas_models.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
TINY = ["tiny_pneumoniamnist", "tiny_breastmnist", "tiny_bloodmnist"]
# stem 8 -> [t=1: 8->8, residual, no expansion] -> [8->16, stride 2] -> 2x [16->16, residual]
SMALL = {"arch": "mobilenetv2_lite", "in_channels": 3, "stem_channels": 8,
         "blocks": [[1, 8, 1, 1], [2, 16, 1, 2], [2, 16, 2, 1]], "last_channels": 16,
         "w_bits": 4, "a_bits": 4, "head_hidden": 8}


def tiny_mnv2(tmp_path, **over):
    raw = {"name": "mnv2", "seed": 0, "out_dir": str(tmp_path / "runs"),
           "data": {"tasks": TINY, "epoch_size": 64},
           "model": SMALL, "train": {"epochs": 1, "batch_size": 32, "threads": 1}}
    return config_from_dict(merge(raw, over))


def model_of(tasks=TINY, size=28, **fields):
    torch.manual_seed(0)
    return build_model({**SMALL, **fields}, [get_task(t) for t in tasks], size)


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("model, words", [
    ("blocks: [[4, 16, 2]]", r"model.blocks\[0\]: expected \[t, c, n, s\]"),
    ("blocks: [[4, 16, 2, 2], [4, 16, 1, 3]]", r"model.blocks\[1\]: stride s must be 1 or 2"),
    ("blocks: [[0, 16, 2, 2]]", r"model.blocks\[0\]: t \(expansion\), c .* must be positive"),
    ("blocks: [[4, 16.5, 2, 2]]", r"model.blocks\[0\]: expected \[t, c, n, s\]"),
    ("blocks: []", r"model.blocks: needs at least one \[t, c, n, s\] entry"),
    ("stem_stride: 3", r"model.stem_stride: 3 is not one of \[1, 2\]"),
    ("width_mult: 0", r"model.width_mult: 0 is outside \(0, 4\]"),
    ("first_w_bits: 9", r"model.first_w_bits: 9 is outside 1..8"),
    ("add_bits: 1", r"model.add_bits: 1 is outside 2..16"),
    ("block_out: relu6", r"model.block_out: 'relu6' is not one of \['relu', 'linear'\]"),
    ("{w_bits: null, a_bits: null, last_w_bits: 8}", "last_w_bits: a float model"),
    ("convs: [[8, 3, 1, 1]]", "model.convs: a field of arch cnn, not of arch mobilenetv2_lite"),
])
def test_bad_fields_are_named_with_the_fix(tmp_path, model, words):
    body = model.strip("{}")
    with pytest.raises(ConfigError, match=words):
        load_config(write(tmp_path, f"model: {{arch: mobilenetv2_lite, {body}}}"))


def test_input_smaller_than_the_total_stride_is_refused(tmp_path):
    # default: stem stride 2 x block strides 1*2*2*2 = 16
    text = "data: {size: 8}\nmodel: {arch: mobilenetv2_lite}"
    with pytest.raises(ConfigError, match="model.blocks: input size 8 is smaller than the total "
                       "stride 16"):
        load_config(write(tmp_path, text))
    assert load_config(write(tmp_path, "data: {size: 16}\nmodel: {arch: mobilenetv2_lite}"))


def test_structure_residual_adds_only_at_stride_1_with_equal_channels():
    m = model_of()
    blocks = [b for b in m.backbone if isinstance(b, InvertedResidual)]
    assert [b.residual for b in blocks] == [True, False, True, True]
    assert [b.expand is None for b in blocks] == [True, False, False, False]  # t == 1
    dws = [c for c in m.modules() if isinstance(c, QuantConv2d) and c.groups > 1]
    assert [(c.groups, c.stride[0]) for c in dws] == [(8, 1), (16, 2), (32, 1), (32, 1)]
    assert all(c.groups == c.in_channels == c.out_channels for c in dws)
    # every conv is bias-free and followed by BatchNorm; projections have no activation
    seq = [c for c in m.backbone.modules() if isinstance(c, (QuantConv2d, nn.BatchNorm2d))]
    assert all(isinstance(a, QuantConv2d) and isinstance(b, nn.BatchNorm2d) and a.bias is None
               for a, b in zip(seq[::2], seq[1::2]))
    for b in blocks:
        assert len(b.project) == 2 and isinstance(b.out_q, QuantReLU)
        # one shared quantizer for both inputs of the add, signed, a_bits + 2
        assert (b.add_q is not None) == b.residual
        if b.residual:
            assert isinstance(b.add_q, QuantIdentity) and int(b.add_q.act_quant.bit_width()) == 6
    assert isinstance(m.backbone[-1], nn.AdaptiveAvgPool2d)


def test_forward_shapes_width_mult_and_float_model():
    m = model_of()
    assert m(torch.randint(0, 256, (3, 3, 28, 28)).float()).shape == (3, 12)
    assert m.backbone(torch.zeros(1, 3, 28, 28)).shape == (1, 16, 1, 1)
    # width 0.5 rounds 8 -> 8 (at least one divisor), 16 -> 8; 1.5: 16 -> 24
    half = model_of(width_mult=0.5)
    assert {c.out_channels for c in half.modules() if isinstance(c, QuantConv2d)} == {8, 16}
    wide = model_of(width_mult=1.5)
    assert wide.backbone[0].out_channels == 16 and wide.heads.hidden.in_features == 24
    f = model_of(w_bits=None, a_bits=None, block_out="linear")
    assert f(torch.zeros(2, 3, 28, 28)).shape == (2, 12)
    assert not any(isinstance(x, (QuantIdentity, QuantReLU)) for x in f.modules())


def test_first_and_last_layer_bits():
    m = model_of(first_w_bits=8, last_w_bits=8)
    convs = [c for c in m.backbone.modules() if isinstance(c, QuantConv2d)]
    bits = [int(c.weight_quant.bit_width()) for c in convs]
    assert bits[0] == 8 and bits[-1] == 8 and set(bits[1:-1]) == {4}
    assert int(m.heads.hidden.weight_quant.bit_width()) == 4  # heads keep w_bits


def test_shipped_config_fits_the_zynq_budget():
    cfg = load_config(ROOT / "configs" / "xray_mri_mnv2.yaml")
    m = build_model(cfg.model, [get_task(t) for t in cfg.data.tasks], cfg.data.size)
    weights = sum(x.weight.numel() for x in m.modules() if isinstance(x, (QuantConv2d,
                                                                          QuantLinear)))
    assert weights < 150_000
    assert m(torch.zeros(1, 1, 64, 64)).shape == (1, m.num_outputs)


def test_trains_with_the_real_loop_and_exports_integer_exact(tmp_path):
    from brevitas_models.export import export_run
    from brevitas_models.train import train

    cfg = tiny_mnv2(tmp_path)
    out = train(cfg, progress=False)  # 2 steps of 32 images
    assert out["epochs"] == 1 and np.isfinite(out["best_val_mean_acc"])
    report = export_run(cfg.run_dir, check_per_task=3)
    assert report["integer_exact"] and report["mismatched_outputs"] == 0
    assert report["images"] == 9 and report["outputs"] == 12
    import onnx
    ops = {n.op_type for n in onnx.load(cfg.run_dir / "export" / "model.onnx").graph.node}
    assert {"Add", "GlobalAveragePool", "Quant"} <= ops
    # the float64 arbiter of the build's float stages (finn_build/float64_ref.py, used when a
    # stage rounds an activation at a quantizer boundary the other way) runs every op of the
    # export, the residual Add and the pooling included, and agrees with qonnx's execution
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    from finn_build import float64_ref

    model = cleanup_model(ModelWrapper(str(cfg.run_dir / "export" / "model.onnx")))
    i, o = model.graph.input[0].name, model.graph.output[0].name
    x = np.random.default_rng(0).integers(0, 256, model.get_tensor_shape(i)).astype(np.float32)
    y64, near = float64_ref.run(model, x)
    y32 = execute_onnx(model, {i: x})[o].reshape(-1)
    assert np.allclose(y64, y32, rtol=1e-4, atol=1e-4) and near


def test_linear_block_out_exports_integer_exact(tmp_path):
    from brevitas_models.data import load_task
    from brevitas_models.export import check_export, export_qonnx_model

    m = model_of(block_out="linear")
    imgs = np.concatenate([load_task(t, channels=3)["test"].images[:4] for t in TINY])
    m.train()
    with torch.no_grad():  # BatchNorm statistics and activation scales from real images
        for _ in range(3):
            m(torch.from_numpy(imgs.transpose(0, 3, 1, 2)).float())
    m.eval()
    path, _ = export_qonnx_model(m, tmp_path / "linear.onnx")
    assert check_export(m, path, imgs)["integer_exact"]


def test_eight_bit_first_and_last_layers_export(tmp_path):
    # check_narrow_range reads each layer's own bit width (8 here, 4 elsewhere)
    from brevitas_models.export import export_qonnx_model

    m = model_of(first_w_bits=8, last_w_bits=8).eval()
    path, _ = export_qonnx_model(m, tmp_path / "w8first.onnx")
    assert path.exists()
