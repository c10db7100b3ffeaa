# One file of targets for people and CI alike. `make demo` and `make test` set everything up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: the one on PATH, else a private copy in .tools/ (installed from PyPI with pip).
UV ?= $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --locked
PYTEST_ARGS ?=

.PHONY: help setup demo test lint format bench clean-home env up down dashboards audit

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet 'uv>=0.5,<1'

setup: $(UV) ## Create .venv with every dependency group from the lock file
	$(UV) sync --locked --all-groups

demo: setup ## Set up, then run the main job (replay the default use case through the loop)
	$(RUN) rollguard demo

test: setup ## Set up, then run the linters, the import layers and the whole test suite
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports
	$(RUN) pytest $(PYTEST_ARGS)

lint: setup ## Linters, the import layers (docs/design.md, "Layers") and type checks only
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports
	$(RUN) mypy rollguard

# Needs the OSV service (network): not part of `make test` nor CI; docs/security.md, "Dependency audit".
audit: $(UV) ## Check every locked dependency (uv.lock, all groups) against the OSV vulnerability database
	$(UV) audit --locked --preview-features audit-command

format: setup ## Apply the formatter and safe lint fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: setup ## Run every benchmark script
	for script in benchmarks/bench_*.py; do $(RUN) python $$script || exit 1; done

clean-home: ## Delete the embedded state folder (.rollguard/)
	rm -rf .rollguard

# --- the full stack (docker compose; guide: docs/deploy.md) ----------------------------------------
COMPOSE ?= docker compose

env: ## Write .env with fresh random secrets (refuses to overwrite an existing one)
	python3 deploy/generate_env.py

up: ## Build and start the full stack; waits until every service is healthy
	@test -f .env || { echo "no .env: run 'make env' first (or copy .env.example and fill it in)"; exit 2; }
	$(COMPOSE) up --build --detach --wait --wait-timeout 900

down: ## Stop the stack (data volumes are kept; `docker compose down -v` deletes them)
	$(COMPOSE) down

dashboards: setup ## Regenerate grafana/dashboards/*.json from grafana/dashboards_src (commit the result)
	$(RUN) python -m grafana.dashboards_src
