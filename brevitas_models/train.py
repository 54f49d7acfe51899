"""QAT training, checkpointing with resume, and evaluation of the multi-task zoo.

A run lives in one directory (`<out_dir>/<name>/`): `config.yaml` (snapshot), `last.pt` (all
state needed to resume after a kill, rewritten atomically every epoch), `best.pt` (weights with
the best mean validation accuracy), `calibration.json` (the per-task decisions fitted on the
validation split with best.pt, see calibration.py), `history.json`, and evaluation outputs.
Same seed, same config -> same weights on CPU on one machine (not across machines: their
float kernels may round differently), also across a kill and resume (the RNG states
are checkpointed), and a resumed run's best.pt/last.pt are bit-identical to an uninterrupted
run's (tests/test_faults_training.py).

A checkpoint that cannot be used (unreadable, foreign, from another config, weights that do not
fit its stored config) is a CheckpointError/ConfigError naming the file and the fix, never a
traceback or a silently different model.
"""
from __future__ import annotations

import math
import os
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from brevitas import config as brevitas_config
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from tqdm import tqdm

from . import calibration
from .augment import AugmentConfig, augment
from .config import ConfigError, RunConfig, config_from_dict, stored_run_config
from .data import build_multitask, iterate_batches
from .files import sha256_file, write_atomic, write_text_atomic
from .metrics import multitask_metrics
from .models import build_model
from .report import plot_confusion, plot_curves, write_json
from .tasks import get_task


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (unreadable, foreign, or does not fit its config)."""


def select_device(pref: str) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available; "
                          "set train.device: auto (or cpu), e.g. --set train.device=auto")
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(pref)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def atomic_save(obj, path: Path):
    """Write tmp then rename: a kill or a full disk never leaves a half-written `path`, and a
    failed write leaves no .tmp behind."""
    try:
        write_atomic(path, lambda tmp: torch.save(obj, tmp))
    except BaseException as e:
        # torch's zip writer reports a full disk as RuntimeError; say which file and why
        if isinstance(e, (OSError, RuntimeError)):
            raise OSError(f"{path}: cannot write the checkpoint ({e}); check free space and "
                          f"write permission of {path.parent}") from e
        raise


def tasks_of(cfg: RunConfig):
    """The run's tasks (TaskSpec), built-in ones by name and the config's own declarations
    (resolved: classes listed): the one way to get them."""
    return [get_task(t) if isinstance(t, str) else t.to_spec() for t in cfg.data.tasks]


def load_data(cfg: RunConfig):
    return build_multitask(tasks_of(cfg), root=cfg.data.root, size=cfg.data.size,
                           channels=cfg.model.in_channels,
                           preprocess={t: p.model_dump() for t, p in cfg.data.preprocess.items()})


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


def evaluate_split(model, split, tasks_meta, mode, device, decisions=None):
    """-> (per-task metrics, logits); ``decisions``: {task: decision} as the board applies
    them (None: T = 1 and argmax)."""
    logits = predict(model, split.images, device)
    metrics = multitask_metrics(logits, split.labels, split.task_ids, tasks_meta, mode,
                                decisions)
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
    # Brevitas' runtime-stats scale init (ParameterFromRuntimeStatsScaling, the activation
    # scales; ParameterFromRuntimeZeroPoint alike) keeps its step counter as a plain attribute
    # and its running statistic in a buffer that state_dict() drops. During the first
    # `collect_stats_steps` steps state_dict() also stores the buffer in place of the scale
    # Parameter `value`, and loading any `value` sets the counter past the phase.
    return {n: m for n, m in model.named_modules()
            if hasattr(m, "collect_stats_steps") and hasattr(m, "counter")}


def _stats_state(model):
    out = {}
    for n, m in _stats_collectors(model).items():
        out[n] = {"counter": int(m.counter)}
        for k in ("buffer", "value"):  # `value` as trained, not what state_dict() shows
            if isinstance(getattr(m, k, None), torch.Tensor):
                out[n][k] = getattr(m, k).detach().clone()
    return out


@torch.no_grad()
def _load_stats_state(model, st):
    # Call after load_state_dict: Brevitas rebuilds these modules when a state_dict is loaded.
    for n, m in _stats_collectors(model).items():
        if n not in st:  # a checkpoint older than this module's state: keep what was loaded
            continue
        m.counter = st[n]["counter"]
        for k in ("buffer", "value"):
            if k in st[n] and isinstance(getattr(m, k, None), torch.Tensor):
                getattr(m, k).copy_(st[n][k])


def quant_signature(model) -> dict:
    """Bit width of every quantized weight and activation (None: float). Bit widths live in the
    code built from the config, not in state_dict(); checkpoints store this to catch weights
    trained at one width being loaded under a config of another."""
    sig = {}
    for n, m in model.named_modules():
        if isinstance(m, (QuantLinear, QuantConv2d)):
            q = m.weight_quant
            sig[f"{n}.weight"] = int(q.bit_width()) if q.is_quant_enabled else None
        elif isinstance(m, (QuantReLU, QuantIdentity)):  # QuantIdentity: residual adds
            q = m.act_quant
            sig[f"{n}.act"] = (int(q.fused_activation_quant_proxy.tensor_quant
                                   .msb_clamp_bit_width_impl()) if q.is_quant_enabled else None)
    return sig


def _full_state_dict(model) -> dict:
    # Brevitas drops an activation scale from state_dict() before its first training step;
    # the full form lists every key a checkpoint of a trained model holds.
    brevitas_config._FULL_STATE_DICT = True
    try:
        return model.state_dict()
    finally:
        brevitas_config._FULL_STATE_DICT = False


def read_checkpoint(path, fix: str, need=("model", "config"), device="cpu") -> dict:
    """torch.load of a medzoo checkpoint; anything else is one CheckpointError naming `path`
    and `fix` (what to do about it)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train the run first (medzoo train)")
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, ImportError, IndexError, KeyError, UnicodeDecodeError) as e:
        # empty -> EOFError, truncated -> RuntimeError (zip), text -> UnpicklingError, ...
        raise CheckpointError(f"{path}: unreadable checkpoint (empty, truncated or not a torch "
                              f"file: {type(e).__name__}: {str(e)[:120]}); {fix}") from None
    if not isinstance(ck, dict) or any(k not in ck for k in need):
        have = sorted(ck)[:8] if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{path}: not a medzoo checkpoint (needs keys {list(need)}, has "
                              f"{have}); {fix}")
    return ck


