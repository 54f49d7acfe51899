# One entry point per job. `make install` once, then `make test`; `make demo` runs the main job.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check
CONFIG ?= build_configs/mlp_w4a4_pynqz1.yaml

.PHONY: install test test-slow demo bench bench-accuracy build bench-hardware clean

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

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# The main job: train both demo models (per-task validation metrics), then compile each with
# FINN to a verified all-RTL dataflow for Pynq-Z1 with estimates.
demo: install
	$(VENV)/bin/medzoo train configs/demo_mlp.yaml --quiet
	$(VENV)/bin/medzoo train configs/demo_cnn.yaml --quiet
	$(PY) -m finn_build --config build_configs/mlp_w4a4_pynqz1.yaml
	$(PY) -m finn_build --config build_configs/cnn_w4a4_pynqz1.yaml

# FINN build of one config (trains the referenced run first if its checkpoint is missing).
build: install
	$(PY) -m finn_build --config $(CONFIG)

bench: bench-accuracy bench-hardware

bench-accuracy: install
	$(PY) -m brevitas_models.bench_accuracy

# Hardware figures of the bench-accuracy checkpoints (runs/bench/*), every bit width x board.
bench-hardware: install
	$(PY) -m finn_build.bench_hardware --checkpoint-dir runs/bench

clean:
	rm -rf runs build .cache
