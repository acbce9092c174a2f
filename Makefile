# One command per dev task; CI runs the same ones (.ci/run -> make test).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install test test-fast test-browser test-repeat lint format demo bench screenshots clean

N ?= 5
# Test processes (pytest-xdist); each starts its own broker and emulators. 0 runs in one.
WORKERS ?= 2
XDIST = -n $(WORKERS) --dist loadfile

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install sfamp with its dev tools

test: install ## Run the whole test suite in WORKERS=2 processes (each starts its own broker and emulators)
	$(PY) -m pytest $(XDIST)

test-fast: install ## Run only the tests that need no network
	$(PY) -m pytest $(XDIST) -m "not integration"

test-browser: install ## Run the web console's browser tests (they skip without Chromium)
	$(PY) -m pytest tests/console/browser

test-repeat: install ## Run the integration tests N times (N=5) beside a CPU-bound process
	@$(PY) -c "while True: pass" & burner=$$!; trap "kill $$burner" EXIT; \
	for run in $$(seq $(N)); do \
		echo "== integration run $$run of $(N), one core kept busy"; \
		$(PY) -m pytest $(XDIST) -q -m integration || exit 1; \
	done

lint: install ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check pipeline sfamp_sandbox tests benchmarks scripts
	$(VENV)/bin/ruff format --check pipeline sfamp_sandbox tests benchmarks scripts
	$(VENV)/bin/mypy pipeline sfamp_sandbox benchmarks

format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix pipeline sfamp_sandbox tests benchmarks scripts
	$(VENV)/bin/ruff format pipeline sfamp_sandbox tests benchmarks scripts

demo: install ## Run the end-to-end demo on the embedded broker and sandboxes
	$(PY) -m pipeline demo

bench: install ## Run the benchmarks and print their figures
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

screenshots: install ## Redraw the README's web console screenshots (docs/console/*.png)
	$(PY) -m scripts.console_screenshots

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
