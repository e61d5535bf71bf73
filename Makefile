# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test install install-test lint bench clean slurm-start slurm-stop

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

# Tests run against the real components: Horovod (built from source, cached after the first
# build) and a two-node Slurm cluster on this machine (Debian packages, installed as root).
$(VENV)/.installed-test: $(VENV)/.installed scripts/install_horovod.sh
	$(PIP) install --quiet -e '.[test]'
	PYTHON=$(PY) scripts/install_horovod.sh
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The main job: the packaged default config (digits, a small CNN) end to end.
demo: install
	$(VENV)/bin/harness doctor || true
	$(VENV)/bin/harness train --overwrite

test: install-test
	slurm/cluster.sh install
	$(PY) -m ruff check harness tests scripts
	$(PY) -m mypy harness
	HARNESS_REQUIRE_HOROVOD=1 $(PY) -m pytest -q; status=$$?; slurm/cluster.sh stop; exit $$status

lint: install-test
	$(PY) -m ruff check harness tests scripts
	$(PY) -m mypy harness

bench: install-test
	$(PY) scripts/bench_throughput.py
	$(PY) scripts/bench_scaling.py
	$(PY) scripts/bench_scaling.py --batch-size 128 --section bench_scaling_batch128
	$(PY) scripts/bench_allreduce.py
	$(PY) scripts/bench_huge_pages.py
	$(PY) scripts/bench_input.py
	$(PY) scripts/bench_submit.py
	$(PY) scripts/bench_sweep.py

# A real two-node Slurm cluster on this machine, for trying submission without a cluster.
slurm-start:
	slurm/cluster.sh install
	slurm/cluster.sh start

slurm-stop:
	slurm/cluster.sh stop

clean:
	rm -rf runs comparison .pytest_cache
