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

install: ## create .venv and install the package (editable) with its dev tools, and Chromium for the browser test
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	@$(MAKE) --no-print-directory browser

# The eet-demo browser test drives Debian's Chromium through its ChromeDriver. As root with apt-get, install
# them when missing; otherwise say how (the test then skips, unless EET_REQUIRE_BROWSER=1 as in CI).
.PHONY: browser
browser: ## install Debian's chromium + chromium-driver for the browser test (root, apt-get)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "browser test: $$(chromium --version 2>/dev/null | head -1), chromedriver found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; }; \
	else \
		echo "browser test: install Chromium and its driver (Debian: sudo apt-get install chromium chromium-driver)"; \
	fi

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