def _misfits(expected: dict, sd: dict, unexpected=()) -> list[str]:
    """What keeps state_dict `sd` from loading into tensors `expected` (missing keys, the
    given unexpected ones, other shapes), a few names each; [] when it fits."""
    missing = sorted(set(expected) - set(sd))
    shapes = [f"{k} {tuple(getattr(sd[k], 'shape', ()))} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in sd and getattr(sd[k], "shape", None) != v.shape]
    return [f"{label}: {', '.join(items[:3])}" + (" ..." if len(items) > 3 else "")
            for label, items in (("missing", missing), ("unexpected", list(unexpected)),
                                 ("shape (file vs config)", shapes)) if items]


def _load_model_state(model, ck: dict, path, fix: str):
    """Load ck['model'] into `model` (built from the checkpoint's config) after checking that
    keys, shapes and quantization bit widths match; a mismatch is one CheckpointError."""
    sd = ck["model"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'model' is not a state_dict; {fix}")
    expected = _full_state_dict(model)
    problems = _misfits(expected, sd, unexpected=sorted(set(sd) - set(expected)))
    if problems:
        raise CheckpointError(f"{path}: the weights do not fit the model of the config stored "
                              f"with them ({'; '.join(problems)}); {fix}")
    sig = ck.get("quant_signature")  # absent in checkpoints written before it existed
    if sig is not None:
        mine = quant_signature(model)
        diff = [f"{k}: {sig.get(k)} bits in the weights, {mine.get(k)} in the config"
                for k in sorted(set(sig) | set(mine)) if sig.get(k) != mine.get(k)]
        if diff:
            raise CheckpointError(f"{path}: the weights were trained with other bit widths than "
                                  f"its stored config says ({'; '.join(diff[:3])}); {fix}")
    model.load_state_dict(sd)


def _is_quantizer_state(key: str) -> bool:
    # Brevitas keeps a quantizer's state under its act_quant/weight_quant submodule
    return ".act_quant." in key or ".weight_quant." in key


def _task_names(config: dict) -> list[str]:
    return [t if isinstance(t, str) else t.get("name") for t in config["data"]["tasks"]]


def other_run_checkpoint(cfg: RunConfig, source: str, field: str, fix: str) -> Path:
    """The best.pt another run's directory (or the file itself) names in config `field`."""
    path = Path(source) / "best.pt" if Path(source).is_dir() else Path(source)
    if path.resolve().parent == cfg.run_dir.resolve():
        raise ConfigError(f"{field} {source} is this run itself; {fix}")
    if not path.exists():
        raise ConfigError(f"{field}: {path} not found; train that run first, or {fix}")
    return path


@torch.no_grad()
def init_from_run(model, cfg: RunConfig, log=print) -> dict:
    """train.init_from: copy every weight of `model` but the quantizers' (conv/linear weights
    and biases, BatchNorm, the task embedding) from another run's best.pt, by name. The usual
    start of quantization-aware training is a trained float model of the same network; the
    quantizers then initialize their scales from statistics as in a fresh run. Returns what
    started the run (path, sha256, epoch), which the checkpoints keep."""
    fix = ("point train.init_from at a trained run of the same network and tasks (its "
           "directory or best.pt)")
    path = other_run_checkpoint(cfg, cfg.train.init_from, "train.init_from", fix)
    ck = read_checkpoint(path, fix)
    theirs, mine = ck["model"], _full_state_dict(model)
    src_cfg = ck["config"] if isinstance(ck["config"], dict) else {}
    problems = []
    if src_cfg.get("model", {}).get("arch") != cfg.model.arch:
        problems.append(f"arch {src_cfg.get('model', {}).get('arch')} vs {cfg.model.arch}")
    elif _task_names(src_cfg) != _task_names(cfg.to_dict()):
        problems.append(f"tasks {_task_names(src_cfg)} vs {_task_names(cfg.to_dict())}")
    weights = {k: v for k, v in mine.items() if not _is_quantizer_state(k)}
    problems += _misfits(weights, theirs)
    if problems:
        raise CheckpointError(f"{path}: train.init_from does not fit this run's network "
                              f"({'; '.join(problems)}); {fix}")
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    for k in weights:
        tensors[k].copy_(theirs[k])
    log(f"{cfg.name}: weights initialized from {path} (epoch {ck.get('epoch')}), "
        f"{len(weights)} tensors; quantizer scales from statistics")
    return {"path": str(path), "sha256": sha256_file(path), "epoch": ck.get("epoch")}


def load_teacher(cfg: RunConfig, device, log=print, expect_sha256: str | None = None):
    """train.distill.teacher -> (teacher model in eval mode, provenance {path, sha256, epoch}).
    The teacher may be another network (a float or wider model) but must have this run's
    tasks with the same classes in the same order and see the same input: its logits are
    compared column by column. ``expect_sha256``: a resumed run refuses a teacher file that
    changed since the run started (the loss would silently change mid-run)."""
    fix = ("point train.distill.teacher at a trained run of the same tasks and input (its "
           "directory or best.pt)")
    path = other_run_checkpoint(cfg, cfg.train.distill.teacher, "train.distill.teacher", fix)
    sha = sha256_file(path)
    if expect_sha256 is not None and sha != expect_sha256:
        raise CheckpointError(f"{path}: the distillation teacher changed since this run "
                              f"started (sha256 {sha[:12]}, was {expect_sha256[:12]}); restore "
                              f"it, or {_restart_hint(cfg)}")
    ck = read_checkpoint(path, fix)
    teacher, tcfg = model_of_checkpoint(ck, path, fix)
    problems = []
    mine, theirs = tasks_of(cfg), tasks_of(tcfg)
    if [(t.name, list(t.classes)) for t in mine] != [(t.name, list(t.classes)) for t in theirs]:
        problems.append(f"tasks {[t.name for t in theirs]} vs {[t.name for t in mine]}")
    for field, a, b in (("data.size", tcfg.data.size, cfg.data.size),
                        ("model.in_channels", tcfg.model.in_channels, cfg.model.in_channels),
                        ("model.mode", tcfg.model.mode, cfg.model.mode)):
        if a != b:
            problems.append(f"{field} {a} vs {b}")
    pre_t, pre = tcfg.to_dict()["data"]["preprocess"], cfg.to_dict()["data"]["preprocess"]
    problems += [f"data.preprocess.{t} {pre_t.get(t)} vs {pre[t]}" for t in pre
                 if not problems and pre_t.get(t) != pre[t]]
    if problems:
        raise CheckpointError(f"{path}: train.distill.teacher does not fit this run (teacher "
                              f"vs run: {'; '.join(problems)}); {fix}")
    for p in teacher.parameters():
        p.requires_grad_(False)
    log(f"{cfg.name}: distilling from {path} ({tcfg.model.arch}, "
        f"{'float' if tcfg.model.w_bits is None else f'w{tcfg.model.w_bits}'}), "
        f"weight {cfg.train.distill.weight}, temperature {cfg.train.distill.temperature}")
    return teacher.to(device).eval(), {"path": str(path), "sha256": sha,
                                       "epoch": ck.get("epoch")}


def distill_loss(logits, teacher_logits, task_ids, tasks_meta, mode, temperature):
    """Hinton et al.'s soft-target loss, T^2 * KL(teacher || student) at temperature T, over
    each image's own task slice (the slices are separate softmaxes, as in the CE loss)."""
    groups = ([(torch.ones_like(task_ids, dtype=torch.bool), 0, logits.shape[1])]
              if mode == "multiclass" else
              [(task_ids == i, *m["slice"]) for i, m in enumerate(tasks_meta)])
    total = logits.new_zeros(())
    for rows, s, e in groups:
        if rows.any():
            log_p = F.log_softmax(logits[rows, s:e].float() / temperature, dim=1)
            log_q = F.log_softmax(teacher_logits[rows, s:e].float() / temperature, dim=1)
            total = total + F.kl_div(log_p, log_q, log_target=True, reduction="sum")
    return total / len(task_ids) * temperature ** 2


def config_diff(a: dict, b: dict) -> list[str]:
    """Dotted paths of the fields that differ between two config dicts."""
    from .config import flatten_dict

    flat_a, flat_b = flatten_dict(a), flatten_dict(b)
    return sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k))


