"""HOST ONLY, not shipped to the board: tools that need the medfpga project (FINN, the build,
the data) around the board runtime ``deploy.pynq``.

- ``package``: ``make deploy-package``, one archive per build (the runtime ``deploy/pynq/``,
  ``medimage/``, metadata, test images and their expected outputs);
- ``sim_overlay``: PYNQ overlay stand-in backed by the Verilator simulation of the build's RTL
  (``python -m deploy.pynq.cli ... --simulate-build BUILD_DIR``).
"""
