"""Helpers for the build tests (tests/test_*.py): tiny configs, a deliberately
corrupting build step, and a model that cannot be all-RTL (it has a max-pool)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TINY_TASKS = ["tiny_pneumoniamnist", "tiny_breastmnist", "tiny_bloodmnist"]


# a tiny MobileNetV2-lite on the tiny chest X-ray + brain MRI files (32x32 gray): stem
# 32 -> 16, a residual t=1 block, a stride-2 block, a residual t=2 block, global pool
TINY_MNV2 = {"arch": "mobilenetv2_lite", "w_bits": 4, "a_bits": 4, "in_channels": 1,
             "stem_channels": 8, "blocks": [[1, 8, 1, 1], [2, 16, 1, 2], [2, 16, 1, 1]],
             "last_channels": 16, "block_out": "linear", "head_hidden": 8}
TINY_IMAGE_TASKS = ["tiny_chest_xray", "tiny_brain_mri"]


def tiny_build_dict(out_dir, arch="mlp", **over) -> dict:
    model = {"mlp": {"arch": "mlp", "w_bits": 4, "a_bits": 4, "in_channels": 1,
                     "hidden": [32, 16], "head_hidden": 8},
             "cnn": {"arch": "cnn", "w_bits": 4, "a_bits": 4, "in_channels": 3,
                     "convs": [[8, 3, 2, 1], [8, 3, 2, 1], [16, 3, 2, 0], [16, 3, 1, 0]],
                     "head_hidden": 8},
             "mnv2": TINY_MNV2}[arch]
    tasks, size = (TINY_IMAGE_TASKS, 32) if arch == "mnv2" else (TINY_TASKS, 28)
    # the tiny image fixtures have a test split only
    split = "test" if arch == "mnv2" else "train"
    raw = {"name": f"tiny_{arch}",
           "model": {"untrained": {"model": model, "tasks": tasks, "input_size": size,
                                   "seed": 0, "calibration_images": 48,
                                   "calibration_split": split}},
           "board": "Pynq-Z1", "clock_mhz": 100,
           "folding": {"target_fps": "max"},
           "verify": {"images_per_task": 4, "split": "test"},
           "output_dir": str(Path(out_dir) / f"tiny_{arch}")}
    from finn_build.config import merge

    return merge(raw, over)


def flip_weight_step(op_prefix="MVAU", which=-1, stage_note="corrupt"):
    """A build step (``model, build -> model``) that flips the sign of ONE weight of the
    ``which``-th MVAU: the non-zero weight whose input is largest on the verification
    images (so the flip is visible in the outputs)."""
    def step_corrupt_weight(model, build):
        from finn.core.onnx_exec import execute_onnx
        from finn.util.verification import despecialize_model

        from finn_build.host_ops import apply_pre

        nodes = [n for n in model.graph.node if n.op_type.startswith(op_prefix)]
        node = nodes[which]
        w = model.get_initializer(node.input[1]).copy()
        # mean input activation per row of W over the verification images
        x = build.verifier.inputs
        ref = despecialize_model(model)
        iname = model.graph.input[0].name
        ishape = model.get_tensor_shape(iname)
        acts = []
        for xi in x[: min(8, len(x))]:
            if build.state.host_ops:  # a dataflow partition: host pre-ops first
                xi = apply_pre(build.state.host_ops, xi[None])
            ctx = execute_onnx(ref, {iname: xi.reshape(ishape)}, True)
            acts.append(np.asarray(ctx[node.input[0]]).reshape(-1, w.shape[0]).mean(0))
        a = np.mean(acts, 0)
        score = np.abs(w) * a[:, None]
        r, c = np.unravel_index(np.argmax(score), w.shape)
        w[r, c] = -w[r, c]
        model.set_initializer(node.input[1], w)
        build.state.extra["corrupted"] = {"node": node.name, "row": int(r), "col": int(c),
                                    "note": stage_note}
        return model
    return step_corrupt_weight


def export_pool_model(out_dir) -> Path:
    """A small QONNX classifier with a MaxPool between quantized convs (FINN's pool layer is
    HLS-only) and its meta.json. -> path of model.onnx."""
    import brevitas_models  # noqa: F401  (its _compat fix-up must precede Brevitas layers)
    import torch
    import torch.nn as nn
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantConv2d, QuantLinear, QuantReLU
    from brevitas.quant import Int8WeightPerTensorFloat
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    wq = {"weight_quant": Int8WeightPerTensorFloat, "weight_bit_width": 4, "bias": False}

    class PoolNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = QuantConv2d(1, 8, 3, padding=1, **wq)
            self.b1 = nn.BatchNorm2d(8)
            self.a1 = QuantReLU(bit_width=4)
            self.pool = nn.MaxPool2d(2)
            self.c2 = QuantConv2d(8, 16, 14, **wq)
            self.b2 = nn.BatchNorm2d(16)
            self.a2 = QuantReLU(bit_width=4)
            self.fc = QuantLinear(16, 4, **wq)

        def forward(self, x):
            x = self.a1(self.b1(self.c1(x * (1.0 / 255.0))))
            x = self.a2(self.b2(self.c2(self.pool(x))))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    m = PoolNet()
    m.train()
    with torch.no_grad():
        m(torch.randint(0, 256, (16, 1, 28, 28)).float())
    m.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = out / "model.onnx"
    export_qonnx(m, torch.zeros(1, 1, 28, 28), str(p), dynamo=False)
    mw = ModelWrapper(str(p))
    mw.set_tensor_datatype(mw.graph.input[0].name, DataType["UINT8"])
    mw.save(str(p))
    meta = {"arch": "poolnet", "w_bits": 4, "a_bits": 4,
            "input": {"shape": [1, 1, 28, 28], "layout": "NCHW", "dtype": "UINT8"},
            "tasks": [{"name": "tiny_pneumoniamnist", "classes": 2, "slice": [0, 2],
                       "negative_class": 0},
                      {"name": "tiny_breastmnist", "classes": 2, "slice": [2, 4],
                       "negative_class": 1}],
            "num_outputs": 4}
    (out / "model.meta.json").write_text(json.dumps(meta, indent=2))
    return p
