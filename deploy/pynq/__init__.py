"""medfpga board runtime (runs ON the PYNQ board: Python >= 3.10, numpy 1.2x, Pillow;
``pynq`` imported only when a real overlay is loaded).

- ``runtime``: deploy metadata, ``Accelerator`` (FINN zynq-iodma DMA protocol on packed
  bytes), ``Classifier`` (images -> per-task probabilities and labels);
- ``images``: training's preprocessing (decode, resize, channel conversion);
- ``packing``: FINN's packed byte layout, numpy only;
- ``host_ops``: the build's host pre/post ops (also used by ``finn_build``);
- ``cli``: ``python3 -m deploy.pynq.cli`` (info / classify / selftest / throughput);
- ``sim_overlay`` (HOST ONLY): PYNQ overlay stand-in backed by the Verilator simulation;
- ``package`` (HOST ONLY, not shipped): ``make deploy-package``.
"""
