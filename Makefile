# Two commands from a fresh clone: `make run` (the main job) and `make test` (the tests).
# Each bootstraps .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A model plugin the tests use (the `toy` model, through the mmtune.models entry point).
TOY_PLUGIN := tests/plugins/mmtune_toy_plugin

.PHONY: run test test-all lint train clean

$(STAMP): pyproject.toml requirements.lock $(TOY_PLUGIN)/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	$(BIN)/python -m pip install -q -e $(TOY_PLUGIN)
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python run_search.py $(ARGS)

train: $(STAMP)
	$(BIN)/mmtune train $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check mmtune tests run_search.py scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check mmtune tests run_search.py scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache
