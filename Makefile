# EmoFlow: `make run` runs the whole pipeline on the built-in sample, `make test` the tests.
# Both create .venv and install the locked dependencies first.

PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# The machine may be offline: no usage analytics from any tool.
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run test test-fast lock clean

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro
	@cat reports/promotion.json

test: install
	pytest -n 2 --durations=15

test-fast: install
	pytest -n 2 -m "not slow"

# Refresh the lock after changing dependencies in pyproject.toml.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf data/sample data/interim data/processed models reports mlflow.db mlruns
