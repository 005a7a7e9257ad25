# Two commands on a fresh clone: `make demo` (install + the main job) and `make test` (install + the tests).
# torch is installed first from its CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PIP_QUIET := --quiet --disable-pip-version-check --progress-bar off

.PHONY: install demo test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_QUIET) --upgrade pip
	$(PIP) install $(PIP_QUIET) torch==2.13.0
	$(PIP) install $(PIP_QUIET) -e ".[dev]"
	touch $@

demo: install
	$(BIN)/mmfm demo --workspace demo-workspace

# Two workers (pytest-xdist): tests/conftest.py hands a module (or the modules sharing a whole-pipeline session fixture)
# to one worker, so each fixture is built once, and hands out the longest first.
XDIST := -n 2 --dist loadscope --no-loadscope-reorder

test: install
	$(BIN)/pytest -q $(XDIST) --durations=15

test-fast: install
	$(BIN)/pytest -q -m "not slow" $(XDIST)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/synth.py

clean:
	rm -rf demo-workspace .pytest_cache
