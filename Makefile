# Newcomer entry points (see README.md):
#   make demo   set up .venv, then search -> train -> export on a small default
#   make test   set up .venv, then lint, run the test suite and every notebook (tiny setting)
VENV ?= .venv
DATA_DIR ?= data
TESTS ?= tests notebooks
# pytest-xdist workers; each test file (and notebook) runs whole on one worker.
TEST_WORKERS ?= 2
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: setup test demo lint

setup: $(VENV)/.installed

# constraints.txt pins the versions tested together; setup.cfg only declares ranges.
$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

# The notebooks run top to bottom at BNAS_NOTEBOOK_SIZE=tiny on CIFAR-10 in DATA_DIR
# (unpacked from ../shared when it is there, as for `make demo`); a failing cell fails.
# `make test TESTS=notebooks` runs only the notebooks.
test: setup lint
	bash scripts/cifar10.sh $(PY) $(DATA_DIR)
	BNAS_NOTEBOOK_SIZE=tiny BNAS_DATA_DIR="$(abspath $(DATA_DIR))" \
	  $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile \
	    --durations=25 --nbmake --nbmake-timeout=1200 $(TESTS)

demo: setup
	bash scripts/demo.sh
