# Two commands do all the set-up on a fresh clone:
#   make run    creates .venv, installs popbench, runs `popbench run --nodes 100`
#   make test   creates .venv, installs popbench with its test extra, runs ruff, mypy and the whole suite
# (`make install` only creates .venv and installs popbench: what a CI job needs before `popbench run`)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/popbench run --nodes 100

test: $(STAMP) lint
	$(PY) -m pytest

# ruff (lint and format check) and mypy --strict; `make format` applies ruff's fixes and formatting
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) reports/runs .pytest_cache .hypothesis
