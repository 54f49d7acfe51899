"""All-output verification of every build stage on real test images.

Stages, named after the step that runs them (in build order): load_model_brevitas (the
Brevitas module) -> load_model (the QONNX export) -> qonnx_to_finn -> tidy_up -> streamline
-> minimize_datatypes (HW layers) -> insert_dwc_fifo (the folded partition). Every stage is
run on the same N images per task and ALL outputs (every task's logits) are compared:

- reference logits: the exported QONNX model (what the build starts from);
- reference integer accumulators: the streamlined model's input to the host ops (the
  tensor that later is the dataflow partition's output);
- integer stages (streamline, minimize_datatypes, insert_dwc_fifo) must reproduce the
  accumulators exactly; their logits are the host ops (recorded JSON, applied with numpy) of
  those accumulators;
- float stages (load_model_brevitas ... tidy_up) must give logits that map back through
  the inverse host ops to the same integers (within 0.25 of an accumulator LSB); an image
  where a float32 stage rounded an activation at a quantizer boundary the other way is
  accepted only when ``float64_ref.explain`` reproduces both the stage's result and the
  reference with a few boundary flips in a float64 execution of the model (recorded as
  ``boundary_flip_images``; ``mismatches`` counts what is not explained).

A mismatch raises ``VerificationError`` naming the stage, the image indices (with task)
and the output indices that differ; ``verification.json`` holds everything.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from . import host_ops
from .errors import VerificationError


# Stages are named after the step that runs them (load_model runs two: the QONNX reference
# and the Brevitas module); zynq_*: finn_build.bitstream (Vivado / Vitis HLS).
STAGES = ("load_model_brevitas", "load_model", "qonnx_to_finn", "tidy_up", "streamline",
          "minimize_datatypes", "insert_dwc_fifo", "rtlsim", "zynq_hls_ipgen", "zynq_stitch")
FLOAT_STAGES = STAGES[:4]  # re-checked against the integer reference after streamline
INTEGER_STAGES = STAGES[4:]


def step_of(stage: str) -> str:
    return "load_model" if stage == "load_model_brevitas" else stage


class Verifier:
    """Holds the verification images, references and per-stage results of one build;
    persisted under ``<build>/verification/`` so a resumed build continues with them."""

    def __init__(self, vdir: Path, meta: dict):
        self.vdir = Path(vdir)
        self.vdir.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.results: dict = {}
        self.inputs = None  # float32 NCHW [N, C, H, W]
        self.image_info: list = []
        rfile = self.vdir / "results.json"
        if rfile.exists():
            d = json.loads(rfile.read_text())
            self.results = d.get("stages", {})
            self.image_info = d.get("images", [])
        if (self.vdir / "inputs.npz").exists():
            self.inputs = np.load(self.vdir / "inputs.npz")["x"]

    # ------------------------------------------------------------------ data
    def prepare_inputs(self, vcfg, data_files: dict):
        _, c, h, w = self.meta["input"]["shape"]
        from brevitas_models.export import sha256_file

        from .data import load_images

        xs, info = [], []
        for task in self.meta["tasks"]:
            t = task["name"]
            # as the model was trained: a model without "preprocess" was trained without any
            imgs, labels, src = load_images(task, vcfg.split, vcfg.images_per_task, h, c,
                                            vcfg.data_root, seed=vcfg.seed,
                                            preprocess=task.get("preprocess") or {})
            if src not in data_files:
                data_files[src] = sha256_file(src)
            xs.append(imgs.transpose(0, 3, 1, 2).astype(np.float32))
            info += [{"task": t, "label": int(lbl), "source": Path(src).name, "i": j}
                     for j, lbl in enumerate(labels)]
        self.inputs = np.concatenate(xs)
        self.image_info = info
        np.savez_compressed(self.vdir / "inputs.npz", x=self.inputs)
        self.save()

    @property
    def reference_model_path(self) -> Path:
        """The cleaned QONNX the ``qonnx`` stage ran (float64 arbiter of float stages)."""
        return self.vdir / "qonnx_reference.onnx"

    def _explain_boundary(self, imgs, logits, ref_l, ref_acc, host, logit_tol) -> dict:
        """{image: record} of the images whose difference is a float32 rounding flip at a
        quantizer boundary (see ``float64_ref``); the others are left out."""
        from qonnx.core.modelwrapper import ModelWrapper

        from . import float64_ref

        if not self.reference_model_path.exists() or self.inputs is None:
            return {}
        model = ModelWrapper(str(self.reference_model_path))
        memo = self.__dict__.setdefault("_explained", {})  # stages share targets
        integer = ref_acc is not None and host is not None

        def explain(i, target, tol):
            key = (int(i), integer, np.asarray(target).tobytes())
            if key not in memo:
                if integer:  # compare integers, through the inverse host ops
                    def dist(y):
                        return float(np.abs(host_ops.invert_post(host, y[None])[0] - target).max())
                else:
                    def dist(y):
                        return float(np.abs(y - target).max())
                memo[key] = float64_ref.explain(model, self.inputs[i: i + 1], dist, tol)
            return memo[key]

        out = {}
        for i in imgs:
            if integer:
                e_stage = explain(i, host_ops.invert_post(host, logits[i: i + 1])[0], 0.25)
                e_ref = explain(i, ref_acc[i], 0.25)
            else:
                e_stage = explain(i, logits[i], logit_tol)
                e_ref = explain(i, ref_l[i], logit_tol)
            if e_stage["explained"] and e_ref["explained"]:
                out[int(i)] = {"index": int(i), "task": self.image_info[i].get("task")
                               if i < len(self.image_info) else None,
                               "stage_flips": e_stage["flips"],
                               "reference_flips": e_ref["flips"]}
        return out

    def _load(self, name):
        p = self.vdir / f"{name}.npz"
        return dict(np.load(p)) if p.exists() else None

    def _store(self, name, **arrays):
        np.savez_compressed(self.vdir / f"{name}.npz", **arrays)

    def save(self):
        (self.vdir / "results.json").write_text(json.dumps(
            {"stages": self.results, "images": self.image_info}, indent=1))

    # ------------------------------------------------------------------ running
    def run_torch(self, model) -> np.ndarray:
        import torch

        with torch.no_grad():
            outs = [model(torch.from_numpy(b)).detach().numpy()
                    for b in np.array_split(self.inputs, max(1, len(self.inputs) // 64))]
        return np.concatenate(outs).astype(np.float32)

    def run_onnx(self, model, acc_tensor: str | None = None):
        from finn.core.onnx_exec import execute_onnx

        iname = model.graph.input[0].name
        oname = model.graph.output[0].name
        ishape = model.get_tensor_shape(iname)
        logits, accs = [], []
        for x in self.inputs:
            ctx = execute_onnx(model, {iname: x.reshape(ishape)},
                               acc_tensor is not None)
            logits.append(np.asarray(ctx[oname]).reshape(-1))
            if acc_tensor is not None:
                accs.append(np.asarray(ctx[acc_tensor]).reshape(-1))
        return np.stack(logits).astype(np.float32), (np.stack(accs) if accs else None)

    def run_dataflow(self, child, host: dict):
        """Dataflow partition (python exec) between the host ops from the JSON record."""
        from finn.core.onnx_exec import execute_onnx

        iname = child.graph.input[0].name
        oname = child.graph.output[0].name
        ishape = child.get_tensor_shape(iname)
        accs = []
        for x in self.inputs:
            xd = host_ops.apply_pre(host, x[None]).reshape(ishape)
            if not np.array_equal(xd, np.round(xd)):
                raise ValueError("dataflow input is not integer after the host pre-ops")
            out = execute_onnx(child, {iname: xd.astype(np.float32)})[oname]
            accs.append(np.asarray(out).reshape(-1))
        acc = np.stack(accs)
        logits = np.stack([host_ops.apply_post(host, a[None]).reshape(-1) for a in acc])
        return logits.astype(np.float32), acc

    # ------------------------------------------------------------------ comparing
    def _outputs_to_tasks(self, outs) -> list:
        names = []
        for t in self.meta["tasks"]:
            s = t.get("slice")
            if s and any(s[0] <= o < s[1] for o in outs):
                names.append(t["name"])
        return names

    def _img_desc(self, idx) -> list:
        out = []
        for i in idx:
            inf = self.image_info[i] if i < len(self.image_info) else {}
            out.append({"index": int(i), "task": inf.get("task"), "task_index": inf.get("i")})
        return out

    def _argmax_agree(self, a, b) -> float:
        agree = []
        for t in self.meta["tasks"]:
            s = t.get("slice")
            if not s:
                continue
            agree.append(np.argmax(a[:, s[0]:s[1]], 1) == np.argmax(b[:, s[0]:s[1]], 1))
        return float(np.mean(np.concatenate(agree))) if agree else float("nan")

    def check(self, stage: str, logits: np.ndarray, acc: np.ndarray | None = None,
              host: dict | None = None, seconds: float = 0.0, raise_on_fail: bool = True) -> dict:
        """Compare one stage against the references and record it (raise on mismatch). The
        first logits / accumulators checked become the references."""
        defined = []  # the first stage checked defines the references
        ref = self._load("ref_logits")
        if ref is None:
            self._store("ref_logits", logits=logits)
            ref, defined = {"logits": logits}, ["logits"]
        ref_acc = self._load("ref_acc")
        if ref_acc is None and acc is not None:
            self._store("ref_acc", acc=np.asarray(acc, np.float64))
            ref_acc, defined = {"acc": np.asarray(acc, np.float64)}, defined + ["acc"]
        ref_l, ref_acc = ref["logits"], (ref_acc["acc"] if ref_acc is not None else None)
        self._store(f"stage_{stage}", logits=logits, **({"acc": acc} if acc is not None else {}))
        rec = {"stage": stage, "step": step_of(stage), "n_images": int(len(logits)),
               "n_outputs": int(logits.shape[1]), "seconds": round(seconds, 2)}
        dl = np.abs(logits.astype(np.float64) - ref_l)
        rec["max_abs_logit_diff"] = float(dl.max())
        rec["argmax_agreement"] = self._argmax_agree(logits, ref_l)
        if acc is not None:
            bad = self._compare_integer(rec, np.asarray(acc, np.float64), ref_acc)
        else:
            bad = self._compare_float(rec, logits, dl, ref_l, ref_acc, host)
            if bad.any():
                self._accept_boundary_flips(rec, bad, logits, ref_l, ref_acc, host)
        imgs = np.flatnonzero(bad.any(1))
        outs = np.flatnonzero(bad.any(0))
        rec["status"] = "pass" if len(imgs) == 0 else "fail"
        rec["mismatches"] = int(bad.sum())
        rec["mismatch_images"] = [int(i) for i in imgs]
        rec["mismatch_image_details"] = self._img_desc(imgs[:50])
        rec["mismatch_outputs"] = [int(o) for o in outs]
        rec["mismatch_tasks"] = self._outputs_to_tasks(outs)
        if defined:
            rec["reference"] = " ".join(defined)
        self.results[stage] = rec
        self.save()
        if rec["status"] == "fail" and raise_on_fail:
            raise VerificationError(stage, rec)
        return rec

    @staticmethod
    def _compare_integer(rec, acc, ref_acc) -> np.ndarray:
        """Integer stage: its accumulators must equal the reference exactly (and be integers)."""
        rec["kind"] = "integer"
        rec["acc_is_integer"] = bool(np.array_equal(acc, np.round(acc)))
        da = np.abs(acc - ref_acc)
        rec["max_abs_acc_diff"] = float(da.max())
        bad = da > 0
        if not rec["acc_is_integer"]:
            bad |= np.abs(acc - np.round(acc)) > 0
        return bad

    @staticmethod
    def _compare_float(rec, logits, dl, ref_l, ref_acc, host) -> np.ndarray:
        """Float stage: once the host ops are known, its logits mapped back through the inverse
        host ops must give the integer reference (within 0.25 LSB); before, the logits must
        agree with the reference logits to 1e-4 relative (re-checked after streamlining)."""
        rec["kind"] = "float"
        bad = np.zeros(logits.shape, bool)
        if host is not None and ref_acc is not None:
            affine = host_ops.affine_of(host, logits.shape[1])
            if affine is not None:
                tol = 0.25 * np.abs(affine[0])  # a quarter of one accumulator LSB, per output
                bad |= dl > tol[None, :]
                rec["logit_tolerance"] = "0.25 accumulator LSB per output"
                da = np.abs(host_ops.invert_post(host, logits) - ref_acc)
                rec["max_abs_acc_diff"] = float(da.max())
                rec["acc_recovered_from_logits"] = True
                bad |= da > 0.25
        else:
            tol = 1e-4 * max(1.0, float(np.abs(ref_l).max()))
            bad |= dl > tol
            rec["logit_tolerance"] = f"abs {tol:.3g} (host ops not known yet; re-checked " \
                                     "against the integer reference after streamlining)"
        return bad

    def _accept_boundary_flips(self, rec, bad, logits, ref_l, ref_acc, host):
        """Clear the images of ``bad`` whose difference is a float32 rounding flip at a
        quantizer boundary (``float64_ref`` reproduces both the stage and the reference)."""
        flips = self._explain_boundary(np.flatnonzero(bad.any(1)), logits, ref_l, ref_acc,
                                       host, 1e-5 * max(1.0, float(np.abs(ref_l).max())))
        if flips:
            rec["boundary_flip_images"] = list(flips.values())
            rec["boundary_flip_note"] = (
                "differences explained by float32 rounding at quantizer boundaries: a "
                "float64 execution of the model with the listed activations rounded the "
                "other way ([node index, element, distance to the boundary in steps]) "
                "reproduces both this stage and the reference")
            bad[list(flips)] = False

    def recheck_float_stages(self, host: dict):
        """Once the host ops and the integer reference are known, re-check the float
        stages that ran before (integer-exact through the inverse host ops)."""
        for st in FLOAT_STAGES:
            if st not in self.results or self.results[st].get("status") == "skipped":
                continue
            d = self._load(f"stage_{st}")
            if d is None:
                continue
            prev = self.results[st]
            rec = self.check(st, d["logits"], None, host, prev.get("seconds", 0),
                             raise_on_fail=False)
            rec["rechecked_after"] = "streamline"
            self.results[st] = rec
            self.save()
            if rec["status"] == "fail":
                raise VerificationError(st, rec)

    def skip(self, stage: str, why: str):
        self.results[stage] = {"stage": stage, "step": step_of(stage), "status": "skipped",
                               "why": why}
        self.save()

    def summary(self) -> dict:
        ordered = [self.results[s] for s in STAGES if s in self.results]
        verified = [r["stage"] for r in ordered if r.get("status") == "pass"]
        failed = [r["stage"] for r in ordered if r.get("status") == "fail"]
        return {"status": "fail" if failed else ("pass" if verified else "not run"),
                "verified_stages": verified, "failed_stages": failed,
                "mismatches": int(sum(r.get("mismatches", 0) for r in ordered)),
                "n_images": int(len(self.inputs)) if self.inputs is not None else 0,
                "images_per_task": {t["name"]: sum(1 for i in self.image_info
                                                   if i["task"] == t["name"])
                                    for t in self.meta["tasks"]},
                "stages": ordered}


def time_call(fn, *a, **k):
    t = time.time()
    r = fn(*a, **k)
    return r, time.time() - t
