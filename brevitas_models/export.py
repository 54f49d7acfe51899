"""QONNX export of a trained zoo model, its metadata, and the export equivalence check.

`export_qonnx_model` writes `<stem>.onnx` (QONNX, graph input annotated UINT8) and
`<stem>.meta.json` (tasks, output slices, each task's "decision" when the run has a
calibration.json, each task's full declaration ("task": the ``TaskSection`` form, so that build
and deploy read a user's own task from the run), input format, host-side scale and bias).
Both are written to temp paths and renamed, so a failed export leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from brevitas.export import export_qonnx
from brevitas.nn import QuantConv2d, QuantLinear

from medimage import Preprocess

from .files import sha256_file  # noqa: F401  (imported from here by finn_build)
from .models import MultiTaskNet


def _transformation_base():
    from qonnx.transformation.base import Transformation
    return Transformation


class FixUnsignedBinaryActExport(_transformation_base()):
    """Brevitas 0.13 defect: a 1-bit *unsigned* activation (``QuantReLU(bit_width=1)``,
    values {0, s}) is exported as ``Relu -> BipolarQuant``, which means {-s, +s}, so the
    QONNX disagrees with the Brevitas forward. Rewrite exactly that pattern (a BipolarQuant
    fed by a Relu) to what Brevitas computes: ``Quant(x, s, zeropt=0, bitwidth=1, signed=0,
    narrow=0, rounding_mode=ROUND)``. ``self.fixed`` lists the rewritten nodes."""

    def __init__(self):
        super().__init__()
        self.fixed: list[str] = []

    def apply(self, model):
        from onnx import helper

        for node in list(model.graph.node):
            if node.op_type != "BipolarQuant":
                continue
            prod = model.find_producer(node.input[0])
            if prod is None or prod.op_type != "Relu":
                continue
            zp, bw = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            model.set_initializer(zp, np.zeros((), np.float32))
            model.set_initializer(bw, np.ones((), np.float32))
            q = helper.make_node("Quant", [node.input[0], node.input[1], zp, bw], list(node.output),
                                 name=node.name, domain=node.domain, signed=0, narrow=0,
                                 rounding_mode="ROUND")
            idx = list(model.graph.node).index(node)
            model.graph.node.remove(node)
            model.graph.node.insert(idx, q)
            self.fixed.append(node.name)
        return model, False


class ExportCheckError(AssertionError):
    """QONNX execution disagrees with the Brevitas forward."""


def check_narrow_range(model: MultiTaskNet):
    """Every quantized weight must be narrow-range (INT-b in [-(2^(b-1)-1), 2^(b-1)-1], or
    bipolar for 1 bit): FINN's RTL MVU on DSP48E1 relies on it. Also the block-diagonal head."""
    off_block = model.heads.out.weight.detach()[model.heads.block_mask == 0]
    if off_block.numel() and off_block.abs().max() > 0:
        raise ValueError("fused head: weights outside the task blocks are not zero")
    if model.cfg.w_bits is None:
        return
    for name, layer in model.named_modules():
        if not isinstance(layer, (QuantLinear, QuantConv2d)):
            continue
        q = layer.quant_weight()
        b = int(q.bit_width)  # per layer: a first / last layer may keep 8 bit
        w = torch.round(q.value / q.scale)
        if b == 1:
            ok = bool(((w == 1) | (w == -1)).all())
        else:
            lim = 2 ** (b - 1) - 1
            ok = bool((w.abs() <= lim).all())
        if not ok:
            raise ValueError(f"layer {name}: weights are not narrow-range {b}-bit "
                             f"(min {w.min().item()}, max {w.max().item()})")


def model_meta(model: MultiTaskNet, extra: dict | None = None,
               decisions: dict | None = None, preprocess: dict | None = None,
               specs: list | None = None) -> dict:
    """decisions: {task: decision} (``medimage.decision``) added to the task entries; a task
    without one has no "decision" key (T = 1 and argmax). preprocess: {task: the dict of its
    ``medimage.Preprocess``}, the style-removing steps the model was trained with, which the
    board applies; a task without one has no "preprocess" key (none). specs: the run's
    ``TaskSpec`` list (``train.tasks_of``): each task entry gets its native_channels,
    native_size, source_format and "task", its declaration with the preprocessing applied."""
    cfg = model.cfg
    tasks = [dict(t, decision=decisions[t["name"]]) if t["name"] in (decisions or {})
             else dict(t) for t in model.tasks_meta]
    by_name = {s.name: s for s in specs or []}
    for t in tasks:
        if t["name"] in (preprocess or {}):
            t["preprocess"] = dict(preprocess[t["name"]])
        spec = by_name.get(t["name"])
        if spec is not None:
            t.update(native_channels=spec.channels, native_size=spec.size,
                     source_format=spec.fmt,
                     task=dict(spec.to_dict(),
                               preprocess=Preprocess.from_dict(t.get("preprocess")).to_dict()))
    c, s = cfg.in_channels, model.input_size
    meta = {
        "arch": cfg.arch, "mode": cfg.mode, "w_bits": cfg.w_bits, "a_bits": cfg.a_bits,
        "input": {"shape": [1, c, s, s], "layout": "NCHW", "dtype": "UINT8",
                  "channels": c, "size": s,
                  "preprocessing": "per task (its \"preprocess\"): crop to the body/head box, "
                                   "resize to size x size (bicubic), intensity normalization "
                                   "(medimage.preprocess); gray->RGB by replication, RGB->gray "
                                   "by ITU-R 601 luma; uint8 0..255 (the model scales by 1/255 "
                                   "itself)"},
        "tasks": tasks,
        "num_outputs": model.num_outputs,
        "host": {"class_bias": model.heads.class_bias.detach().tolist()},
    }
    if cfg.w_bits is not None:
        meta["host"]["output_scale"] = model.output_scale().reshape(-1).tolist()
    meta.update(extra or {})
    return meta


