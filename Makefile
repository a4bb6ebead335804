# gov_pipeline — the targets the README names.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# make test runs its test files on this many pytest-xdist workers (a file stays on one worker:
# its module fixtures start once). Most of the suite waits on real processes, so three
# workers on two cores take about a third of the serial time; TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 3

.PHONY: help install services browser lint format typecheck test unit demo dev bench bench-big bench-parts soak soak-hosts screenshots clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install the project with its dev tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

services: ## Make sure PostgreSQL and Redis are running (starts or installs them)
	@bash scripts/ensure-services.sh

browser: ## Make sure headless Chromium is installed (for the browser test)
	@bash scripts/ensure-chromium.sh

lint: install ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## ruff format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install ## mypy (strict) on the package
	$(BIN)/mypy

unit: install ## Unit tests only (no services needed)
	$(BIN)/pytest gov_pipeline_tests/unit $(PYTEST_ARGS)

test: install services browser lint typecheck ## The whole suite: lint, types, unit, integration, e2e, browser
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m 'not soak' $(PYTEST_ARGS)

demo: install ## Run the main flow end to end on the embedded default (no server needed)
	$(BIN)/python -m gov_pipeline.demo

bench: install services ## End-to-end benchmark, four configurations side by side: ~30 min
	mkdir -p benchmarks/results
	$(BIN)/python -m benchmarks.pipeline --json benchmarks/results/pipeline.json

bench-big: install services ## 100,000 changes through `ours`: throughput and the worker's RSS over time: ~40 min
	mkdir -p benchmarks/results
	$(BIN)/python -m benchmarks.pipeline --configs ours --workloads burst --burst 100000 \
	  --sensor-rows 0 --timeout 7200 --json benchmarks/results/pipeline_big.json

bench-parts: install services ## Focused benchmarks: capture cost, sync floor, runs/s: ~15 min
	mkdir -p benchmarks/results
	$(BIN)/python -m benchmarks.capture_cost --json benchmarks/results/capture_cost.json
	$(BIN)/python -m benchmarks.sync_floor --json benchmarks/results/sync_floor.json
	$(BIN)/python -m benchmarks.coordinator_throughput --json benchmarks/results/coordinator_throughput.json

soak: install services ## 20,000 changes, 3 workers, one SIGKILLed at random; checker at the end
	$(BIN)/python -m gov_pipeline_tests.reliability.soak --changes 20000 --workers 3 \
	  --json test-artifacts/reliability/soak.json

soak-hosts: install services ## The tests across hosts, long: a worker host away 60 s, Redis 90 s, 2,000 updates on lossy links: ~90 min
	GOV_HOSTS_SOAK=1 $(BIN)/pytest -q -m '' gov_pipeline_tests/hosts

# make dev: the UI on GOV_PIPELINE_HOME's data (default: what make demo wrote) on PORT.
GOV_PIPELINE_HOME ?= .gov_pipeline/demo
PORT ?= 3000
DEV_HOME = $(abspath $(GOV_PIPELINE_HOME))
DEV_ENV = GOV_PIPELINE_HOME=$(DEV_HOME) DAGSTER_HOME=$(DEV_HOME)/dagster

dev: install ## Dagster UI and daemon on the demo's data: PORT=3000, GOV_PIPELINE_HOME=.gov_pipeline/demo
	$(DEV_ENV) $(BIN)/gov-pipeline db upgrade
	$(DEV_ENV) $(BIN)/python -c "from gov_pipeline.config import load_settings; \
	  from gov_pipeline.embedded.instance import embedded_dagster_home as h; h(load_settings())"
	$(DEV_ENV) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

screenshots: install services browser ## The pictures of docs/ui.md (a UI tour in headless Chromium): ~3 min
	$(BIN)/python -m gov_pipeline.embedded.ui_tour --out docs/ui

clean: ## Remove the virtualenv, caches and the embedded default's data
	rm -rf $(VENV) .gov_pipeline .pytest_cache .mypy_cache .ruff_cache *.egg-info
