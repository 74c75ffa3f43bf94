# manyheads: the user's commands. `make help` lists them.
SHELL := /bin/bash
PY := .venv/bin/python
app ?=
ckpt ?=
out ?=
input ?=
export ?=
ARGS ?=
# `make test` runs one pytest-xdist worker per core (auto), each test file whole in one worker (its module fixtures
# built once); a test that hangs fails after TEST_TIMEOUT s instead of holding up the run. The signal method fails
# just that test; the thread method would end its worker, and a lost worker once left xdist waiting for good.
TEST_WORKERS ?= auto
TEST_TIMEOUT ?= 300
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --timeout $(TEST_TIMEOUT) --timeout-method signal

.DEFAULT_GOAL := help
.PHONY: help setup train test test-all eval export predict sweep bench lint format clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'
	@echo "  apps: $$(ls configs/app | sed 's/.yaml//' | tr '\n' ' ')"

setup: ## install everything into .venv (idempotent; seconds the second time)
	@bash scripts/setup.sh

train: setup ## make train app=NAME [ARGS="hydra overrides"]: train on the app's embedded data
	$(PY) -m common.pipeline.train $(if $(app),app=$(app)) $(ARGS)

test: setup ## the test suite without `slow` (what CI runs), on every core [TEST_WORKERS=0: in one process]
	$(PYTEST) $(ARGS)

test-all: setup ## every test, slow ones included
	$(PYTEST) -m "not gpu" --timeout 0 $(ARGS)

eval: setup ## make eval app=NAME [ckpt=PATH]: test a checkpoint (default: the latest run's)
	$(PY) -m common.pipeline.evaluate $(if $(app),app=$(app)) $(if $(ckpt),ckpt=$(ckpt)) $(ARGS)

export: setup ## make export app=NAME [ckpt=PATH] [out=DIR]: write the export folder
	$(PY) -m common.pipeline.export $(if $(app),app=$(app)) $(if $(ckpt),ckpt=$(ckpt)) $(if $(out),out=$(out)) $(ARGS)

predict: setup ## make predict app=NAME input=PATH [export=DIR]: run an export on a file
	$(PY) -m common.pipeline.predict $(if $(app),app=$(app)) $(if $(input),input=$(input)) $(if $(export),export_dir=$(export)) $(ARGS)

sweep: setup ## make sweep app=NAME [ARGS=...]: Optuna sweep over configs/sweep/NAME.yaml
	$(PY) -m common.pipeline.train -m $(if $(app),app=$(app) sweep=$(app)) $(ARGS)

bench: setup ## benchmarks into benchmarks/results/
	$(PY) -m benchmarks.run $(ARGS)

lint: setup ## ruff
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup ## ruff format and fixes
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean: ## remove runs, exports and caches (keeps .venv and data)
	rm -rf runs exports multirun outputs .pytest_cache .ruff_cache
