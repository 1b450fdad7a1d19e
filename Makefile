# Every target sets itself up: a virtual environment inside the repo, installed from pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out
JOB_ID ?= sample
PYTEST_ARGS ?=

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (DetPose needs Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/detpose run --output $(OUT) --job-id $(JOB_ID)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check schemas model pipeline jobs tests

bench: $(STAMP)
	$(VENV)/bin/detpose bench --output bench

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
