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
# Prefect's temporary API server may need more than its default 20 s on a loaded machine.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180

.PHONY: install run run-real test test-fast lint format lock clean ui ui-stop deploy worker bench-video

# The web assets (npm's Vega, Bootstrap, ...: components/web_assets.py) make the Data Docs and
# `dvc plots show` pages work offline; without the npm registry they keep their CDN links.
$(VENV)/.installed: pyproject.toml requirements.lock components/web_assets.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[pipeline,test]'
	$(BIN)/python -m emoflow.components.web_assets || echo "web assets not fetched: reports will load them from CDNs" >&2
	touch $@

install: $(VENV)/.installed

# The whole pipeline as one Prefect flow run (so `make ui` shows it beside its MLflow run), then
# `dvc commit` records the flow's outputs in dvc.lock: the stages DVC runs are the flow's, so
# `dvc repro` afterwards has nothing to do.
run: install
	emoflow pipeline
	dvc commit --force --quiet
	emoflow registry

# The whole pipeline on real FER2013 + CK+ (a folder laid out like ../shared/data) with the CPU
# recipe and the real-data gates: params.yaml's profiles.real-data, as one Prefect flow run.
DATA ?= ../shared/data
run-real: install
	emoflow pipeline --profile real-data --data $(DATA)
	emoflow registry

test: install
	pytest -n 2 --dist loadfile --durations=15

test-fast: install
	pytest -n 2 --dist loadfile -m "not slow"

# ruff, configured in pyproject.toml: lint rules and the format check (CI runs both).
lint: install
	ruff check .
	ruff format --check .

format: install
	ruff check --fix .
	ruff format .

# The MLflow and Prefect servers (and their UIs) on loopback, in the background: infra/local.env
# has their addresses. `make deploy` registers the nightly deployment, `make worker` runs it.
ui: install
	infra/mlflow-server.sh start
	infra/prefect-server.sh start

ui-stop:
	infra/prefect-server.sh stop
	infra/mlflow-server.sh stop

deploy: install
	infra/prefect-deploy.sh nightly

worker: install
	infra/prefect-worker.sh

# bench/video.py compares with the `fer` package. fer's metadata pulls torch and
# opencv-contrib-python (which clashes with opencv-python-headless), and it needs neither for
# the Haar + Keras path measured: installed without dependencies, so it is no extra.
bench-video: install
	$(BIN)/python -m pip install --quiet --no-deps fer==25.10.3
	python bench/video.py

# Refresh the lock after changing dependencies in pyproject.toml.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^fer==' > requirements.lock  # fer: bench only

clean:
	rm -rf data/sample data/interim data/processed models reports mlflow.db mlruns
