# eet-lightning: `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format quickstart compare score clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: ## create .venv and install the package (editable) with its dev tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'

test: ## run the whole test suite (CPU)
	$(BIN)/python -m pytest -q

test-fast: ## the test suite without the slow end-to-end runs
	$(BIN)/python -m pytest -q -m "not slow and not ddp"

lint: ## ruff check + format check
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks

format: ## apply ruff's formatting and fixes
	$(BIN)/ruff format src tests scripts benchmarks
	$(BIN)/ruff check --fix src tests scripts benchmarks

quickstart: ## train EET on the built-in synthetic faces (CPU, ~8 min), then score it against ground truth
	$(BIN)/eet-fit --config configs/synthetic.yaml --run_dir runs/synthetic --resume true
	$(BIN)/python scripts/score_synthetic.py --ckpt runs/synthetic/stage2/last.ckpt --config runs/synthetic/config.yaml --out runs/synthetic/score.json

compare: ## train EET, GANimation and StarGAN at one budget on the synthetic faces and print the comparison (CPU, ~40 min)
	$(BIN)/python scripts/compare_methods.py --out runs/compare

.PHONY: bench
bench: ## speed and memory against this machine's matmul rate -> runs/bench.json (CPU: < 10 min); BENCH_ARGS=...
	$(BIN)/python benchmarks/bench.py --out runs/bench.json $(BENCH_ARGS)

clean: ## remove run folders and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache
