"""QAT training, checkpointing with resume, and evaluation of the multi-task zoo.

A run lives in one directory (`<out_dir>/<name>/`): `config.yaml` (snapshot), `last.pt` (all
state needed to resume after a kill, rewritten atomically every epoch), `best.pt` (weights with
the best mean validation accuracy), `history.json`, and evaluation outputs. Same seed, same
config -> same weights on CPU, also across a kill and resume (the RNG states are checkpointed).
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from .augment import AugmentConfig, augment
from .config import ConfigError, RunConfig, config_from_dict
from .data import build_multitask, iterate_batches
from .metrics import multitask_metrics
from .models import build_model
from .report import plot_confusion, plot_curves, write_json
from .tasks import get_task


def select_device(pref: str) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use 'auto'")
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(pref)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def atomic_save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def tasks_of(cfg: RunConfig):
    return [get_task(n) for n in cfg.data.tasks]


def load_data(cfg: RunConfig):
    return build_multitask(cfg.data.tasks, root=cfg.data.root, size=cfg.data.size,
                           channels=cfg.model.in_channels)


def multitask_loss(logits, labels, task_ids, tasks_meta, cfg: RunConfig):
    """Cross-entropy over each image's own task slice (masked), optionally plus the
    cross-task negatives: an image of another task is a negative for every binary head."""
    starts = torch.tensor([t["slice"][0] for t in tasks_meta], device=logits.device)
    stops = torch.tensor([t["slice"][1] for t in tasks_meta], device=logits.device)
    target = starts[task_ids] + labels
    if cfg.model.mode == "multiclass":  # one head over the union of classes, no task id
        return F.cross_entropy(logits, target)
    cols = torch.arange(logits.shape[1], device=logits.device)
    own = (cols >= starts[task_ids, None]) & (cols < stops[task_ids, None])
    loss = F.cross_entropy(logits.masked_fill(~own, float("-inf")), target)
    if cfg.train.loss == "cross_task_negatives":
        for t, meta in enumerate(tasks_meta):
            neg = meta["negative_class"]
            other = task_ids != t
            if neg is None or len(meta["classes"]) != 2 or not other.any():
                continue
            s, e = meta["slice"]
            ce = F.cross_entropy(logits[other, s:e], torch.full_like(labels[other], neg))
            loss = loss + cfg.train.cross_task_weight * ce * other.float().mean()
    return loss


@torch.no_grad()
def predict(model, images_nhwc: np.ndarray, device, batch_size=512) -> np.ndarray:
    """Logits for uint8 NHWC images."""
    model.eval()
    out = []
    for i in range(0, len(images_nhwc), batch_size):
        x = torch.from_numpy(images_nhwc[i:i + batch_size]).permute(0, 3, 1, 2).float()
        out.append(model(x.to(device)).float().cpu())
    return torch.cat(out).numpy()


def evaluate_split(model, split, tasks_meta, mode, device):
    logits = predict(model, split.images, device)
    metrics = multitask_metrics(logits, split.labels, split.task_ids, tasks_meta, mode)
    return metrics, logits


def val_score(metrics: dict) -> float:
    return float(np.mean([m["accuracy"] for m in metrics.values()]))


def _rng_state(gen):
    return {"gen": gen.get_state(), "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(gen, st):
    gen.set_state(st["gen"])
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])


def _stats_collectors(model):
    # Brevitas' runtime-stats scale init keeps its step counter as a plain attribute and its
    # running statistic in a buffer that state_dict() drops; without them a resume during the
    # first `collect_stats_steps` steps would freeze the scales early and diverge.
    return {n: m for n, m in model.named_modules()
            if hasattr(m, "collect_stats_steps") and hasattr(m, "counter") and hasattr(m, "buffer")}


def _stats_state(model):
    return {n: {"counter": int(m.counter), "buffer": m.buffer.detach().clone()}
            for n, m in _stats_collectors(model).items()}


def _load_stats_state(model, st):
    for n, m in _stats_collectors(model).items():
        m.counter = st[n]["counter"]
        m.buffer.copy_(st[n]["buffer"])


def _check_run_dir(cfg: RunConfig) -> Path:
    """A run dir belongs to one config: resuming under a changed config would mix runs."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    snap = run_dir / "config.yaml"
    if snap.exists():
        old = yaml.safe_load(snap.read_text())
        if old != cfg.to_dict():
            if (run_dir / "last.pt").exists():
                raise ConfigError(
                    f"{run_dir} holds a run with a different config; pick another `name` or "
                    f"out_dir, or delete {run_dir} to start over")
    tmp = snap.with_name("config.yaml.tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    os.replace(tmp, snap)
    return run_dir


def train(cfg: RunConfig, data=None, stop_after_epochs: int | None = None,
          progress: bool = True, log=print) -> dict:
    """Train (or resume) the run described by cfg; return a summary with validation metrics.

    stop_after_epochs: stop as if killed after that many epochs of this call (tests use it
    to check resume).
    """
    run_dir = _check_run_dir(cfg)
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    device = select_device(cfg.train.device)
    tasks = tasks_of(cfg)
    data = data or load_data(cfg)
    if "val" not in data:
        raise ValueError("training needs a validation split for early stopping")
    model = build_model(cfg.model, tasks, cfg.data.size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr,
                           weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs)
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch.Generator().manual_seed(cfg.seed)
    aug_cfg = AugmentConfig(**{k: v for k, v in vars(cfg.data.augment).items() if k != "enabled"})
    state = {"epoch": 0, "best": -math.inf, "bad_epochs": 0, "history": []}

    last = run_dir / "last.pt"
    if last.exists():
        ck = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        _load_stats_state(model, ck["quant_stats"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(gen, ck["rng"])
        state = ck["state"]
        log(f"resuming {cfg.name} after epoch {state['epoch']}")

    tmeta = model.tasks_meta
    epochs_this_call = 0
    while state["epoch"] < cfg.train.epochs and state["bad_epochs"] < cfg.train.patience:
        epoch = state["epoch"] + 1
        t0 = time.time()
        model.train()
        total, count = 0.0, 0
        batches = iterate_batches(data["train"], cfg.train.batch_size, True, gen,
                                  cfg.data.sampling, cfg.data.epoch_size, drop_last=True)
        n_batches = (cfg.data.epoch_size or len(data["train"])) // cfg.train.batch_size
        bar = tqdm(batches, total=n_batches, desc=f"{cfg.name} epoch {epoch}/{cfg.train.epochs}",
                   disable=not progress, leave=False, file=sys.stderr)
        for x, y, t in bar:
            if cfg.data.augment.enabled:
                x = augment(x, aug_cfg, gen)
            x, y, t = x.to(device), y.to(device), t.to(device)
            with torch.autocast(device.type, enabled=use_amp):
                loss = multitask_loss(model(x), y, t, tmeta, cfg)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / count:.4f}")
        sched.step()
        val_metrics, _ = evaluate_split(model, data["val"], tmeta, cfg.model.mode, device)
        score = val_score(val_metrics)
        row = {"epoch": epoch, "train_loss": total / max(count, 1), "val_mean_acc": score,
               "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
        row.update({f"val_acc_{k}": v["accuracy"] for k, v in val_metrics.items()})
        state["history"].append(row)
        state["epoch"] = epoch
        if score > state["best"]:
            state["best"], state["bad_epochs"] = score, 0
            atomic_save({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": epoch,
                         "val_metrics": val_metrics}, run_dir / "best.pt")
        else:
            state["bad_epochs"] += 1
        atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                     "rng": _rng_state(gen), "state": state, "quant_stats": _stats_state(model), "config": cfg.to_dict()}, last)
        log(f"{cfg.name} epoch {epoch}: loss {row['train_loss']:.4f} val mean acc {score:.4f} "
            + " ".join(f"{k}={v['accuracy']:.3f}" for k, v in val_metrics.items())
            + f" ({row['seconds']}s)")
        epochs_this_call += 1
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            return {"stopped_early_for_test": True, "epoch": epoch}

    write_json(state["history"], run_dir / "history.json")
    plot_curves(state["history"], str(run_dir / "curves.png"))
    return {"run_dir": str(run_dir), "epochs": state["epoch"], "best_val_mean_acc": state["best"]}


def load_run(run_dir, which="best", device="cpu"):
    """Rebuild the model of a run from its checkpoint; returns (model, cfg)."""
    return load_checkpoint(Path(run_dir) / f"{which}.pt", device)


def load_checkpoint(path, device="cpu"):
    """-> (model in eval mode, RunConfig) from a best.pt/last.pt checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train the run first (medzoo train)")
    ck = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(ck, dict) or "model" not in ck or "config" not in ck:
        raise ValueError(f"{path}: not a medzoo checkpoint (needs keys 'model' and 'config')")
    cfg = config_from_dict(ck["config"], str(path))
    model = build_model(cfg.model, tasks_of(cfg), cfg.data.size)
    model.load_state_dict(ck["model"])
    model.eval()
    return model, cfg


def evaluate_run(run_dir, split="val", data=None, write=True, device="cpu") -> dict:
    """Per-task metrics of a run's best checkpoint on one split; writes JSON and PNGs."""
    model, cfg = load_run(run_dir, device=device)
    data = data or load_data(cfg)
    if split not in data:
        raise ValueError(f"split {split!r} not available; have {sorted(data)}")
    metrics, _ = evaluate_split(model, data[split], model.tasks_meta, cfg.model.mode, device)
    if write:
        out = Path(run_dir) / f"eval_{split}"
        out.mkdir(exist_ok=True)
        write_json({"run": cfg.name, "split": split, "metrics": metrics}, out / "metrics.json")
        for task, m in metrics.items():
            classes = next(t["classes"] for t in model.tasks_meta if t["name"] == task)
            plot_confusion(m["confusion_matrix"], classes, f"{cfg.name} {task} ({split})",
                           str(out / f"confusion_{task}.png"))
    return metrics
