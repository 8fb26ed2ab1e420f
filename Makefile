# One entry point for setting up, running the Quickstart, testing and linting.
# The virtual environment lives in .venv; torch is pinned first. Plain PyPI serves Linux the CUDA
# build (a few GB); TORCH_INDEX=https://download.pytorch.org/whl/cpu asks for the CPU one instead.
VENV ?= .venv
TORCH_INDEX ?=
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The optional extras the tests exercise (Ray for grids on a cluster, submitit for Slurm), installed for the tests only.
EXTRAS_STAMP := $(VENV)/.extras

.PHONY: setup data quickstart test test-fast lint docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(STAMP)

$(EXTRAS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,slurm]'
	touch $@

data:
	bash scripts/get-data.sh

quickstart: setup data
	$(BIN)/panning run --model lenet5 --dataset fashion-mnist --method panning --sparsity 0.99 \
		--epochs 2 --out runs/quickstart-$$(date +%Y%m%d-%H%M%S)

test: setup data $(EXTRAS_STAMP)
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

docs: setup
	$(BIN)/mkdocs build --strict --quiet

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
