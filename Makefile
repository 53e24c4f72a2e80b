# Every target sets itself up: a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
# Two stamps: the full install (every extra and the dev group) serves test, lint and bench and
# also satisfies the demo; the demo alone installs only the cli extra (the SQLite store and the
# command), so a fresh clone's `make demo` does not wait for every driver and test tool.
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: install demo test reliability lint bench services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[all]' --group dev
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[cli]'
	touch $(DEMO_STAMP)

install: $(STAMP)

services:
	@bash scripts/services.sh

demo: $(DEMO_STAMP)
	$(BIN)/agents-persistence demo

test: $(STAMP) services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The long fault-injection run: private servers only; writes tests/reliability/RESULTS.md.
reliability: $(STAMP)
	$(BIN)/python -m pytest tests/reliability -m reliability_long -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

bench: $(STAMP) services
	$(PIP) install -e '.[all,bench]'
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
