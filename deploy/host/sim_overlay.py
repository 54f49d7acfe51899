"""HOST ONLY — a simulated PYNQ overlay: the board and Vivado are faked, the accelerator is
not. It offers exactly the part of the PYNQ API the runtime uses:

- ``SimulatedOverlay(build_dir)``: the IODMA IPs as attributes (``idma0``, ``odma0``) with
  ``read(offset)`` / ``write(offset, value)`` on FINN's IODMA register map
  (``deploy.pynq.runtime.REG_*``);
- ``overlay.allocate(shape, dtype, cacheable=...)``: buffers with ``device_address``,
  ``flush()`` (CPU -> DRAM), ``invalidate()`` (DRAM -> CPU), ``freebuffer()``. DRAM is a
  separate copy, so a missing flush/invalidate gives stale data, as on the board.

Behind it: this project's Verilator simulation (``finn_build.rtlsim.flow``: ``prepare`` /
``Stitched``) of the build's folded dataflow partition, i.e. the RTL the bitfile would hold.
When the input DMA is started (and the output DMA armed), the fake reads the input buffer's
DRAM bytes, turns them into AXI-Stream beats (``stream width / 8`` bytes per beat,
little-endian: what FINN's IODMA with ``dataType=UINT8, NumChannels=width/8`` streams), runs
the stitched RTL, and writes the output beats' bytes into the output buffer's DRAM as the
output IODMA would. Cycle counts of every run are kept in ``overlay.runs``.

Needs finn_build, FINN and Verilator (the project venv); not shipped: the board CLI imports it
only for ``--simulate-build`` on a host.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np

from deploy.pynq.runtime import (AP_DONE, AP_IDLE, AP_START, REG_ADDR_HI, REG_ADDR_LO, REG_CTRL,
                                 REG_REPS)


class SimulatedDMAError(RuntimeError):
    pass


def partition_model_path(build_dir) -> Path:
    """The folded dataflow partition of a build with the FIFO depths as built (the
    ``set_fifo_depths`` artifact)."""
    found = sorted(Path(build_dir).glob("intermediate/*_set_fifo_depths.onnx"))
    if not found:
        raise FileNotFoundError(f"{build_dir}: no intermediate/NN_set_fifo_depths.onnx (the "
                                "folded dataflow partition); run the FINN build to the end")
    return found[-1]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class SimBuffer(np.ndarray):
    """``pynq.allocate``-style buffer: CPU view (this array) + its DRAM copy."""

    def __array_finalize__(self, obj):
        self.device_address = getattr(obj, "device_address", None)
        self._dram = getattr(obj, "_dram", None)
        self._root = getattr(obj, "_root", None)

    @property
    def physical_address(self):
        return self.device_address

    def flush(self):
        root = self._root
        root._dram[:] = np.asarray(root).reshape(-1).view(np.uint8)

    def invalidate(self):
        root = self._root
        np.asarray(root).reshape(-1).view(np.uint8)[:] = root._dram

    def freebuffer(self):
        pass

    close = freebuffer


class SimIODMA:
    """One FINN IODMA (HLS ``ap_ctrl_hs`` + AXI-Lite registers) of the simulated overlay."""

    def __init__(self, overlay, name: str, direction: str):
        self.ov, self.name, self.direction = overlay, name, direction
        self.regs = {REG_ADDR_LO: 0, REG_ADDR_HI: 0, REG_REPS: 0}
        self.started = self.done = False

    def read(self, offset: int) -> int:
        if offset == REG_CTRL:
            v = (AP_IDLE if not self.started else 0) | (AP_DONE if self.done else 0)
            self.done = False  # ap_done is clear-on-read
            return v
        return self.regs.get(offset, 0)

    def write(self, offset: int, value: int):
        if offset == REG_CTRL:
            if value & AP_START:
                if self.started:
                    raise SimulatedDMAError(f"{self.name}: started while busy")
                self.started, self.done = True, False
                self.ov._kick()
            return
        if offset not in self.regs:
            raise SimulatedDMAError(f"{self.name}: no register at {offset:#x} (FINN's IODMA has "
                                    f"{sorted(hex(k) for k in self.regs)} and 0x0)")
        self.regs[offset] = int(value) & 0xFFFFFFFF

    @property
    def address(self) -> int:
        return self.regs[REG_ADDR_LO] | (self.regs[REG_ADDR_HI] << 32)


class SimulatedOverlay:
    """``pynq.Overlay`` stand-in for a deploy package, backed by the build's stitched RTL."""

    def __init__(self, build_dir, meta: dict | None = None, workdir=None, cache_dir=None,
                 log=None):
        from finn_build.finn_env import ensure_finn_env

        ensure_finn_env()
        from qonnx.core.modelwrapper import ModelWrapper

        import yaml

        from finn_build.boards import get_board
        from finn_build.rtlsim.flow import Stitched

        self.build_dir = Path(build_dir)
        onnx = partition_model_path(self.build_dir)
        want = (meta or {}).get("build", {}).get("partition_sha256")
        if want is not None and want != sha256(onnx):
            raise SimulatedDMAError(f"{onnx} is not the partition this deploy package was made "
                                    "from (sha256 differs); simulate the package's own build")
        # the build's board and clock (its config snapshot, read without re-validating paths
        # that are relative to wherever the build was started)
        cfg = yaml.safe_load((self.build_dir / "config.yaml").read_text())
        part = get_board(cfg.get("board", "Pynq-Z1")).part
        self.clock_mhz = float(cfg.get("clock_mhz", 100.0))
        model = ModelWrapper(str(onnx))
        design = self._design(model, onnx, workdir or self.build_dir / "deploy_sim", part,
                              1000.0 / self.clock_mhz)
        self._st = Stitched(model, design, cache_dir, log=log)
        if len(self._st.ins) != 1 or len(self._st.outs) != 1:
            raise SimulatedDMAError("the simulated overlay supports one input and one output "
                                    f"stream, the partition has {len(self._st.ins)}/"
                                    f"{len(self._st.outs)}")
        self._in, self._out = self._st.ins[0], self._st.outs[0]
        dma = (meta or {}).get("dma", {})
        names = (dma.get("input", {}).get("name", "idma0"),
                 dma.get("output", {}).get("name", "odma0"))
        self.idma = SimIODMA(self, names[0], "in")
        self.odma = SimIODMA(self, names[1], "out")
        setattr(self, names[0], self.idma)
        setattr(self, names[1], self.odma)
        self.ip_dict = {n: {"type": "xilinx.com:hls:IODMA_hls (simulated)"} for n in names}
        self.compile = {k: self._st.build[k] for k in ("cached", "seconds", "lib")}
        self._buffers: dict = {}
        self._next_addr = 0x1000_0000
        self.runs: list = []

    @staticmethod
    def _design(model, onnx: Path, workdir: Path, part: str, clk_ns: float):
        from finn_build.rtlsim.hdl import HDLDesign, generate_hdl

        for d in (onnx.parents[1] / "rtlsim", Path(workdir)):  # the rtlsim step's, or ours
            j = d / "hdl.json"
            if j.is_file() and j.stat().st_mtime >= onnx.stat().st_mtime:
                design = HDLDesign.from_json(json.loads(j.read_text()))
                if Path(design.src_dir).is_dir():
                    return design
        return generate_hdl(copy.deepcopy(model), Path(workdir), part, clk_ns)

    # ------------------------------------------------------------------ PYNQ API
    def allocate(self, shape, dtype=np.uint8, cacheable=True, **_):
        buf = np.zeros(shape, dtype).view(SimBuffer)
        buf.device_address = self._next_addr
        buf._dram = np.zeros(buf.nbytes, np.uint8)
        buf._root = buf
        self._buffers[buf.device_address] = buf
        self._next_addr += (buf.nbytes + 0xFFF) // 0x1000 * 0x1000 + 0x1000
        return buf

    def close(self):
        self._st.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # ------------------------------------------------------------------ the "hardware"
    def _dram(self, dma: SimIODMA, nbytes: int) -> np.ndarray:
        buf = self._buffers.get(dma.address)
        if buf is None:
            raise SimulatedDMAError(f"{dma.name}: address {dma.address:#x} is not a buffer "
                                    "allocated by this overlay")
        if nbytes > buf.nbytes:
            raise SimulatedDMAError(f"{dma.name}: {dma.regs[REG_REPS]} images need {nbytes} "
                                    f"bytes, the buffer at {dma.address:#x} has {buf.nbytes}")
        return buf._dram

    def _kick(self):
        """Run once both DMAs are started (FINN starts the output DMA first)."""
        if not (self.idma.started and self.odma.started):
            return
        n = self.idma.regs[REG_REPS]
        if self.odma.regs[REG_REPS] != n or n < 1:
            raise SimulatedDMAError(f"image counts differ or are zero: {self.idma.name} {n}, "
                                    f"{self.odma.name} {self.odma.regs[REG_REPS]}")
        si, so = self._in, self._out
        bi, bo = si.width // 8, so.width // 8
        beats_in, beats_out = si.stream.beats * n, so.stream.beats * n
        src = self._dram(self.idma, beats_in * bi)[: beats_in * bi].reshape(beats_in, bi)
        dst = self._dram(self.odma, beats_out * bo)
        words = np.zeros((beats_in, (si.width + 31) // 32 * 4), np.uint8)
        words[:, :bi] = src
        sim = self._st.sim
        sim.reset()
        r = sim.run({si.name: words.view("<u4")}, {so.name: beats_out}, timestamps=True)
        out = np.ascontiguousarray(r["outputs"][so.name], "<u4").view(np.uint8)
        dst[: beats_out * bo] = out[:, :bo].reshape(-1)
        done = r["out_ts"][so.name].reshape(n, so.stream.beats)[:, -1]
        first = int(r["in_ts"][si.name][0])
        self.runs.append({"images": n, "cycles": r["cycles"],
                          "latency_cycles": int(done[0] - first + 1),
                          "interval_cycles": float(np.diff(done).mean()) if n > 1 else None,
                          "sim_wall_seconds": r["wall_seconds"]})
        for d in (self.idma, self.odma):
            d.started, d.done = False, True
