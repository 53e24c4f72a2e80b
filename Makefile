# Every target sets itself up: a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test reliability lint bench services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]' --group dev
	touch $(STAMP)

install: $(STAMP)

services:
	@bash scripts/services.sh

demo: $(STAMP)
	$(BIN)/agents-persistence demo

test: $(STAMP) services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The long fault-injection run: private servers only; writes tests/reliability/RESULTS.md.
reliability: $(STAMP)
	$(BIN)/python -m pytest tests/reliability -m reliability_long -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP) services
	$(BIN)/python -m pip install --quiet -e '.[all,bench]'
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
