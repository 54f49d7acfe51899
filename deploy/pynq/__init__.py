"""medfpga board runtime (runs ON the PYNQ board: Python >= 3.10, numpy 1.2x, Pillow;
``pynq`` imported only when a real overlay is loaded). Ships in the deploy package together
with ``medimage`` (the image conventions shared with training).

- ``runtime``: deploy metadata, ``Accelerator`` (FINN zynq-iodma DMA protocol on packed
  bytes), ``Classifier`` (images -> per-task probabilities and labels);
- ``inputs``: what the runtime accepts: image files (prepared as in training, ``medimage``)
  and raw ``.npy`` arrays;
- ``packing``: FINN's packed byte layout, numpy only;
- ``host_ops``: the build's host pre/post ops (also used by ``finn_build``);
- ``cli``: ``python3 -m deploy.pynq.cli`` (info / classify / selftest / throughput).

Host-only tools that need the build (the package builder, the simulated overlay) are in
``deploy.host``; nothing here imports them except ``cli --simulate-build``.
"""
