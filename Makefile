# Two commands from a fresh clone: `make run` (the main job) and `make test` (the tests).
# Each bootstraps .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A model plugin the tests use (the `toy` model, through the mmtune.models entry point).
TOY_PLUGIN := tests/plugins/mmtune_toy_plugin

.PHONY: run test test-all lint train clean

TEST_STAMP := $(VENV)/.installed-test

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# A real MLflow tracking server for tests/search/test_cluster.py (a 2-node sweep logging live to it):
# the full `mlflow` package in its own venv, since it pins pyarrow<26 against requirements.lock's, and
# mlflow 3.18.0 (our client's version) has no matching mlflow-tracing on PyPI. Without it (no network)
# that test skips and says why.
MLFLOW_SERVER := $(VENV)/mlflow-server/bin/mlflow
MLFLOW_SERVER_VERSION := 3.17.2

$(MLFLOW_SERVER):
	($(PY) -m venv $(VENV)/mlflow-server && $(VENV)/mlflow-server/bin/python -m pip install -q \
	  mlflow==$(MLFLOW_SERVER_VERSION)) || echo "the MLflow server could not be installed: its cluster test will skip"

# Only the tests install the toy plugin, so that `make run` and `mmtune bench` see the built-in models.
$(TEST_STAMP): $(STAMP) $(TOY_PLUGIN)/pyproject.toml
	$(BIN)/python -m pip install -q --no-deps -e $(TOY_PLUGIN)
	touch $(TEST_STAMP)

run: $(STAMP)
	$(BIN)/python run_search.py $(ARGS)

train: $(STAMP)
	$(BIN)/mmtune train $(ARGS)

# Two pytest workers (pytest-xdist): most tests wait on subprocesses, Ray or Chromium, so one core
# alone sits half idle. --dist loadgroup keeps the Ray sweeps (xdist_group "ray") on one worker, one
# at a time. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2

test: $(TEST_STAMP) $(MLFLOW_SERVER)
	$(BIN)/ruff check mmtune tests run_search.py scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check mmtune tests run_search.py scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache
