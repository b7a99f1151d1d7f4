# make setup | demo | test | findings | lint | bench       (each sets up .venv first when needed)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-kernels findings lint bench clean

setup: $(STAMP)

# torch first, pinned to the wheels on disk, so no requirement pulls another torch; the
# parity extra holds the public references of the geometry metrics (tests/test_parity_geometry.py)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,parity]'
	touch $(STAMP)

demo: setup
	$(PY) -m latentgeo.demo

# two workers of one thread each (pytest-xdist); a file's tests stay on one worker, so module
# fixtures such as the local Slurm start once
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=15 -m "not findings" tests \
	  || { code=$$?; [ $$code -ne 5 ] || echo "pytest collected no tests" >&2; exit $$code; }

# the tests that see CPU kernels (golden numbers, fault recovery equal to an uninterrupted run)
# again under ATen's plain kernels: what another CPU computes (CI runs it after make test)
test-kernels: setup
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile \
	  tests/test_golden.py tests/test_faults.py tests/test_evaluate.py \
	  || { code=$$?; [ $$code -ne 5 ] || echo "pytest collected no tests" >&2; exit $$code; }

# the seeds' published effects, reproduced on small real-data runs (tests/findings/, ~15 min
# on 2 cores); pytest's exit 5 (nothing collected) fails with a message
findings: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=0 -m findings tests/findings \
	  || { code=$$?; [ $$code -ne 5 ] || echo "pytest collected no findings tests" >&2; exit $$code; }

lint: setup
	$(PY) -m ruff check latentgeo hydra_plugins tests benchmarks

bench: setup
	for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) outputs multirun
