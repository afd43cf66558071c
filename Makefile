# The README's two commands: `make demo` and `make test`. Both bootstrap the virtual
# environment on a fresh machine, installing torch==2.13.0 (CPU build) before anything that
# depends on torch, so pip never pulls the multi-gigabyte CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.iif-ray-installed
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint bench evidence install clean

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

# The developer's tier: everything but real training runs (slow) and the two-node cluster.
test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow and not cluster" $(PYTEST_ARGS)

# Style, the layer contracts (pyproject.toml [tool.importlinter]) and dead code.
lint: $(STAMP)
	$(BIN)/ruff check iif_ray tests tune_experiments
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/vulture

bench: $(STAMP)
	$(BIN)/iif-ray bench scoring

# The evidence runs (results/evidence/COMMANDS.md), one after another; every step resumes, so
# rerunning after an interruption continues where it stopped. Raw results are copied into
# results/evidence/ and the report regenerated after each step.
EVIDENCE_OUT ?= runs/evidence
EVIDENCE_RESULTS ?= results/evidence
define evidence_publish
	$(BIN)/iif-ray evaluate $(EVIDENCE_OUT)
	mkdir -p $(EVIDENCE_RESULTS)
	cp $(EVIDENCE_OUT)/rounds.csv $(EVIDENCE_OUT)/evals.csv $(EVIDENCE_RESULTS)/
	$(BIN)/iif-ray report $(EVIDENCE_RESULTS)
endef
evidence: $(STAMP)
	$(BIN)/iif-ray sweep evidence --seeds 10 --max-concurrent 2 --checkpoint-every 5 --out $(EVIDENCE_OUT)
	$(evidence_publish)
	$(BIN)/iif-ray sweep protocol --seeds 10 --max-concurrent 2 --checkpoint-every 5 --out $(EVIDENCE_OUT)
	$(evidence_publish)
	$(BIN)/iif-ray sweep evidence --envs lunarlander --algos iif-p0.0625,iif-p0.25,iif-p0.5,iif-negative \
		--seeds 5 --max-concurrent 2 --checkpoint-every 5 --out $(EVIDENCE_OUT)
	$(BIN)/iif-ray sweep evidence --envs acrobot --algos iif-p0.0625,iif-p0.125,iif-p0.25,iif-negative \
		--seeds 5 --max-concurrent 2 --checkpoint-every 5 --out $(EVIDENCE_OUT)
	$(evidence_publish)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
