#!/usr/bin/env bash
# medfpga-vivado entry point: source the mounted Vivado / Vitis HLS, fetch FINN's
# dependencies once (FINN_DEPS, a mounted cache), then run the command.
set -eo pipefail
V="${XILINX_VERSION:-2024.2}"
D="${XILINX_DIR:-/tools/Xilinx}"
if [ ! -f "$D/Vivado/$V/settings64.sh" ]; then
  echo "medfpga-vivado: $D/Vivado/$V/settings64.sh not found: mount the host's Xilinx" \
       "install and name its version, e.g. docker run -v $D:$D:ro -e XILINX_VERSION=$V ..." \
       "(finn-plus 1.6.1 supports 2022.2 and 2024.2)" >&2
  exit 6
fi
set +e  # AMD's settings scripts are not written for errexit
# shellcheck disable=SC1090
source "$D/Vivado/$V/settings64.sh"
# Vitis HLS: its own tree before 2024.2 (Vitis_HLS/<v>), part of Vitis from 2024.2 on
for s in "$D/Vitis_HLS/$V/settings64.sh" "$D/Vitis/$V/settings64.sh"; do
  # shellcheck disable=SC1090
  if [ -f "$s" ]; then source "$s"; fi
done
set -e
# the libraries FINN's in-process XSim needs (finn's own CLI re-execs itself to set them)
export LD_LIBRARY_PATH="/lib/x86_64-linux-gnu:$XILINX_VIVADO/lib/lnx64.o${XILINX_HLS:+:$XILINX_HLS/lnx64/tools/fpo_v7_1}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ ! -d "$FINN_DEPS/finn-hlslib" ]; then
  # finn-hlslib (IODMA C++), board files (Pynq-Z1/Z2, KV260); needs the network once
  finn deps update --batch
fi
exec "$@"
