# The README's commands. `make run` and `make test` work on a fresh machine: they set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
# The embedded server's 20 s start-up limit is too short on a busy 2-core machine.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
PREFECT_PORT ?= 4200
API_URL := http://127.0.0.1:$(PREFECT_PORT)/api

.PHONY: setup run test test-fast lint server deploy worker serve watch versions rollback clean

$(BIN)/intentflow: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned: its CPU build is on the machine, any other version pulls GBs of CUDA packages.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(BIN)/intentflow

setup: $(BIN)/intentflow

## The main job: the retrain flow on the bundled outcomes, on Prefect's embedded server (or PREFECT_API_URL's).
run: setup
	$(BIN)/intentflow retrain

## Lint and the whole test suite.
test: setup lint
	$(BIN)/python -m pytest

## The suite without the tests marked slow (servers, killed or racing processes, the main job): for a quick check.
test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow" -q -n 2

lint: setup
	$(BIN)/ruff check .

## A local Prefect server and UI on http://127.0.0.1:4200 (leave it running in its own terminal).
server: setup
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

## Register the deployments in prefect.yaml (monthly retrain + outcome-change trigger, nightly check of production).
deploy: setup
	PREFECT_API_URL=$(API_URL) $(BIN)/prefect work-pool create intentflow-process --type process --overwrite
	PREFECT_API_URL=$(API_URL) $(BIN)/prefect deploy --all

## A process worker that runs the deployed flow runs.
worker: setup
	PREFECT_API_URL=$(API_URL) $(BIN)/prefect worker start --pool intentflow-process

## Serve every deployment of prefect.yaml from one process instead of deploy + worker.
serve: setup
	PREFECT_API_URL=$(API_URL) $(BIN)/intentflow serve

## Emit an event to the server whenever the outcome files change.
watch: setup
	PREFECT_API_URL=$(API_URL) $(BIN)/intentflow watch

versions: setup
	$(BIN)/intentflow versions

rollback: setup
	$(BIN)/intentflow rollback

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data
