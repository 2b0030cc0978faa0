# Every target does its own set-up first, so `make demo` and `make test` work on a fresh machine.
# Set-up steps leave stamps in .venv/ and are skipped when their inputs have not changed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes side by side (pytest-xdist); tests/conftest.py keeps what shares a component together.
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 3
BENCH_ARGS ?=

.PHONY: setup system-packages venv bytecode demo test bench lint clean

setup: system-packages venv bytecode

system-packages:
	@bash scripts/install-system-packages.sh

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"

# uv installs the ~180 packages in about 20 s where pip takes about 65 s (parallel downloads, a
# linked cache); pip itself installs only uv, at the constraints' version. --compile-bytecode as pip
# does: where PYTHONDONTWRITEBYTECODE is set (the machines this suite runs on set it), no .pyc is written later, and every
# Airflow, Dask and CASA process would compile its imports from source again (the suite took 35 %
# longer so).
$(STAMP): $(PY) pyproject.toml requirements/constraints.txt
	$(PY) -m pip install -q -c requirements/constraints.txt uv
	$(PY) -m uv pip install -q --compile-bytecode --python $(PY) -c requirements/constraints.txt -e '.[test,casa]'
	$(PY) -m pclean_provider.casa.runtime --check
	touch $(STAMP)

venv: $(STAMP)

# The project is installed editable, so --compile-bytecode leaves its own modules out, and where
# PYTHONDONTWRITEBYTECODE is set every process that imports it (each pclean() call, Dask worker,
# Airflow task) compiled them from source again: 0.1 s of every call, measured against a small
# cube's 1 s. compileall skips what is up to date, so this costs nothing on the next run.
bytecode: $(STAMP)
	$(PY) -m compileall -q pclean_provider bench

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --no-loadscope-reorder $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint docker/Dockerfile docker/Dockerfile.slurm

clean:
	rm -rf build *.egg-info .pytest_cache work