def _normalized(raw):
    """A stored config with today's defaults filled in (a checkpoint written before a field
    existed must not count as a different config); as is when it no longer validates."""
    try:
        return config_from_dict(stored_run_config(raw)).to_dict()
    except (ConfigError, TypeError):
        return raw


def _identity(cfg: dict):
    """What makes two configs the same run: everything but where the run lives (`out_dir`), so
    a run directory moved or copied (e.g. from a GPU machine) resumes and evaluates."""
    return {k: v for k, v in cfg.items() if k != "out_dir"} if isinstance(cfg, dict) else cfg


def _restart_hint(cfg: RunConfig) -> str:
    return (f"start over with `medzoo train CONFIG --restart` (discards the checkpoints and "
            f"history in {cfg.run_dir}), or pick another `name`/out_dir")


RUN_FILES = ("last.pt", "best.pt", "history.json", "curves.png", "config.yaml",
             calibration.FILE)


def discard_run(cfg: RunConfig, log=print) -> list[str]:
    """--restart: remove this run's own files (RUN_FILES and their .tmp), nothing else."""
    removed = []
    for name in RUN_FILES:
        for p in (cfg.run_dir / name, cfg.run_dir / f"{name}.tmp"):
            if p.is_file() or p.is_symlink():
                p.unlink()
                removed.append(p.name)
    if removed:
        log(f"restart: removed {', '.join(removed)} from {cfg.run_dir}")
    return removed


