# make dev   - create .venv, install the project, run the whole service on embedded defaults
# make test  - create .venv, install the project with its test tools, lint, type-check, run the tests
# make bench - publish throughput and latency next to the machine's ceiling

VENV := .venv
BIN := $(VENV)/bin
# The first Python 3.11+ on PATH (override: make dev PYTHON=/path/to/python3.12).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo $$p && break; done)
PYTEST_ARGS ?=
# Test processes (pytest-xdist); each module stays in one process with its shared workers.
TEST_WORKERS ?= 2

.PHONY: dev test bench clean

dev: $(VENV)/.installed-dev
	$(BIN)/mq dev

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python bench/publish.py

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-dev: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml clients/python/pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]' -e clients/python
	touch $@ $(VENV)/.installed-dev

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
