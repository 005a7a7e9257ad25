# Two commands on a fresh clone: `make demo` (install + the main job) and `make test` (install + the tests).
# torch is installed first from its CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PIP_QUIET := --quiet --disable-pip-version-check --progress-bar off

.PHONY: install demo test test-fast lint bench bench-deid clean

# Tesseract (Debian tesseract-ocr) reads radiographs for burned-in text; without it they are quarantined, not ingested.
install: $(VENV)/.installed
	@command -v tesseract >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; } || \
	  { echo "tesseract-ocr is needed (burned-in text screen): apt-get install tesseract-ocr, as root" >&2; exit 1; }

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

# presidio-evaluator's corpus generator pins pandas>=3 (ours: 2.3), so it goes in beside Presidio with --no-deps
bench-deid: install
	$(PIP) install $(PIP_QUIET) presidio-analyzer==2.2.366 presidio-anonymizer==2.2.366
	$(PIP) install $(PIP_QUIET) --no-deps presidio-evaluator==0.3.2
	$(BIN)/python bench/deid_text.py

clean:
	rm -rf demo-workspace .pytest_cache