def _check_batch_size(cfg: RunConfig, data):
    """An epoch shorter than one batch trains zero steps (drop_last) and saves an untrained
    model that cannot be loaded back; refuse before anything is written."""
    n = cfg.data.epoch_size or len(data["train"])
    if cfg.train.batch_size > n:
        src = "data.epoch_size" if cfg.data.epoch_size else "the training split's size"
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is larger than an epoch "
                          f"({n} images, {src}): no step would run; lower train.batch_size "
                          f"or raise data.epoch_size")


def _check_run_dir(cfg: RunConfig) -> Path:
    """A run dir belongs to one config: resuming under a changed config would mix runs."""
    run_dir = cfg.run_dir
    for p in (Path(cfg.out_dir), run_dir):
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{p} exists and is not a directory; set out_dir (or name) to a "
                              "directory path")
    run_dir.mkdir(parents=True, exist_ok=True)
    snap = run_dir / "config.yaml"
    if snap.exists():
        try:
            old = _normalized(yaml.safe_load(snap.read_text()))
        except yaml.YAMLError:
            old = None
        if _identity(old) != _identity(cfg.to_dict()):
            if (run_dir / "last.pt").exists():
                fields = (config_diff(_identity(old), _identity(cfg.to_dict()))
                          if isinstance(old, dict) else ["?"])
                raise ConfigError(
                    f"{run_dir} holds a run with a different config (fields "
                    f"{', '.join(fields[:5])}); {_restart_hint(cfg)}")
    write_text_atomic(snap, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return run_dir


def train(cfg: RunConfig, data=None, stop_after_epochs: int | None = None,
          progress: bool = True, log=print, restart: bool = False) -> dict:
    """Train (or resume) the run described by cfg; return a summary with validation metrics.

    stop_after_epochs: stop as if killed after that many epochs of this call (tests use it
    to check resume). restart: discard the run's checkpoints and history first.
    """
    device = select_device(cfg.train.device)
    if restart:
        discard_run(cfg, log)
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    tasks = tasks_of(cfg)
    for t in cfg.data.tasks:  # a declared task's classes, as resolved and stored with the run
        if not isinstance(t, str):
            log(f"task {t.name} ({t.format}, {t.path}): classes {', '.join(t.classes)}")
    data = data or load_data(cfg)
    if "val" not in data:
        raise ValueError("training needs a validation split for early stopping")
    _check_batch_size(cfg, data)
    run_dir = _check_run_dir(cfg)
    model = build_model(cfg.model, tasks, cfg.data.size)
    last = run_dir / "last.pt"
    ck = init = None
    if last.exists():
        fix = f"delete it, or {_restart_hint(cfg)}"
        ck = read_checkpoint(last, fix, need=("model", "optimizer", "scheduler", "scaler", "rng",
                                              "state", "config"))
        stored = _normalized(ck["config"])
        if _identity(stored) != _identity(cfg.to_dict()):
            fields = (config_diff(_identity(stored), _identity(cfg.to_dict()))
                      if isinstance(stored, dict) else ["?"])
            raise ConfigError(f"{last} was written by a different config (fields "
                              f"{', '.join(fields[:5])}); {_restart_hint(cfg)}")
        _load_model_state(model, ck, last, fix)
        _load_stats_state(model, ck.get("quant_stats") or {})
    elif cfg.train.init_from:
        init = init_from_run(model, cfg, log)
    model.to(device)
    # The optimizer is built only now: Brevitas' load_state_dict replaces the quantizer modules,
    # activation-scale Parameters included, so an optimizer built before the load would keep
    # stepping orphaned copies and the resumed run would never train those scales.
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr,
                           weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs)
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch.Generator().manual_seed(cfg.seed)
    aug_cfg = AugmentConfig(**{k: v for k, v in vars(cfg.data.augment).items() if k != "enabled"})
    state = {"epoch": 0, "best": -math.inf, "bad_epochs": 0, "history": [],
             "init_from": init}

    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(gen, ck["rng"])
        state = ck["state"]
        log(f"resuming {cfg.name} after epoch {state['epoch']}")

    tmeta = model.tasks_meta
    teacher, kd = None, cfg.train.distill
    if kd is not None:
        teacher, state["distill"] = load_teacher(
            cfg, device, log, expect_sha256=(state.get("distill") or {}).get("sha256"))
    epochs_this_call, t_call = 0, time.time()
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
                logits = model(x)
                loss = multitask_loss(logits, y, t, tmeta, cfg)
                if teacher is not None:
                    with torch.no_grad():
                        soft = teacher(x)
                    loss = (1 - kd.weight) * loss + kd.weight * distill_loss(
                        logits, soft, t, tmeta, cfg.model.mode, kd.temperature)
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
                         "val_metrics": val_metrics, "quant_signature": quant_signature(model),
                         "init_from": state.get("init_from"),
                         "distill": state.get("distill")},
                        run_dir / "best.pt")
        else:
            state["bad_epochs"] += 1
        atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                     "rng": _rng_state(gen), "state": state, "quant_stats": _stats_state(model),
                     "quant_signature": quant_signature(model), "config": cfg.to_dict()}, last)
        epochs_this_call += 1
        log(f"{cfg.name} epoch {epoch}: loss {row['train_loss']:.4f} val mean acc {score:.4f} "
            + " ".join(f"{k}={v['accuracy']:.3f}" for k, v in val_metrics.items())
            + f" ({row['seconds']}s{run_eta(time.time() - t_call, epochs_this_call, state, cfg)})")
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            return {"stopped_early_for_test": True, "epoch": epoch}

    write_json(state["history"], run_dir / "history.json")
    plot_curves(state["history"], str(run_dir / "curves.png"))
    # best.pt is final now; a finished run resumed without (or with a stale) calibration gets one
    try:
        current = calibration.is_current(run_dir, calibration.read(run_dir))
    except calibration.CalibrationError:  # unusable file: replaced below
        current = False
    if not current:
        calibrate_run(run_dir, data=data, device=device, log=log)
    return {"run_dir": str(run_dir), "epochs": state["epoch"], "best_val_mean_acc": state["best"]}


