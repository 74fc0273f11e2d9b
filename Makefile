# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-quick bench fashion-mnist lint clean

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

FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
fashion-mnist:  ## Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist); prints the command where apt is missing
	@if [ -f $(FASHION_MNIST)/t10k-labels-idx1-ubyte.gz ] || [ -n "$$KPID_FASHION_MNIST" ]; then echo "fashion-mnist: present"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist); \
	else echo "fashion-mnist: missing; install it with: sudo apt-get install -y dataset-fashion-mnist" \
	  "(Debian/Ubuntu), or set KPID_FASHION_MNIST to a folder holding the four IDX files"; exit 1; fi

bench: $(STAMP) fashion-mnist
	for b in knapsack budget latency quality ablation; do $(PY) bench/$$b.py --quick || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check kpid_core sweeps analysis bench tests

clean:
	rm -rf $(VENV) .pytest_cache
