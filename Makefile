# OPD Workbench — one-command set-up, tests and demos.
#
#   make setup      create .venv, install torch (pinned) then the project with its dev extras,
#                   and register the venv's Jupyter kernel ("Python 3 (opd-workbench)")
#   make test       the test suite (what CI runs)       make test-slow   the long checks (-m slow)
#   make demo       00_quickstart -> runs/demo (progress every 30 s, no time limit)
#   make bench      benchmarks (JSON)
#   make zoo        rebuild the shipped toy checkpoints make browser-deps chromium for the browser tests
#   make clean      remove caches and build outputs     make distclean   ... and the venv
#
# torch is installed on its own, before the project, with the same pin as pyproject.toml: on a
# CPU-only machine of ours pip takes the CPU build from local disk; on a Linux GPU machine the same
# pin on PyPI is the CUDA build.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.setup-stamp
PYTEST := $(PY) -m pytest -q -p no:cacheprovider --durations=15

.PHONY: setup test test-slow demo bench zoo browser-deps clean distclean

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (opd-workbench)"
	touch $(STAMP)

test: setup
	$(PYTEST) $(PYTEST_ARGS)

test-slow: setup
	$(PYTEST) -m slow $(PYTEST_ARGS)

demo: setup
	$(PY) -m widgets.notebooks run 00_quickstart --out runs/demo --size full

bench: setup
	$(PY) -m workbench bench all --json

zoo: setup
	$(PY) -m workbench zoo build

browser-deps:
	@if [ -x /usr/bin/chromium ]; then \
		echo "chromium is installed: /usr/bin/chromium"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && apt-get install -y chromium; \
	else \
		echo "chromium is missing; install it as root: sudo apt-get install -y chromium (or: sudo make browser-deps)"; \
	fi

clean:
	rm -rf build dist *.egg-info .pytest_cache test-artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