def run_eta(seconds: float, epochs_done: int, state: dict, cfg) -> str:
    """"; run ETA 2m10s (6 more epochs at most)" from this call's mean epoch time; early
    stopping (patience) may end the run sooner. Empty when the run is done."""
    left = cfg.train.epochs - state["epoch"]
    if left <= 0 or state["bad_epochs"] >= cfg.train.patience:
        return ""
    eta = int(round(seconds / epochs_done * left))
    return f"; run ETA {eta // 60}m{eta % 60:02d}s for {left} more epoch{'s' * (left > 1)} at most"


def load_run(run_dir, which="best", device="cpu"):
    """Rebuild the model of a run from its checkpoint; returns (model, cfg)."""
    return load_checkpoint(Path(run_dir) / f"{which}.pt", device)


def load_checkpoint(path, device="cpu"):
    """-> (model in eval mode, RunConfig) from a best.pt/last.pt checkpoint. The weights must fit
    the config stored with them (keys, shapes, quantization bit widths) or it is an error."""
    path = Path(path)
    fix = ("retrain the run (medzoo train CONFIG --restart) or restore the file from a copy")
    model, cfg = model_of_checkpoint(read_checkpoint(path, fix), path, fix)
    model.to(device).eval()
    return model, cfg


def model_of_checkpoint(ck: dict, path, fix: str):
    """(model, RunConfig) of a checkpoint read by read_checkpoint."""
    if not isinstance(ck["config"], dict):
        raise CheckpointError(f"{path}: its stored config is not a mapping; {fix}")
    cfg = config_from_dict(stored_run_config(ck["config"]), f"{path} (stored config)")
    model = build_model(cfg.model, tasks_of(cfg), cfg.data.size)
    _load_model_state(model, ck, path, fix)
    return model, cfg


