# longvec — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.longvec-installed
# The CPU build of torch is installed first on machines without a GPU (a bare `torch` requirement pulls a
# multi-GB CUDA build). Override TORCH_SPEC/TORCH_PIP_ARGS on other machines, e.g.
#   make install TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# Sources of the code-go, code-ts and code-cpp eval datasets (evaluation/code_langs.py reads them from here;
# another SOURCES_DIR needs LONGVEC_TS_SRC=$(SOURCES_DIR)/node_modules/rxjs/src at eval time).
EVAL_APT_PACKAGES ?= golang-go libeigen3-dev
EVAL_NPM_PACKAGE ?= rxjs@7.8.2
SOURCES_DIR ?= $(HOME)/.cache/longvec/sources
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install demo test test-all lint bench eval-smoke eval-sources clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with CPU torch (no GPU) and longvec in editable mode

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then echo "GPU found: torch comes with the project"; \
	else $(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q -e '.[dev,openvino,train,ray]'
	touch $(STAMP)

demo: install  ## index the Python standard library shipped with this machine and serve it
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: install  ## the fast test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-all: install  ## every test, slow ones included
	$(BIN)/python -m pytest -q -m ''

lint: install  ## ruff lint and format check
	$(BIN)/ruff check chunking embedder index evaluation api tests benchmarks
	$(BIN)/ruff format --check chunking embedder index evaluation api tests benchmarks

bench: install  ## the full evaluation table (long: see docs/BENCHMARKS.md)
	$(BIN)/python benchmarks/run_eval.py

eval-sources:  ## install the Go, TypeScript and C++ sources of the code-go/-ts/-cpp eval datasets
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(EVAL_APT_PACKAGES)
	mkdir -p $(SOURCES_DIR)
	npm install --prefix $(SOURCES_DIR) --save-exact --ignore-scripts --no-audit --no-fund $(EVAL_NPM_PACKAGE)

clean:  ## remove the virtual environment and demo collection
	rm -rf $(VENV) collections
