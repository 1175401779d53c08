# Developer shortcuts. The README's two commands are `make demo` and `make test`.
PY ?= python3
PIP ?= $(PY) -m pip

.PHONY: deps dev test bench demo

deps:           ## system + Python dependencies (idempotent)
	PY=$(PY) bash scripts/install_deps.sh

dev: deps       ## build the C++ engine and install the package in editable mode
	$(PIP) install --no-build-isolation -e . -q

test: dev       ## the test suite (slow tests are deselected by default)
	$(PY) -m pytest -q

bench: dev      ## every benchmark, one after another
	$(PY) benchmarks/codegen.py
	$(PY) benchmarks/env_speed.py
	$(PY) benchmarks/paper_table.py

demo: dev       ## a real tuning run with the shipped agent, compared with numpy
	$(PY) -m looptune tune matmul 128 256 64