def check_config_matches_run(cfg: RunConfig, source: str, which="best") -> Path:
    """`medzoo evaluate/export CONFIG` uses the run's checkpoint: refuse when the config's
    model/data fields (data.root aside: where the files live) differ from what the checkpoint
    was trained with. Returns the checkpoint path."""
    path = cfg.run_dir / f"{which}.pt"
    ck = read_checkpoint(path, "retrain the run (medzoo train CONFIG --restart)")
    stored = _normalized(ck["config"])
    stored = stored if isinstance(stored, dict) else {}
    mine = cfg.to_dict()
    diff = [f for sec in ("model", "data")
            for f in config_diff({sec: stored.get(sec) or {}}, {sec: mine[sec]})
            if f != "data.root"]
    if diff:
        shown = ", ".join(f"{f} ({_get(stored, f)!r} in the checkpoint, {_get(mine, f)!r} in "
                          f"the config)" for f in diff[:4])
        raise ConfigError(f"{source}: differs from the config {path} was trained with: {shown}; "
                          f"retrain (medzoo train {source} --restart) or pass the run directory "
                          f"{cfg.run_dir} to use the checkpoint as trained")
    return path


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d.get(k) if isinstance(d, dict) else None
    return d


def calibrate_run(run_dir, data=None, device="cpu", log=print) -> dict:
    """Fit the per-task decisions on the validation split with the run's best.pt and write
    ``calibration.json`` (see ``calibration``)."""
    run_dir = Path(run_dir)
    sha = sha256_file(run_dir / "best.pt")  # before loading: the calibration is of these bytes
    model, cfg = load_run(run_dir, device=device)
    data = data or load_data(cfg)
    if "val" not in data or len(data["val"]) == 0:
        raise calibration.CalibrationError(f"{run_dir}: no validation split to fit the "
                                           "decisions on")
    val = data["val"]
    tasks = calibration.fit(predict(model, val.images, device), val.labels, val.task_ids,
                            model.tasks_meta)
    out = calibration.write(run_dir, tasks, sha)
    log(f"{cfg.name}: decisions fitted on val -> {run_dir / calibration.FILE}: " + ", ".join(
        f"{n} T={t['decision']['temperature']:.3g}" + (
            "" if t["decision"]["threshold"] is None else f" thr={t['decision']['threshold']:.3g}")
        for n, t in tasks.items()))
    return out


