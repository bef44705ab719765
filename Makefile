# Two commands for a newcomer: `make demo` (install the package, run the bundled example) and
# `make test` (install the package with its development tools, run ruff, mypy and the whole test
# suite). Everything installs into .venv, in two stages: the demo needs only the first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench adversarial clean

# Stage 1: the package alone (what `make demo` needs).
$(VENV)/.package: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# Stage 2: the development tools too (ruff, mypy, pytest, hypothesis and every optional backend).
$(VENV)/.installed: $(VENV)/.package
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.package
	PYTHON=$(PY) bash scripts/demo.sh

# Only the folders that exist (examples/, benchmarks/, scripts/ arrive with their features).
LINT_PATHS := $(wildcard src tests examples benchmarks scripts)

lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

# pytest removes its older temporary directories itself, recursively: a tree deeper than the interpreter's
# recursion limit left there by an interrupted earlier run would make it crash at exit, so they go first.
test: lint
	rm -rf "/tmp/pytest-of-$$(id -un)"
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py

adversarial: setup
	$(PY) benchmarks/adversarial.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
