# OPD Workbench — one-command set-up, tests and demos.
#
#   make setup      create .venv, install torch (pinned) then the project with its dev extras,
#                   and register the venv's Jupyter kernel ("Python 3 (opd-workbench)"); JupyterLab in the
#                   venv opens the paired notebooks/*.py as notebooks on double-click (lab_overrides.json)
#   make test       the test suite (what CI runs)       make test-slow   the long checks (-m slow)
#   make demo       00_quickstart -> runs/demo (progress every 30 s, no time limit)
#   make bench      benchmarks (JSON)
#   make zoo        rebuild the shipped toy checkpoints make browser-deps chromium for the browser tests
#   make claims     re-run every notebook with committed results (results/*.json) at full size into a fresh
#                   folder and fail if any claim's verdict differs (run it before committing a change that
#                   could move a result; long: see README)
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
# the project's extras to install; CI adds `export` (TRL, TensorBoard, W&B) so those tests run, not skip
EXTRAS ?= dev
PYTEST := $(PY) -m pytest -q -p no:cacheprovider --durations=15

.PHONY: setup test test-slow demo bench zoo claims browser-deps clean distclean

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[$(EXTRAS)]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (opd-workbench)"
	install -D -m 644 widgets/lab_overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $(STAMP)

test: setup
	$(PYTEST) $(PYTEST_ARGS)

test-slow: setup
	$(PYTEST) -m slow $(PYTEST_ARGS)

demo: setup
	$(PY) -m widgets.notebooks run 00_quickstart --out runs/demo --size full

bench: setup
	$(PY) -m benchmarks all --json

zoo: setup
	$(PY) -m workbench zoo build

CLAIMS_DIR ?= runs/claims-$(shell date +%Y%m%d-%H%M%S)
claims: setup
	$(PY) -m widgets.notebooks run $(shell ls results/*.json | xargs -n1 basename | sed 's/\.json$$//') --out $(CLAIMS_DIR) --size full
	$(PY) -m workbench.claims check $(CLAIMS_DIR)

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
