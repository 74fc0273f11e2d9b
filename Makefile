# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-quick bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import kpid_core._tv, torch_pruning, ray.tune, optuna"
	touch $(STAMP)

demo: $(STAMP)  ## the main job: a small sweep on the bundled digits data, ending in a Pareto plot
	$(PY) sweeps/run.py

test: $(STAMP)  ## the whole suite (what CI runs)
	$(PY) -m pytest

test-quick: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	for b in knapsack budget latency quality; do $(PY) bench/$$b.py --quick || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check kpid_core sweeps analysis bench tests

clean:
	rm -rf $(VENV) .pytest_cache
