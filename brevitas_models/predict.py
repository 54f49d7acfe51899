"""`medzoo predict`: a run's model on image files, on the host (no board, no RTL simulation),
with the board CLI's ``classify`` output, line for line.

Each file becomes the model input exactly as the board runtime makes it (the same function,
``medimage.results.load_input``: decoded to the task's native channels, then
``medimage.to_model_input`` with the preprocessing the run was trained with); the label is the
board's decision (``medimage.decision``: softmax(logits / T), a binary task's threshold); the
rows, the JSON and the CSV are ``medimage.results``'s, which the board's ``classify`` writes
too. Two backends:

- ``pytorch`` (default): the run's ``best.pt`` in eval mode, batched (``train.predict``, the
  run's own evaluation path) with the decisions of its ``calibration.json``
  (``train.run_decisions``: refitted on val when it belongs to another best.pt; none: T = 1
  and argmax). ``--with-acc``: the Brevitas integer accumulators of the last layer
  (``int_outputs``), the numbers the accelerator produces.
- ``qonnx``: the run's exported QONNX (``<run>/export/model.onnx`` + ``model.meta.json``, what
  `medzoo export` writes and a FINN build starts from) run by qonnx's executor on the uint8
  pixels: its output less the meta's class bias, over the meta's output scale, is the integer
  accumulators (checked to sit on integers), then the host post-ops ``acc * scale + bias`` in
  float32 -> logits -> the decisions recorded in the export (what a deploy package carries).
  A missing export is an error telling the user to run `medzoo export RUN_DIR` (an export
  needs the data set for its check and writes into the run; predict only reads), and so is an
  export of another best.pt.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from medimage import ImageError, Preprocess
from medimage import results

BACKENDS = ("pytorch", "qonnx")


class PredictError(ValueError):
    """A run that cannot be used for prediction: the message says what to do."""


def _run_dir(run_dir) -> Path:
    p = Path(run_dir)
    if not p.is_dir():
        raise PredictError(f"{p}: no such run directory; pass the directory `medzoo train` "
                           "wrote (<out_dir>/<name>, holding best.pt)")
    if not (p / "best.pt").is_file():
        raise PredictError(f"{p / 'best.pt'} not found: not a trained run; train it first "
                           "(medzoo train CONFIG)")
    return p


def run_tasks(model, cfg, decisions=None, preprocess=None) -> list[dict]:
    """The run's tasks as the board's metadata describes them: name, classes, slice,
    negative_class, native_channels, source_format, native_size, preprocess (as trained) and
    decision (when there is one)."""
    from .train import tasks_of

    specs = {s.name: s for s in tasks_of(cfg)}
    pre = preprocess if preprocess is not None else {
        t: p.model_dump() for t, p in cfg.data.preprocess.items()}
    out = []
    for t in model.tasks_meta:
        spec = specs[t["name"]]
        entry = {"name": t["name"], "classes": list(t["classes"]), "slice": list(t["slice"]),
                 "negative_class": t.get("negative_class"), "native_channels": spec.channels,
                 "source_format": spec.fmt, "native_size": spec.size,
                 "preprocess": Preprocess.from_dict(pre.get(t["name"])).to_dict()}
        if (decisions or {}).get(t["name"]) is not None:
            entry["decision"] = decisions[t["name"]]
        out.append(entry)
    return out


def _on_grid(acc: np.ndarray, what: str) -> np.ndarray:
    """Float accumulators -> int64; they must sit on integers."""
    off = float(np.abs(acc - np.rint(acc)).max()) if acc.size else 0.0
    if off > 1e-2:
        raise PredictError(f"{what}: the accumulators are not integers (off by {off:.3g}): "
                           "the output scale does not fit the model; export the run again "
                           "(medzoo export RUN_DIR)")
    return np.rint(acc).astype(np.int64)


class Predictor:
    """A run's model on uint8 NHWC inputs -> all outputs' logits (and accumulators)."""

    def __init__(self, run_dir, backend: str = "pytorch", log=print):
        from .files import sha256_file
        from .train import load_run, run_decisions

        if backend not in BACKENDS:
            raise PredictError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
        self.run_dir = _run_dir(run_dir)
        self.backend = backend
        self.model, self.cfg = load_run(self.run_dir)
        self.size = self.model.input_size
        self.channels = self.model.cfg.in_channels
        self.quantized = self.model.cfg.w_bits is not None
        if backend == "pytorch":
            self.source = str(self.run_dir / "best.pt")
            self.tasks = run_tasks(self.model, self.cfg, run_decisions(self.run_dir, log=log))
            return
        exp = self.run_dir / "export"
        onnx, meta_file = exp / "model.onnx", exp / "model.meta.json"
        if not (onnx.is_file() and meta_file.is_file()):
            raise PredictError(f"{self.run_dir}: no QONNX export ({exp}/model.onnx + "
                               f"model.meta.json); export it first: medzoo export {self.run_dir}")
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError as e:
            raise PredictError(f"{meta_file} is not valid JSON ({e}); export again: medzoo "
                               f"export {self.run_dir}") from None
        best = sha256_file(self.run_dir / "best.pt")
        if meta.get("checkpoint_sha256") != best:
            raise PredictError(f"{onnx} is the export of another best.pt (best.pt changed "
                               "since it was exported); export again: medzoo export "
                               f"{self.run_dir}")
        if meta.get("qonnx_sha256") not in (None, sha256_file(onnx)):
            raise PredictError(f"{onnx} is not the file {meta_file} describes; export again: "
                               f"medzoo export {self.run_dir}")
        names = [t["name"] for t in self.model.tasks_meta]
        by_name = {t["name"]: t for t in meta.get("tasks", [])}
        if sorted(by_name) != sorted(names) or any(
                list(by_name[n]["slice"]) != list(t["slice"])
                for n, t in zip(names, self.model.tasks_meta)):
            raise PredictError(f"{meta_file}: its tasks differ from the run's ({names}); export "
                               f"again: medzoo export {self.run_dir}")
        # the export's decisions and preprocessing: what a deploy package of it carries
        self.tasks = run_tasks(self.model, self.cfg,
                               {n: t.get("decision") for n, t in by_name.items()},
                               {n: t.get("preprocess") or {} for n, t in by_name.items()})
        self.source = str(onnx)
        self.meta = meta
        host = meta.get("host", {})
        self.bias = np.asarray(host.get("class_bias", np.zeros(self.model.num_outputs)),
                               np.float32)
        self.scale = (np.asarray(host["output_scale"], np.float32)
                      if "output_scale" in host else None)
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.cleanup import cleanup_model

        self._qonnx = cleanup_model(ModelWrapper(str(onnx)))

    def task(self, name=None) -> dict:
        return results.pick_task(self.tasks, name)

    def load(self, path, task: dict) -> np.ndarray:
        """A file -> the model's uint8 HxWxC input (the board runtime's function)."""
        return results.load_input(path, task, self.size, self.channels)

    def check_with_acc(self):
        if not self.quantized:
            raise PredictError("--with-acc: this run's model is float (model.w_bits null): it "
                               "has no integer accumulators; leave out --with-acc")

    def outputs(self, x_nhwc: np.ndarray, with_acc: bool = False) -> tuple:
        """uint8 NHWC -> (float32 logits [n, all outputs], int64 accumulators or None)."""
        if with_acc:
            self.check_with_acc()
        if self.backend == "pytorch":
            import torch

            from .train import predict

            logits = predict(self.model, x_nhwc, "cpu").astype(np.float32)
            acc = None
            if with_acc:
                x = torch.from_numpy(np.ascontiguousarray(x_nhwc)).permute(0, 3, 1, 2).float()
                acc = _on_grid(self.model.int_outputs(x).numpy().astype(np.float64),
                               self.source)
            return logits, acc
        from qonnx.core.onnx_exec import execute_onnx

        mw = self._qonnx
        iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
        nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)).astype(np.float32)
        out = np.concatenate([execute_onnx(mw, {iname: nchw[i:i + 1]})[oname]
                              for i in range(len(nchw))]).reshape(len(nchw), -1)
        if self.scale is None:  # a float model: the QONNX output is the logits
            return out.astype(np.float32), None
        acc = _on_grid((out.astype(np.float64) - self.bias) / self.scale, self.source)
        # the host post-ops of a build, float32 as on the board: acc * scale + bias
        logits = (acc.astype(np.float32) * self.scale).astype(np.float32)
        logits = (logits + self.bias).astype(np.float32)
        return logits, (acc if with_acc else None)

    def rows(self, x_nhwc, task: dict, names, with_acc: bool = False) -> list:
        logits, acc = self.outputs(x_nhwc, with_acc)
        return results.result_rows(task, logits, names, acc)


def predict_files(run_dir, inputs, task=None, backend="pytorch", fmt="json", out=None,
                  recursive=False, with_acc=False, chunk=256, strict=False, log=print,
                  note=print) -> int:
    """`medzoo predict`: -> exit code (0 ok, 1 some inputs could not be read). Writes the
    rendered rows to ``out`` (None: stdout); user errors raise ValueError subclasses."""
    results.check_out(out)
    p = Predictor(run_dir, backend, log)
    t = p.task(task)
    files, skipped = results.expand(inputs, recursive)
    if skipped:
        note(f"note: {results.skipped_note(skipped)}")
    if with_acc:
        p.check_with_acc()
    t0 = time.time()
    res = results.classify_files(files, lambda f: p.load(f, t),
                                 lambda x, names: p.rows(x, t, names, with_acc), chunk, strict,
                                 t["name"], (ImageError,))
    head = {"run": p.cfg.name, "run_dir": str(p.run_dir), **results.header(
        t, res, skipped, time.time() - t0), "backend": backend, "model": p.source}
    results.write(results.render(res, t["classes"], fmt, head), out)
    bad = results.failed_note(res)
    if bad:
        note(f"medzoo: error: {bad}")
        return 1
    return 0
