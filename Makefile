# The README's two commands: `make demo` and `make test`. Both bootstrap the virtual
# environment on a fresh machine, installing torch==2.13.0 (CPU build) before anything that
# depends on torch, so pip never pulls the multi-gigabyte CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.iif-ray-installed
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: demo test lint bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/iif-ray demo

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Style, the layer contracts (pyproject.toml [tool.importlinter]) and dead code.
lint: $(STAMP)
	$(BIN)/ruff check iif_ray tests tune_experiments
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/vulture

bench: $(STAMP)
	$(BIN)/iif-ray bench scoring

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