def run_decisions(run_dir, data=None, device="cpu", log=print) -> dict | None:
    """{task: decision} of the run's best.pt, or None when the run has no calibration.json (a
    run trained before calibration existed: T = 1 and argmax). A calibration fitted to another
    best.pt is never used: it is refitted here, on the run's validation split, and said so."""
    cal = calibration.read(run_dir)
    if cal is None:
        return None
    if not calibration.is_current(run_dir, cal):
        log(f"note: {Path(run_dir) / calibration.FILE} was fitted to another best.pt (sha256 "
            f"{str(cal.get('checkpoint_sha256'))[:12]}...); refitting it on val")
        cal = calibrate_run(run_dir, data=data, device=device, log=log)
    return {name: t["decision"] for name, t in cal["tasks"].items()}


def evaluate_run(run_dir, split="val", data=None, write=True, device="cpu",
                 log=print) -> dict:
    """Per-task metrics of a run's best checkpoint on one split, of the labels the board gives
    (the run's calibration.json: temperature, binary thresholds; none: T = 1 and argmax);
    writes JSON (with the plain argmax metrics under "argmax") and PNGs."""
    model, cfg = load_run(run_dir, device=device)
    data = data or load_data(cfg)
    if split not in data:
        raise ValueError(f"split {split!r} not available; have {sorted(data)}")
    decisions = run_decisions(run_dir, data, device, log)
    metrics, logits = evaluate_split(model, data[split], model.tasks_meta, cfg.model.mode,
                                     device, decisions)
    if write:
        s = data[split]
        plain = multitask_metrics(logits, s.labels, s.task_ids, model.tasks_meta,
                                  cfg.model.mode)
        out = Path(run_dir) / f"eval_{split}"
        out.mkdir(exist_ok=True)
        write_json({"run": cfg.name, "split": split, "metrics": metrics, "argmax": plain,
                    "decisions": decisions}, out / "metrics.json")
        for task, m in metrics.items():
            classes = next(t["classes"] for t in model.tasks_meta if t["name"] == task)
            plot_confusion(m["confusion_matrix"], classes, f"{cfg.name} {task} ({split})",
                           str(out / f"confusion_{task}.png"))
    return metrics
