# Newcomer entry points (see README.md):
#   make demo   set up .venv, then search -> train -> export on a small default
#   make test   set up .venv, then lint and run the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: setup test demo lint

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

demo: setup
	bash scripts/demo.sh
