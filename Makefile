# Two entry points for a fresh machine (see README):
#   make demo   -- set up .venv and run `advimage demo`
#   make test   -- set up .venv and run the test suite
# The CPU build of torch 2.13.0 is installed first, so the range in pyproject.toml is already
# satisfied and pip never pulls a multi-GB CUDA build; torchvision is never needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-all lint peers bench bench-quick clean

$(BIN)/advimage: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/advimage

setup: $(BIN)/advimage

demo: setup
	$(BIN)/advimage demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

# Peers for differential tests and benchmarks; torchattacks without its torchvision pin.
peers: setup
	$(BIN)/python -m pip install --quiet -e ".[peers]"
	$(BIN)/python -m pip install --quiet --no-deps torchattacks

bench: peers
	$(BIN)/python bench/attack_speed.py

# Every benchmark at a small size, one verdict line per target (met / NOT met with the figure).
# Noisy timings: a tripwire before committing a change to a measured path, not part of CI.
bench-quick: peers
	$(BIN)/python bench/quick.py $(if $(THREADS),--threads $(THREADS))

clean:
	rm -rf $(VENV) build *.egg-info
