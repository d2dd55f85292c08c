# The README's two commands: `make demo` (the default preset end to end) and `make test` (the suite).
# Each creates/uses the project venv and installs the pinned set first (torch 2.13.0 before anything else, so
# pip never resolves a multi-GB CUDA build).  `make demo` installs the library alone (RUNTIME); the suite, the lab
# and the benchmarks add the extras (DEV: JupyterLab, SAELens, Playwright, pytest) — about a quarter of a fresh
# install's time, which the demo's 20 minutes do not need to pay.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUNTIME := $(VENV)/.installed-runtime-$(HASH)
DEV := $(VENV)/.installed-dev-$(HASH)
RUN ?= data/runs/default
PRESET ?= default
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast lab bench clean-venv

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	rm -f $(VENV)/.installed-*; touch $@

$(DEV): $(RUNTIME)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(DEV)

demo: $(RUNTIME)
	$(BIN)/monosemantic run --preset $(PRESET) --out $(RUN)
	$(BIN)/monosemantic summary $(RUN)

test: $(DEV)
	$(BIN)/python -m pytest -q

test-fast: $(DEV)
	$(BIN)/python -m pytest -q -m "not slow"

lab: $(DEV)
	$(BIN)/jupyter lab notebooks/

bench: $(DEV)
	$(BIN)/python benchmarks/sae_train.py
	$(BIN)/python benchmarks/fast_kernels.py
	$(BIN)/python benchmarks/feature_stats.py
	$(BIN)/python benchmarks/universality.py

clean-venv:
	rm -rf $(VENV)
