"""HOST ONLY — ``make deploy-package CONFIG=build_configs/X.yaml``: one archive per build.

``python -m deploy.host.package --config X.yaml [--build-dir DIR] [--out-dir build/deploy]``
writes ``<out-dir>/<name>.tar.gz`` (temp name, then renamed) holding ``<name>/``:

- ``metadata.json``: host ops, tasks (slices, class names, how training prepared their
  images, the decision fitted on validation: temperature and binary threshold, the task's
  declaration as the run stored it: ``task``, read from the build's ``model.meta.json``, so
  a run trained on a user's own task packages like a built-in one), model input,
  the DMA tensors (FINN datatype, normal/folded/packed shape, stream width, IODMA name, as
  FINN's driver generator computes them), performance figures;
- ``bitfile/<name>.bit`` + ``.hwh`` when the build has them (a Vivado build); otherwise
  ``metadata.bitfile`` is null and both READMEs say so;
- ``deploy/pynq/`` and ``medimage/``: the runtime and the conventions it shares with training
  (image input, decision rule; numpy + Pillow, ``pynq`` on the board; nothing of
  ``deploy/host/``);
- ``samples/<task>/NN_<class>.png``: real test images of every class of every task (native
  channels; up to ``--images-per-class`` of the build's verification images of each class, a
  class the build verified none of: its first image of the verification split, see
  ``make_samples``) and ``samples/expected.json``: their true labels and expected
  accumulators, logits and labels from the build's python golden
  (``verification/stage_insert_dwc_fifo.npz``);
- ``README.md``: the short board README (``docs/board_guide.md`` is the full guide).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

import numpy as np

import medimage
from deploy.pynq import host_ops
from deploy.pynq import inputs as runtime_inputs
from deploy.pynq.runtime import FORMAT, DeployError

from .sim_overlay import partition_model_path, sha256

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What ships to the board: the runtime and the conventions it imports (images, decision rule).
SHIPPED = ("deploy/pynq", "medimage")


def _dma_tensor(model, tensor: str, first: bool, name: str) -> dict:
    """FINN driver shapes of a partition input/output (as ``finn.util.basic.get_driver_shapes``:
    folded shape of the first/last node, packed shape of a dummy tensor)."""
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.basic import gen_finn_dt_tensor

    from finn.util.data_packing import finnpy_to_packed_bytearray

    node = model.find_consumer(tensor) if first else model.find_producer(tensor)
    inst = getCustomOp(node)
    folded = inst.get_folded_input_shape() if first else inst.get_folded_output_shape()
    width = inst.get_instream_width_padded() if first else inst.get_outstream_width_padded()
    dt = model.get_tensor_datatype(tensor)
    packed = finnpy_to_packed_bytearray(gen_finn_dt_tensor(dt, folded), dt).shape
    if packed[-1] * 8 != int(width):
        raise DeployError(f"{tensor}: packed beat of {packed[-1]} bytes != stream width {width}")
    return {"name": name, "tensor": tensor, "dtype": dt.name,
            "shape_normal": [int(d) for d in model.get_tensor_shape(tensor)],
            "shape_folded": [int(d) for d in folded], "shape_packed": [int(d) for d in packed],
            "stream_width": int(width), "bytes_per_image": int(np.prod(packed[1:]))}


def check_zynq_shell(build_dir: Path, dma: dict):
    """When the build has FINN's Zynq shell (``bitstream/zynq_parent.onnx``: IODMAs inserted
    and partitioned by finn_build's bitstream flow), the DMA tensors must be what FINN's own
    driver generator (``get_driver_shapes``) reads from it; takes the IODMA instance names
    from it once Vivado has named them. -> the file checked, or None."""
    from qonnx.core.modelwrapper import ModelWrapper

    from finn.util.basic import get_driver_shapes

    p = Path(build_dir) / "bitstream" / "zynq_parent.onnx"
    if not p.is_file():
        return None
    ds = get_driver_shapes(ModelWrapper(str(p)))
    for key, side in (("i", "input"), ("o", "output")):
        d = dma[side]
        want = {"dtype": ds[f"{key}dt"][0].split("'")[1],
                "shape_normal": list(ds[f"{key}shape_normal"][0]),
                "shape_folded": list(ds[f"{key}shape_folded"][0]),
                "shape_packed": list(ds[f"{key}shape_packed"][0])}
        got = {k: d[k] for k in want}
        if got != want:
            raise DeployError(f"{side} DMA tensor {got} differs from FINN's Zynq shell {p} "
                              f"{want}; rebuild the bitstream from this build")
        name = ds[f"{key}dma_names"][0]
        if name:
            d["name"] = name
    return str(p)


def find_bitfile(build_dir: Path):
    """The build's .bit (FINN's Zynq flow: ``bitstream/bitfile/finn-accel.bit``), or None."""
    for d in ("bitstream/bitfile", "bitfile"):
        found = sorted((Path(build_dir) / d).glob("*.bit"))
        if found:
            return found[0]
    return None


def make_metadata(build_dir: Path, cfg) -> dict:
    from finn_build.finn_env import ensure_finn_env

    ensure_finn_env()
    from qonnx.core.modelwrapper import ModelWrapper

    from finn_build.data import task_spec

    b = Path(build_dir)
    onnx = partition_model_path(b)
    host = json.loads((b / "host_ops.json").read_text())
    meta = json.loads((b / "model" / "model.meta.json").read_text())
    rep = json.loads((b / "build_report.json").read_text())
    with warnings.catch_warnings():  # brevitas warns about an optional package at import
        warnings.simplefilter("ignore")
        from finn_build.steps import STEP_NAMES

    failed = rep.get("failed_step")
    if rep.get("status") != "ok" and (failed is None or failed in STEP_NAMES):
        # (a failed step of the later bitstream flow leaves the dataflow build usable)
        raise DeployError(f"{b}: the build did not finish (status {rep.get('status')!r}, failed "
                          f"step {failed!r}); fix and rerun `make build`")
    model = ModelWrapper(str(onnx))
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise DeployError("the runtime drives one input and one output DMA; the partition has "
                          f"{len(model.graph.input)} inputs, {len(model.graph.output)} outputs")
    tasks = []
    for t in meta["tasks"]:
        # the task as the model's metadata declares it (older metadata: a built-in task)
        spec = task_spec(t)
        pre = medimage.Preprocess.from_dict(t.get("preprocess")).to_dict()
        tasks.append({"name": t["name"], "classes": list(t["classes"]), "slice": t["slice"],
                      "negative_class": t.get("negative_class"),
                      "native_channels": spec.channels, "source_format": spec.fmt,
                      "native_size": spec.size,
                      # as trained; absent in the model's metadata: trained without any
                      "preprocess": pre, "task": dict(spec.to_dict(), preprocess=pre)})
    for t, entry in zip(meta["tasks"], tasks):  # the decision fitted on validation, if any
        if t.get("decision") is not None:
            try:
                medimage.decision.check(t["decision"], len(entry["classes"]))
            except ValueError as e:
                raise DeployError(f"{b}/model/model.meta.json: task {t['name']}: {e}; export "
                                  "the run again (medzoo export) and rebuild") from None
            entry["decision"] = t["decision"]
    bit = find_bitfile(b)
    es = rep.get("estimates", {})
    dma = {"input": _dma_tensor(model, model.graph.input[0].name, True, "idma0"),
           "output": _dma_tensor(model, model.graph.output[0].name, False, "odma0"),
           "registers": {"ctrl": 0x00, "addr_lo": 0x10, "addr_hi": 0x14, "reps": 0x1C}}
    dma["checked_against_zynq_shell"] = check_zynq_shell(b, dma)
    return {
        "format": FORMAT, "name": cfg.name, "board": cfg.board, "fpga_part": cfg.fpga_part,
        "clock_mhz": cfg.clock_mhz, "platform": "zynq-iodma",
        "bitfile": f"bitfile/{cfg.name}.bit" if bit else None,
        "hwh": f"bitfile/{cfg.name}.hwh" if bit else None,
        "bitfile_note": None if bit else (
            "this build was compiled and verified without Vivado (FINN all-RTL dataflow, "
            "Verilator RTL simulation); FINN's Zynq build with Vivado makes the .bit/.hwh"),
        "input": {"size": int(meta["input"]["size"]), "channels": int(meta["input"]["channels"]),
                  "dtype": "UINT8", "layout": "HxWxC uint8 pixels 0..255 -> NCHW float32 -> "
                                              "host pre ops -> input DMA"},
        "tasks": tasks, "num_outputs": int(meta["num_outputs"]),
        "host_ops": {"pre": host["pre"], "post": host["post"]},
        "dma": dma,
        "performance": {k: es.get(k) for k in (
            "max_cycles", "est_fps", "est_latency_us", "bottleneck", "fifo_depths",
            "measured_cycles_per_image", "measured_fps", "measured_latency_us",
            "rtlsim_cycles_per_image", "rtlsim_fps", "rtlsim_latency_us") if k in es},
        "build": {"dir": str(b.resolve()), "partition": onnx.name,
                  "partition_sha256": sha256(onnx)},
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def pick_samples(labels, n_classes: int, per_class: int) -> tuple[list, list]:
    """Which of a task's verification images go into the package.

    ``labels``: the true labels of the task's verification images, in verification order.
    -> (positions into ``labels``, ordered by class and then verification order: up to
    ``per_class`` of every class; classes with no verification image at all)."""
    labels = [int(x) for x in labels]
    picks, missing = [], []
    for c in range(n_classes):
        mine = [j for j, lab in enumerate(labels) if lab == c][:per_class]
        picks += mine
        if not mine:
            missing.append(c)
    return picks, missing


def python_golden(build_dir, host: dict, x_nchw: np.ndarray) -> tuple:
    """FINN's python execution of the build's folded dataflow partition between the host ops
    (as the build's ``insert_dwc_fifo`` verification stage) -> (acc [n, outputs], float32 logits)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from finn_build.rtlsim.flow import golden_context

    m = ModelWrapper(str(partition_model_path(build_dir)))
    oname = m.graph.output[0].name
    xd = [host_ops.apply_pre(host, np.asarray(x, np.float32)[None]) for x in x_nchw]
    acc = np.stack([np.asarray(c[oname]).reshape(-1) for c in golden_context(m, xd)])
    logits = np.stack([host_ops.apply_post(host, a[None]).reshape(-1) for a in acc])
    return acc, logits.astype(np.float32)


def make_samples(build_dir: Path, cfg, md: dict, per_class: int, root, data_dir=None,
                 log=None) -> dict:
    """Write ``samples/<task>/NN_<class>.png`` under ``root`` -> the expected.json dict.

    Selection (deterministic): per task, up to ``per_class`` of the build's verification
    images of every class (the build's draw: seeded, class-stratified, so a build with
    ``verify.images_per_task`` >= the number of classes verified every class), in class
    order. A class the build verified no image of (``images_per_task`` smaller than the
    number of classes, e.g. the tiny test builds) gets the first image of that class in the
    verification split, with its expected outputs from FINN's python execution of the same
    partition at packaging time (``"source": "split"``): a user expects a sample of every
    class, and the python golden is what the build's own expected outputs are; it is checked
    here to reproduce the build's golden on that task's verified samples."""
    from PIL import Image

    from finn_build.data import load_images

    log = log or (lambda msg: print(msg, file=sys.stderr))
    b = Path(build_dir)
    res = json.loads((b / "verification" / "results.json").read_text())
    info = res["images"]
    inputs = np.load(b / "verification" / "inputs.npz")["x"]  # NCHW float32
    gold = np.load(b / "verification" / "stage_insert_dwc_fifo.npz")
    rtl = b / "verification" / "stage_rtlsim.npz"
    rtl = np.load(rtl) if rtl.exists() else None
    rtl_images = [int(i) for i in rtl["images"]] if rtl is not None else []
    size, ch = md["input"]["size"], md["input"]["channels"]
    v = cfg.verify
    root_data = data_dir or v.data_root
    out = {"source": "the build's python golden: verification/stage_insert_dwc_fifo.npz (folded "
                     "dataflow partition, FINN python execution, + host ops); images with "
                     "\"source\": \"split\" (classes the build verified no image of): the same "
                     "partition, FINN python execution at packaging time",
           "selection": f"per task, up to {per_class} of the build's verification images of "
                        "every class; a class without one: its first image in the "
                        f"{v.split!r} split",
           "checked_against_rtlsim": rtl is not None, "images": []}
    for t in md["tasks"]:
        idx = [i for i, d in enumerate(info) if d["task"] == t["name"]]
        # The sample files hold the native pixels (no preprocessing): at the task's native size
        # where the runtime needs that grid (arrays; a crop, found on the native grid), else
        # at the model size (the runtime's resize to it is then the identity).
        on_grid = t["source_format"] == "npz" or t["preprocess"]["crop"]
        nat_size = t["native_size"] if on_grid else size
        nat, labels, _ = load_images(t, v.split, v.images_per_task, nat_size,
                                     t["native_channels"], root_data, seed=v.seed,
                                     preprocess={})
        if len(nat) != len(idx):
            raise DeployError(f"{t['name']}: {len(nat)} images from the data set, {len(idx)} in "
                              "the build's verification set; package with the build's data")
        for j, i in enumerate(idx):
            if int(labels[j]) != info[i]["label"]:
                raise DeployError(f"{t['name']} image {j}: label {int(labels[j])} != "
                                  f"verification label {info[i]['label']}; package with the "
                                  "build's data")
        # (png pixels at native size/channels, model input HxWxC uint8, acc, float32 logits,
        #  true label, entry fields)
        items = []
        picks, missing = pick_samples(labels, len(t["classes"]), per_class)
        for j in picks:
            i = idx[j]
            acc = gold["acc"][i]
            if i in rtl_images and not np.array_equal(rtl["acc"][rtl_images.index(i)], acc):
                raise DeployError(f"{t['name']} verification image {i}: rtlsim and python "
                                  "golden differ in the build")
            items.append((nat[j], inputs[i].transpose(1, 2, 0), acc,
                          gold["logits"][i].astype(np.float32), int(labels[j]),
                          {"source": "verification", "verification_index": int(i),
                           "checked_against_rtlsim": i in rtl_images}))
        if missing:
            names = ", ".join(t["classes"][c] for c in missing)
            all_nat, all_lab, src = load_images(t, v.split, sys.maxsize, nat_size,
                                                t["native_channels"], root_data, preprocess={})
            all_in, all_lab2, _ = load_images(t, v.split, sys.maxsize, size, ch,
                                              root_data, preprocess=t["preprocess"])
            if not np.array_equal(all_lab, all_lab2):
                raise DeployError(f"{t['name']}: the {v.split!r} split's labels differ between "
                                  "its native and model-input loads")
            ks = []
            for c in missing:
                where = np.flatnonzero(all_lab == c)
                if not len(where):
                    raise DeployError(f"{t['name']}: class {t['classes'][c]!r} has no image in "
                                      f"the {v.split!r} split of {src}, so the package cannot "
                                      "show it; check the data set")
                ks.append(int(where[0]))
            x = all_in[ks].transpose(0, 3, 1, 2).astype(np.float32)
            acc_s, lg_s = python_golden(b, md["host_ops"], np.concatenate(
                [x, inputs[[idx[j] for j in picks]]]))
            for n, j in enumerate(picks):  # this execution == the build's golden
                if not (np.array_equal(acc_s[len(ks) + n], gold["acc"][idx[j]]) and
                        np.array_equal(lg_s[len(ks) + n],
                                       gold["logits"][idx[j]].astype(np.float32))):
                    raise DeployError(f"{t['name']} verification image {idx[j]}: python "
                                      "execution of the partition now differs from the "
                                      "build's golden (build changed since verification?)")
            for n, (c, k) in enumerate(zip(missing, ks)):
                items.append((all_nat[k], all_in[k], acc_s[n], lg_s[n], c,
                              {"source": "split", "split": v.split, "split_index": k,
                               "verification_index": None, "checked_against_rtlsim": False}))
            log(f"note: {t['name']}: the build verified no image of class {names} "
                f"(verify.images_per_task {v.images_per_task}, {len(t['classes'])} classes); "
                f"packaged the first {v.split} image of each, expected outputs from FINN's "
                "python execution of the partition")
        items.sort(key=lambda it: it[4])  # class order (stable: verification order within)
        (root / "samples" / t["name"]).mkdir(parents=True, exist_ok=True)
        for j, (a, want, acc, lg, lab, src_info) in enumerate(items):
            cls = t['classes'][lab].replace(' ', '_').replace('/', '_').replace('\\', '_')
            rel = f"samples/{t['name']}/{j:02d}_{cls}.png"
            Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(root / rel)
            got = runtime_inputs.from_file(root / rel, t, size, ch)
            if not np.array_equal(got, want):
                raise DeployError(f"{rel}: the runtime's preprocessing differs from the project "
                                  "loader's model input (data set changed since the build?)")
            a0, a1 = t["slice"]
            k = int(medimage.decision.apply(lg[a0:a1], t.get("decision"))[1])  # as the board
            out["images"].append({
                "file": rel, "task": t["name"], "true_label": t["classes"][lab],
                "true_label_index": lab, **src_info,
                "expected": {"label": t["classes"][k], "label_index": k,
                             "acc": [int(x) for x in acc],
                             "logits": [float(x) for x in lg]}})
    return out


def decision_text(t: dict) -> str:
    """One task's decision rule in words, for the README."""
    d = t.get("decision")
    if not d:
        return f"`{t['name']}`: argmax (no calibration)"
    s = f"`{t['name']}`: T = {d['temperature']:.3g}"
    if d.get("threshold") is None:
        return s + ", argmax"
    pos = t["classes"][d["positive_class"]]
    return s + f", `{pos}` when P({pos}) >= {d['threshold']:.3g}"


def board_readme(md: dict, samples: dict) -> str:
    gray = {1: "gray", 3: "RGB"}
    def packaged(t):  # "normal x2, pneumonia x2": the packaged samples per class
        n = [sum(1 for e in samples["images"] if e["task"] == t["name"]
                 and e["true_label_index"] == c) for c in range(len(t["classes"]))]
        return ", ".join(f"{c} x{k}" for c, k in zip(t["classes"], n))
    def prep(t):  # "crop + equalize": the style-removing steps the runtime applies
        p = t.get("preprocess") or {}
        steps = (["crop"] if p.get("crop") else []) + (
            [p["normalize"]] if p.get("normalize", "none") != "none" else [])
        return " + ".join(steps) or "none"
    tasks = "\n".join(f"| `{t['name']}` | {', '.join(t['classes'])} | "
                      f"{gray[t['native_channels']]} | {prep(t)} | {packaged(t)} |"
                      for t in md["tasks"])
    perf = "\n".join(f"- `{k}`: {v}" for k, v in md.get("performance", {}).items())
    n = md["name"]
    if md["bitfile"]:
        bit = f"`{md['bitfile']}` and `{md['hwh']}` (PYNQ needs both)."
    else:
        bit = (f"**not in this package**: {md['bitfile_note']}. Put FINN's `.bit` and `.hwh` "
               f"into `bitfile/` as `{n}.bit` / `{n}.hwh` and set `\"bitfile\": "
               f"\"bitfile/{n}.bit\"` and `\"hwh\": \"bitfile/{n}.hwh\"` in `metadata.json`.")
    first = md["tasks"][0]["name"]
    nsamp = len(samples["images"])
    size, ch = md["input"]["size"], md["input"]["channels"]
    cli = "python3 -m deploy.pynq.cli"
    dmas = f"`{md['dma']['input']['name']}` / `{md['dma']['output']['name']}`"
    return f"""# {n}: medfpga deploy package for {md['board']} ({md['fpga_part']})

Multi-task classifier: {size}x{size} {gray[ch]} input, FINN all-RTL dataflow at
{md['clock_mhz']} MHz behind FINN's IODMAs {dmas}.

Bitfile: {bit}

| task | classes | images as trained | preprocessing | test images in `samples/<task>/` |
|---|---|---|---|---|
{tasks}

`samples/<task>/NN_<class>.png` are real test images of every class (the class they truly are
is in the file name and `true_label` in `samples/expected.json`, next to the output the model
is expected to give; a model's answer can differ from the true class). Preprocessing (as in
training, `preprocess` per task in `metadata.json`, `medimage/preprocess.py`): `crop` = crop
to the body/head box found on the task's native grid, then resize; `equalize` / `stretch` =
per-image intensity normalization in integers.

Labels: probabilities are softmax(logits / T); a binary task with a threshold answers its
positive class when P(positive) >= threshold, otherwise the argmax (both fitted on the
validation split after training: `decision` per task in `metadata.json`; each result names
the `threshold` used). {'; '.join(decision_text(t) for t in md['tasks'])}.

## On the board (PYNQ 3.x image, Python 3.10)

PYNQ programs the FPGA only as root, from its virtual environment: `sudo -i`, then
`source /etc/profile.d/pynq_venv.sh` (root's login shell usually does this already).

```sh
cd {n}
{cli} info
{cli} selftest        # the {nsamp} packaged test images (every class) vs expected outputs
{cli} classify samples/{first} --task {first} --format csv   # every class
{cli} classify /path/to/folder --task {first} --out results.json
{cli} throughput --batch-size 1000
```

Inputs: image files (PNG/JPEG/BMP/TIFF: decoded, resized and channel-converted exactly as in
training) or `.npy` uint8 arrays already at the model input ({size}x{size}x{ch}); other files
in a folder are skipped and listed (`skipped` in the JSON, a note on stderr).

An input that cannot be read (does not decode, or a `.npy` of the wrong shape or dtype) gets
its own row with `status` `error` and the reason in `error` (CSV columns, JSON fields; the
JSON's `failed` counts them); the other inputs are still classified, the exit code is 1 and
one line on stderr says how many failed. `--strict` stops at the first unreadable input
instead: exit code 2, nothing written. Every other error (unknown task, missing input path
or bitfile, `pynq` not importable, ...) is one line, `error: ...`, exit code 2, naming the
problem and the fix. Exit code 0: every input classified.

Build figures (FINN estimate; `rtlsim_*`: Verilator simulation of the RTL; dataflow only,
without DMA and host costs):

{perf}

## On a host, without the board (board and Vivado faked, the RTL simulated)

From this directory, with the medfpga project venv (FINN, Verilator) and the build directory:

```sh
/path/to/medfpga/.venv/bin/python -m deploy.pynq.cli selftest --simulate-build {md['build']['dir']}
```

Full guide: `docs/board_guide.md` in the medfpga repository.
"""


def build_package(build_dir, cfg, out_dir, per_class: int = 2, data_dir=None) -> Path:
    """-> path of ``<out_dir>/<name>.tar.gz`` (written to a temp name, then renamed)."""
    b = Path(build_dir)
    for need in ("host_ops.json", "model/model.meta.json", "build_report.json",
                 "verification/stage_insert_dwc_fifo.npz", "verification/inputs.npz", "config.yaml"):
        if not (b / need).exists():
            raise DeployError(f"{b / need} not found: not a finished FINN build; run "
                              f"`make build CONFIG=...` first")
    md = make_metadata(b, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".stage-") as tmp:
        root = Path(tmp) / cfg.name
        for package in SHIPPED:
            (root / package).mkdir(parents=True)
            for f in sorted((PROJECT_ROOT / package).glob("*.py")):
                (root / package / f.name).write_bytes(f.read_bytes())
        (root / "deploy" / "__init__.py").write_text("")
        samples = make_samples(b, cfg, md, per_class, root, data_dir)
        (root / "samples" / "expected.json").write_text(json.dumps(samples, indent=1))
        if md["bitfile"]:
            (root / "bitfile").mkdir()
            bit = find_bitfile(b)
            (root / md["bitfile"]).write_bytes(bit.read_bytes())
            hwh = bit.with_suffix(".hwh")
            if not hwh.exists():
                raise DeployError(f"{hwh} not found next to {bit}: PYNQ needs both")
            (root / md["hwh"]).write_bytes(hwh.read_bytes())
        (root / "metadata.json").write_text(json.dumps(md, indent=1))
        (root / "README.md").write_text(board_readme(md, samples))
        final = out_dir / f"{cfg.name}.tar.gz"
        part = Path(tmp) / (final.name + ".part")
        with tarfile.open(part, "w:gz") as tar:
            tar.add(root, arcname=cfg.name)
        os.replace(part, final)
    return final


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.host.package", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the build config (build_configs/X.yaml, "
                    "or a build's config.yaml snapshot)")
    ap.add_argument("--build-dir", help="default: the config's output_dir")
    ap.add_argument("--out-dir", default="build/deploy")
    ap.add_argument("--images-per-class", type=int, default=2, help="test images per class of "
                    "every task (default 2; at least one per class is always packaged)")
    ap.add_argument("--data-dir", help="data root (default: the build's, $MEDFPGA_DATA, "
                    "../shared/data)")
    a = ap.parse_args(argv)
    if a.images_per_class < 1:
        ap.error(f"--images-per-class must be 1 or more, got {a.images_per_class}")
    from finn_build.config import BuildConfigError, load_build_config

    try:
        cfg = load_build_config(a.config)
        path = build_package(a.build_dir or cfg.out_dir, cfg, a.out_dir, a.images_per_class,
                             a.data_dir)
    except (DeployError, BuildConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
