"""Board runtime: the FINN dataflow accelerator behind FINN's Zynq IODMAs, with the host
pre/post ops and the per-task heads (numpy; ``pynq`` only on the board, imported lazily).

A deploy package (``make deploy-package``) holds ``metadata.json``: the host ops of the build,
the tasks (output slice, class names, how training prepared their images), the model input
(size, channels) and the DMA tensors (FINN datatype, normal / folded / packed shape, stream
width, IODMA instance name) of the one-input one-output dataflow partition.

Data path of ``Classifier.classify``: image -> uint8 HxWxC as in training (``inputs``, with
``medimage``) -> NCHW -> host pre-ops -> folded -> packed bytes (``packing``) -> input buffer
-> IODMA ``idma0`` -> dataflow -> ``odma0`` -> output buffer -> unpacked integer accumulators
-> host post-ops (float scale/bias) -> the task's slice -> the task's decision
(``medimage.decision``, as in training's evaluation): softmax(logits / T) and the label (a
binary task's threshold on P(positive), else argmax; a package without a decision: T = 1 and
argmax).

DMA control is FINN's ``zynq-iodma`` driver protocol: each IODMA is an HLS block with an
``ap_ctrl_hs`` AXI-Lite register file: 0x00 control (bit 0 start, bit 1 done, bit 2 idle),
0x10/0x14 buffer address low/high, 0x1C number of images; the output DMA is started first,
then the input DMA, then the output DMA's done bit is polled.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from medimage import ImageError
from medimage import decision as rule

from . import host_ops, inputs, packing

FORMAT = "medfpga-deploy/1"
REG_CTRL, REG_ADDR_LO, REG_ADDR_HI, REG_REPS = 0x00, 0x10, 0x14, 0x1C
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4


class DeployError(RuntimeError):
    """One clear error: what is wrong and how to fix it."""


def package_root() -> Path:
    """The unpacked deploy package this runtime was shipped in (``<root>/deploy/pynq/``)."""
    return Path(__file__).resolve().parents[2]


def load_metadata(package) -> tuple:
    """-> (metadata dict, package dir). ``package``: the unpacked package directory or its
    ``metadata.json``."""
    p = Path(package)
    f = p / "metadata.json" if p.is_dir() else p
    if not f.is_file():
        raise DeployError(f"no deploy metadata at {f}: pass the directory of an unpacked deploy "
                          "package (made by `make deploy-package CONFIG=...`) with --package")
    try:
        meta = json.loads(f.read_text())
    except ValueError as e:
        raise DeployError(f"{f} is not valid JSON ({e}); unpack the deploy package again")
    if meta.get("format") != FORMAT:
        raise DeployError(f"{f} has format {meta.get('format')!r}, this runtime reads {FORMAT!r}; "
                          "use the runtime shipped in the same package")
    try:
        host_ops.check_supported(meta["host_ops"])
    except host_ops.HostOpError as e:
        raise DeployError(f"{f}: {e}; update the runtime (deploy/pynq) to the build's version")
    for t in meta.get("tasks", []):
        try:
            rule.check(t.get("decision"), len(t["classes"]))
        except ValueError as e:
            raise DeployError(f"{f}: task {t['name']}: {e}; unpack the deploy package again")
    return meta, f.parent


# --------------------------------------------------------------------------- accelerator

class Accelerator:
    """The dataflow partition behind its input/output IODMAs, on packed bytes.

    ``overlay``/``allocate``: ``pynq.Overlay`` and ``pynq.allocate`` (default: load the
    package's bitfile on the board), or stand-ins with the same interface (the simulated
    overlay of ``deploy.host.sim_overlay`` on a host)."""

    def __init__(self, meta: dict, package_dir=".", overlay=None, allocate=None,
                 batch_size: int = 1, timeout_s: float = 10.0):
        self.meta = meta
        self.din, self.dout = meta["dma"]["input"], meta["dma"]["output"]
        self.timeout_s = timeout_s
        if overlay is None:
            overlay, allocate = self._load_bitfile(Path(package_dir))
        if allocate is None:
            raise DeployError("an overlay given without its buffer allocator (pynq.allocate)")
        self.overlay, self._allocate = overlay, allocate
        try:
            self.idma = getattr(overlay, self.din["name"])
            self.odma = getattr(overlay, self.dout["name"])
        except AttributeError as e:
            raise DeployError(f"the overlay has no DMA {e}; the bitfile does not match this "
                              "package (expected FINN zynq-iodma IPs "
                              f"{self.din['name']!r}/{self.dout['name']!r})") from None
        self.ibuf = self.obuf = None
        self.batch_size = batch_size

    def _load_bitfile(self, package_dir: Path):
        bit = self.meta.get("bitfile")
        path = package_dir / bit if bit else None
        if path is None or not path.is_file():
            why = self.meta.get("bitfile_note") or ""
            raise DeployError(
                f"bitfile {'not in this package' if path is None else 'not found: ' + str(path)}"
                f"{' (' + why + ')' if why else ''}; build the bitstream with Vivado (FINN's "
                "Zynq build: <name>.bit + <name>.hwh) and package again, or on a host run "
                "against the simulated overlay (--simulate-build BUILD_DIR)")
        hwh = path.with_suffix(".hwh")
        if not hwh.is_file():
            raise DeployError(f"{hwh} not found: PYNQ needs the .hwh next to the .bit; copy it "
                              "from the Vivado build")
        try:
            import pynq
            from pynq.ps import Clocks
        except ImportError:
            raise DeployError("cannot import pynq: run this on a PYNQ board image (or use "
                              "--simulate-build BUILD_DIR on a host)") from None
        ov = pynq.Overlay(str(path))
        if self.meta.get("clock_mhz"):
            Clocks.fclk0_mhz = float(self.meta["clock_mhz"])  # as FINN's driver does
        return ov, pynq.allocate

    # batch size: the DMA buffers hold this many images
    @property
    def batch_size(self) -> int:
        return self._batch

    @batch_size.setter
    def batch_size(self, n: int):
        n = int(n)
        if n < 1:
            raise DeployError(f"batch size must be >= 1, got {n}")
        for b in (self.ibuf, self.obuf):
            if b is not None and hasattr(b, "freebuffer"):
                b.freebuffer()
        self._batch = n
        self.ibuf = self._allocate(shape=(n,) + tuple(self.din["shape_packed"][1:]),
                                   dtype=np.uint8, cacheable=True)
        self.obuf = self._allocate(shape=(n,) + tuple(self.dout["shape_packed"][1:]),
                                   dtype=np.uint8, cacheable=True)

    def _start(self, dma, buf, n):
        if dma.read(REG_CTRL) & AP_IDLE == 0:
            raise DeployError("a DMA is still busy from an earlier run; reload the overlay")
        addr = int(buf.device_address)
        dma.write(REG_ADDR_LO, addr & 0xFFFFFFFF)
        dma.write(REG_ADDR_HI, (addr >> 32) & 0xFFFFFFFF)
        dma.write(REG_REPS, int(n))
        dma.write(REG_CTRL, AP_START)

    def execute_on_buffers(self, n: int | None = None):
        """Run ``n`` images (default: the batch size) already in the input buffer."""
        n = self.batch_size if n is None else int(n)
        if not 1 <= n <= self.batch_size:
            raise DeployError(f"{n} images do not fit the DMA buffers (batch size "
                              f"{self.batch_size})")
        self._start(self.odma, self.obuf, n)   # output first, then input (FINN's order)
        self._start(self.idma, self.ibuf, n)
        t0 = time.time()
        while self.odma.read(REG_CTRL) & AP_DONE == 0:
            if time.time() - t0 > self.timeout_s:
                raise DeployError(f"the output DMA did not finish within {self.timeout_s} s: "
                                  "the accelerator stalled (bitfile and package from different "
                                  "builds?); reload the overlay")

    def run_packed(self, packed: np.ndarray) -> np.ndarray:
        """uint8 [n, *packed input] -> uint8 [n, *packed output], in batches."""
        n = packed.shape[0]
        out = np.empty((n,) + tuple(self.dout["shape_packed"][1:]), np.uint8)
        for s in range(0, n, self.batch_size):
            k = min(self.batch_size, n - s)
            self.ibuf[:k] = packed[s:s + k]
            self.ibuf.flush()
            self.execute_on_buffers(k)
            self.obuf.invalidate()
            out[s:s + k] = self.obuf[:k]
        return out

    def pack_input(self, x: np.ndarray) -> np.ndarray:
        """Integer tensor [n, *normal shape] -> packed bytes [n, *packed shape]."""
        n = x.shape[0]
        return packing.pack(x, self.din["dtype"], [n] + list(self.din["shape_folded"][1:]))

    def unpack_output(self, packed: np.ndarray) -> np.ndarray:
        """Packed bytes [n, ...] -> integer tensor [n, *normal output shape[1:]]."""
        n = packed.shape[0]
        y = packing.unpack(packed, self.dout["dtype"], [n] + list(self.dout["shape_folded"][1:]))
        return y.reshape([n] + list(self.dout["shape_normal"][1:]))

    def execute(self, x: np.ndarray) -> np.ndarray:
        return self.unpack_output(self.run_packed(self.pack_input(x)))


# --------------------------------------------------------------------------- classifier

class Classifier:
    """Images in, per-task probabilities and labels out."""

    def __init__(self, package=None, overlay=None, allocate=None, batch_size: int = 16):
        self.meta, self.dir = load_metadata(package or package_root())
        self.tasks = {t["name"]: t for t in self.meta["tasks"]}
        inp = self.meta["input"]
        self.size, self.channels = int(inp["size"]), int(inp["channels"])
        self.host = self.meta["host_ops"]
        self.accel = Accelerator(self.meta, self.dir, overlay, allocate, batch_size)

    def task(self, name=None) -> dict:
        if name is None:
            if len(self.tasks) == 1:
                return next(iter(self.tasks.values()))
            raise DeployError(f"this model has {len(self.tasks)} tasks; choose one with --task "
                              f"({', '.join(self.tasks)})")
        if name not in self.tasks:
            raise DeployError(f"unknown task {name!r}; this model's tasks are: "
                              f"{', '.join(self.tasks)}")
        return self.tasks[name]

    def load(self, items, task) -> np.ndarray:
        """Paths / arrays -> uint8 NHWC model inputs (training's preprocessing)."""
        t = self.task(task)
        try:
            return np.stack([inputs.load_input(x, t, self.size, self.channels) for x in items])
        except ImageError as e:
            raise DeployError(str(e)) from None

    def dataflow_input(self, nhwc: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> the partition's input tensor per image (host pre-ops applied)."""
        nchw = np.transpose(np.asarray(nhwc), (0, 3, 1, 2)).astype(np.float32)
        shape = list(self.meta["dma"]["input"]["shape_normal"][1:])
        return np.stack([host_ops.apply_pre(self.host, x[None]).reshape(shape) for x in nchw])

    def accumulators(self, nhwc: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> integer accumulators [n, num_outputs] from the accelerator."""
        acc = self.accel.execute(self.dataflow_input(nhwc))
        return acc.reshape(len(acc), -1)

    def logits(self, acc: np.ndarray) -> np.ndarray:
        return np.stack([host_ops.apply_post(self.host, a[None].astype(np.float32)).reshape(-1)
                         for a in acc]).astype(np.float32)

    def classify(self, items, task=None, names=None) -> list:
        """-> one dict per input: task, label, label_index, threshold (the binary task's
        threshold on P(positive) that decided the label; None: argmax), probabilities
        (temperature-scaled), logits, acc."""
        t = self.task(task)
        x = self.load(items, t["name"])
        acc = self.accumulators(x)
        lg = self.logits(acc)
        a, b = t["slice"]
        d = t.get("decision")
        probs, labels = rule.apply(lg[:, a:b], d)
        names = names or [x if isinstance(x, (str, os.PathLike)) else f"array[{i}]"
                          for i, x in enumerate(items)]
        out = []
        for i in range(len(acc)):
            k = int(labels[i])
            out.append({"input": str(names[i]), "task": t["name"], "label": t["classes"][k],
                        "label_index": k, "threshold": (d or {}).get("threshold"),
                        "probabilities": {c: float(p) for c, p in zip(t["classes"], probs[i])},
                        "logits": [float(v) for v in lg[i, a:b]],
                        "acc": [int(v) for v in acc[i]]})
        return out
