# The README's two commands: `make demo` (the default preset end to end) and `make test` (the suite).
# Each creates/uses the project venv and installs the pinned set first (torch 2.13.0 before anything else, so
# pip never resolves a multi-GB CUDA build).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUN ?= data/runs/default
PRESET ?= default
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast lab bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/monosemantic run --preset $(PRESET) --out $(RUN)
	$(BIN)/monosemantic summary $(RUN)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python benchmarks/sae_train.py
	$(BIN)/python benchmarks/fast_kernels.py
	$(BIN)/python benchmarks/feature_stats.py
	$(BIN)/python benchmarks/universality.py

clean-venv:
	rm -rf $(VENV)