def export_qonnx_model(model: MultiTaskNet, out_path, extra_meta: dict | None = None,
                       decisions: dict | None = None, preprocess: dict | None = None,
                       specs: list | None = None):
    """Export to QONNX; returns (onnx_path, meta). decisions, preprocess, specs: see
    ``model_meta``."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        out_path = out_path.with_suffix(".onnx")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    check_narrow_range(model)
    c, s = model.cfg.in_channels, model.input_size
    example = torch.zeros(1, c, s, s)
    with torch.no_grad():
        model(example)  # sets the accumulator scale read by model_meta
    meta = model_meta(model, extra_meta, decisions, preprocess, specs)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out_path.parent)
    os.close(fd)
    try:
        # TorchScript exporter: the graph form FINN's QONNX ingestion is tested with.
        export_qonnx(model, example, tmp, dynamo=False)
        mw = ModelWrapper(tmp).transform(FixUnsignedBinaryActExport())
        mw.set_tensor_datatype(mw.graph.input[0].name, DataType["UINT8"])
        mw.save(tmp)
        meta["qonnx_sha256"] = sha256_file(tmp)
        meta_path = out_path.with_suffix(".meta.json")
        meta_tmp = meta_path.with_name(meta_path.name + ".tmp")
        meta_tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, out_path)
        os.replace(meta_tmp, meta_path)
    except BaseException:
        for p in (tmp, out_path.with_suffix(".meta.json.tmp")):
            if os.path.exists(p):
                os.remove(p)
        raise
    return out_path, meta


def run_qonnx(onnx_path, images_nchw: np.ndarray) -> np.ndarray:
    """Execute a QONNX file image by image with qonnx's reference executor."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    mw = cleanup_model(ModelWrapper(str(onnx_path)))
    iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
    return np.concatenate([execute_onnx(mw, {iname: images_nchw[i:i + 1].astype(np.float32)})[oname]
                           for i in range(len(images_nchw))])


def check_export(model: MultiTaskNet, onnx_path, images_nhwc: np.ndarray, task_ids=None) -> dict:
    """QONNX execution must equal the Brevitas forward for every output; for quantized models
    the integer accumulators (logits before the float scale and bias) must match exactly."""
    x = np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)).astype(np.float32)
    got = run_qonnx(onnx_path, x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    report = {"images": int(len(x)), "outputs": int(ref.shape[1]),
              "max_abs_diff": float(np.abs(got - ref).max())}
    bad = np.zeros(ref.shape, bool)
    if model.cfg.w_bits is not None:
        scale = model.output_scale().reshape(1, -1).numpy()
        bias = model.heads.class_bias.detach().numpy()
        ref_int, got_int = (ref - bias) / scale, (got - bias) / scale
        # both sides must sit on integers, and on the same ones
        off_grid = max(np.abs(ref_int - np.round(ref_int)).max(),
                       np.abs(got_int - np.round(got_int)).max())
        bad = np.round(ref_int) != np.round(got_int)
        report.update(integer_exact=not bad.any(), max_off_integer_grid=float(off_grid))
        if off_grid > 1e-2:
            raise ExportCheckError(f"accumulators are not integers (off by {off_grid:.3g}): "
                                   "the output scale read from Brevitas does not fit the graph")
    else:
        bad = ~np.isclose(got, ref, rtol=1e-4, atol=1e-4)
    report["mismatched_outputs"] = int(bad.sum())
    if bad.any():
        rows, cols = np.nonzero(bad)
        report["mismatches"] = [{"image": int(r), "output": int(c),
                                 "task": None if task_ids is None else int(task_ids[r]),
                                 "brevitas": float(ref[r, c]), "qonnx": float(got[r, c])}
                                for r, c in list(zip(rows, cols))[:20]]
        raise ExportCheckError(f"QONNX differs from Brevitas in {bad.sum()} outputs: "
                               f"{report['mismatches'][:3]}")
    return report


def run_preprocess(cfg) -> dict:
    """{task: preprocess dict} of a run config (its stored config lists every task)."""
    return {t: p.model_dump() for t, p in cfg.data.preprocess.items()}


def export_run(run_dir, data=None, check_per_task: int = 32, split: str = "test") -> dict:
    """Export a run's best checkpoint to `<run_dir>/export/model.onnx` (with the decisions of
    its calibration.json, refitted when stale) and check it on `check_per_task` real images of
    each task."""
    from .report import write_json
    from .train import load_data, load_run, run_decisions, tasks_of

    model, cfg = load_run(run_dir)
    data = data or load_data(cfg)
    decisions = run_decisions(run_dir, data)
    out = Path(run_dir) / "export" / "model.onnx"
    onnx_path, meta = export_qonnx_model(
        model, out, {"run": cfg.name, "checkpoint_sha256": sha256_file(Path(run_dir) / "best.pt")},
        decisions, run_preprocess(cfg), tasks_of(cfg))
    pool = data[split]
    idx = np.concatenate([np.nonzero(pool.task_ids == t)[0][:check_per_task]
                          for t in range(len(cfg.data.tasks))])
    report = check_export(model, onnx_path, pool.images[idx], pool.task_ids[idx])
    report.update(split=split, per_task=check_per_task, onnx=str(onnx_path))
    write_json(report, Path(run_dir) / "export" / "export_check.json")
    return report
