# The README's two commands are `make demo` and `make test`. Both create and use a project
# virtualenv (.venv in the checkout) and install into it; nothing goes into the system python.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# Reinstall (and rebuild the C++ engine) only when the build inputs change.
STAMP := $(VENV)/.looptune-installed
BUILD_INPUTS := pyproject.toml CMakeLists.txt scripts/install_deps.sh $(shell find cpp -type f)
# The editable install maps each module to its file: a module added, moved or removed needs a
# reinstall. MODULES lists them and changes (mtime included) only when the list does.
MODULES := $(VENV)/.looptune-modules

.PHONY: deps dev test bench demo clean-venv FORCE

# The installer announces each of its steps itself ("[looptune setup] 3/5 ..."), so make's
# echo of the command is left out.
$(MODULES): FORCE
	@mkdir -p $(VENV) && find python/looptune -name '*.py' | sort > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(STAMP): $(BUILD_INPUTS) $(MODULES)
	@PY=$(PY) VENV=$(VENV) bash scripts/install_deps.sh
	@touch $@

deps dev: $(STAMP)  ## venv + system and Python dependencies + the engine (idempotent)

# -rs names every skipped test with its reason (on a CPU with AVX-512, nothing is skipped)
test: $(STAMP)  ## the test suite (slow tests are deselected by default; `-m slow` runs them)
	$(VPY) -m pytest -q -rs

bench: $(STAMP)  ## every benchmark, one after another
	$(VPY) benchmarks/codegen.py
	$(VPY) benchmarks/env_speed.py
	$(VPY) benchmarks/paper_table.py

demo: $(STAMP)  ## a real tuning run with the shipped agent, compared with numpy
	$(VENV)/bin/looptune tune matmul 128 256 64

clean-venv:
	rm -rf $(VENV)
