# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
# `make test PYTHON=python3.13 VENV=.venv-3.13` tests another interpreter in its own virtualenv;
# `make test-pythons` does that for each supported version found on this machine.
PYTHON ?= python3
VENV ?= .venv
# The supported versions: the classifiers in pyproject.toml and the README list the same.
PYTHONS := 3.11 3.12 3.13
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
RUN_STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test test-pythons lint typecheck pytest bench docs clean mutants

# An explicit PYTHON must be the one that made $(VENV): otherwise `make test PYTHON=python3.13`
# after a `make test` would quietly test the old interpreter again.
ifneq ($(origin PYTHON),file)
ifneq ($(filter-out clean test-pythons,$(or $(MAKECMDGOALS),demo)),)
VERSION_OF = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
WANTED := $(call VERSION_OF,$(PYTHON))
ifeq ($(WANTED),)
$(error PYTHON=$(PYTHON) does not run (a pyenv shim of a version not activated? pass its full path))
endif
HAVE := $(if $(wildcard $(BIN)/python),$(call VERSION_OF,$(BIN)/python),$(WANTED))
ifneq ($(HAVE),$(WANTED))
$(error $(VENV) holds Python $(HAVE), not $(WANTED) from PYTHON=$(PYTHON): pass VENV=.venv-$(WANTED) or run `make clean`)
endif
endif
endif

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . --group dev
	touch $@ $(RUN_STAMP)

$(DOCS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --group docs
	touch $@

demo: $(RUN_STAMP)
	$(BIN)/taobao-ordersync demo

test: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks tools
	$(BIN)/ruff format --check src tests examples benchmarks tools
	$(BIN)/mypy
	$(BIN)/pytest

# The whole of `make test` under each of $(PYTHONS) found here (pythonX.Y on PATH, or pyenv's
# installs), one after the other, each in .venv-X.Y; versions not found are skipped and listed.
test-pythons:
	./scripts/test-pythons $(PYTHONS)

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks tools
	$(BIN)/ruff format --check src tests examples benchmarks tools

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# Not part of `make test`: breaks each sync rule in src/ in turn and checks a test fails (docs/mutants.md).
mutants: $(STAMP)
	$(BIN)/python tools/mutants.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.audit

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(PYTHONS:%=.venv-%) build dist site .pytest_cache .mypy_cache .ruff_cache .mutants-backup
