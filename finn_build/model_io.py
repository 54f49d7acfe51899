"""Model sources for a build: a training checkpoint, an exported QONNX file, or an untrained
(BatchNorm-calibrated) model built from a model section.

Everything ends as ``ModelBundle``: the QONNX file the build starts from, its metadata
(``model.meta.json`` contract of ``brevitas_models.export``) and, when available, the
Brevitas module itself (for the Brevitas verification stage). The metadata describes every
task in full (its declaration: a run's own tasks too, from the run's stored config); the
build reads the tasks from it (``finn_build.data.task_spec``), not from the registry.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

log = logging.getLogger("finn_build")


@dataclass
class ModelBundle:
    qonnx_path: Path
    meta: dict
    torch_model: Any = None  # brevitas nn.Module in eval mode, or None
    source: str = ""


def export_model(model, out_path: Path, decisions=None, preprocess=None,
                 specs=None) -> tuple[Path, dict]:
    """Export with ``brevitas_models.export.export_qonnx_model`` (the project's contract);
    ``specs``: the model's TaskSpecs, described in the metadata."""
    from brevitas_models.export import export_qonnx_model
    qpath, meta = export_qonnx_model(model, Path(out_path), decisions=decisions,
                                     preprocess=preprocess, specs=specs)
    return Path(qpath), meta


def calibration_of(checkpoint) -> Optional[Path]:
    """The run's calibration.json when ``checkpoint`` is a run's best.pt and has one."""
    p = Path(checkpoint)
    cal = p.with_name("calibration.json")
    return cal if p.name == "best.pt" and cal.is_file() else None


def checkpoint_decisions(checkpoint) -> Optional[dict]:
    """The per-task decisions of a run's best.pt (its calibration.json, refitted when it
    belongs to another best.pt), or None: T = 1 and argmax on the board."""
    if calibration_of(checkpoint) is None:
        return None
    from brevitas_models.train import run_decisions
    return run_decisions(Path(checkpoint).parent, log=log.info)


def checkpoint_model(src):
    """-> (model, its run config) from a brevitas_models checkpoint, training its run first
    when the checkpoint is missing and ``train_config`` names the run's config."""
    from brevitas_models.train import check_config_matches_run, load_checkpoint
    path = Path(src.checkpoint)
    if src.train_config:
        from brevitas_models.config import load_config
        from brevitas_models.train import train
        rcfg = load_config(src.train_config)
        if rcfg.run_dir / "best.pt" != path:
            raise ValueError(f"model.train_config {src.train_config} trains {rcfg.run_dir}/best.pt, "
                             f"not model.checkpoint {path}")
        if not path.is_file():
            log.info("checkpoint %s missing: training %s", path, src.train_config)
            train(rcfg, progress=False)
        else:  # an edited train_config must not build the checkpoint of the old one
            check_config_matches_run(rcfg, src.train_config)
    return load_checkpoint(path)


def build_untrained(section, data_root: Optional[str]) -> tuple[Any, list]:
    """Fresh model from a model section; BatchNorm statistics calibrated on real training
    images so the activations (and so the verification) are not degenerate."""
    import torch
    from brevitas_models.models import build_model
    from brevitas_models.tasks import get_task

    from .data import load_images

    torch.manual_seed(section.seed)
    tasks = [get_task(n) for n in section.tasks]
    model = build_model(dict(section.model), tasks, section.input_size)
    cin = model.cfg.in_channels
    per_task = max(1, section.calibration_images // len(tasks))
    imgs = [load_images(t, section.calibration_split, per_task, section.input_size, cin, data_root,
                        seed=section.seed)[0] for t in tasks]
    x = torch.from_numpy(np.concatenate(imgs).transpose(0, 3, 1, 2).astype(np.float32))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for chunk in torch.split(x, 64):
            model(chunk)
        # a per-class bias that is not all zero, so the host-side Add is exercised
        if hasattr(model, "heads") and hasattr(model.heads, "class_bias"):
            g = torch.Generator().manual_seed(section.seed)
            model.heads.class_bias.copy_(0.1 * torch.randn(model.heads.class_bias.shape,
                                                            generator=g))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()
    return model, tasks


def meta_path(src) -> Path:
    """The metadata file of a QONNX model source (``model.meta`` or next to the QONNX)."""
    return Path(src.meta) if src.meta else Path(src.qonnx).with_suffix(".meta.json")


def source_files(cfg) -> dict:
    """{config field: path} of the files the model source reads: their content is part of the
    build (a ``--from-step`` resume compares their sha256 with the earlier run's)."""
    src = cfg.model
    if src.checkpoint is not None:
        cal = calibration_of(src.checkpoint)  # its decisions go into model.meta.json
        return {"model.checkpoint": src.checkpoint,
                **({"model.checkpoint (calibration.json)": str(cal)} if cal else {})}
    if src.qonnx is not None:
        return {"model.qonnx": src.qonnx, "model.meta": str(meta_path(src))}
    return {}  # untrained: the config fields (seed, ...) and the data files define it


def resolve_model(cfg, work_dir: Path) -> ModelBundle:
    """Materialize the configured model source as QONNX (+meta) under ``work_dir``."""
    src = cfg.model
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / "model.onnx"
    if src.qonnx is not None:
        shutil.copyfile(src.qonnx, target)
        meta = json.loads(meta_path(src).read_text())
        (work_dir / "model.meta.json").write_text(json.dumps(meta, indent=2))
        return ModelBundle(target, meta, None, f"qonnx:{src.qonnx}")
    if src.checkpoint is not None:
        from brevitas_models.export import run_preprocess
        from brevitas_models.train import tasks_of

        model, run_cfg = checkpoint_model(src)
        qpath, meta = export_model(model, target, checkpoint_decisions(src.checkpoint),
                                   run_preprocess(run_cfg), tasks_of(run_cfg))
        return ModelBundle(Path(qpath), meta, model, f"checkpoint:{src.checkpoint}")
    u = src.untrained
    model, tasks = build_untrained(u, cfg.verify.data_root)
    # its BatchNorm saw the tasks' default preprocessing (load_images): so does the board
    qpath, meta = export_model(model, target,
                               preprocess={t.name: t.preprocess.to_dict() for t in tasks},
                               specs=tasks)
    meta.setdefault("untrained", {"seed": u.seed, "calibration_images": u.calibration_images,
                                  "calibration_split": u.calibration_split})
    return ModelBundle(Path(qpath), meta, model, f"untrained:seed={u.seed}")
