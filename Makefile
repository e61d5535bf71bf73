# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test install install-test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The main job: the packaged default config (digits, a small CNN) end to end.
demo: install
	$(VENV)/bin/harness doctor || true
	$(VENV)/bin/harness train --overwrite

test: install-test
	$(PY) -m ruff check harness tests scripts
	$(PY) -m mypy harness
	$(PY) -m pytest -q

lint: install-test
	$(PY) -m ruff check harness tests scripts
	$(PY) -m mypy harness

bench: install
	$(PY) scripts/bench_throughput.py

clean:
	rm -rf runs comparison .pytest_cache
