# One entry point per job. `make install` once, then `make test`; `make demo` runs the main job.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check
CONFIG ?= build_configs/demo_mlp_pynq-z1.yaml

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

demo: install
	$(VENV)/bin/medzoo train configs/demo_mlp.yaml --quiet
	$(VENV)/bin/medzoo train configs/demo_cnn.yaml --quiet

bench: bench-accuracy

bench-accuracy: install
	$(PY) -m brevitas_models.bench_accuracy

clean:
	rm -rf runs build .cache
