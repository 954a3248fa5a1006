"""A tracking store that is missing, locked or away: every registry command retries for the
time params allow, then fails with one line naming the store, and creates nothing."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emoflow.components import mlflow_store
from emoflow.components.judging import registry
from emoflow.components.mlflow_store import StoreError
from emoflow.components.settings import MlflowSettings
from emoflow.flows.cli import app
from tests.conftest import write_params


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A real sqlite store holding one registered model of two versions, v2 champion (made
    once: MLflow's schema migrations take seconds)."""
    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        client = mlflow_store.connect(MlflowSettings(tracking_uri=sqlite(folder)), create=True)
    client.create_registered_model("faces")
    for _ in range(2):
        version = client.create_model_version("faces", str(folder), tags={"blessing": "passed"})
    client.set_registered_model_alias("faces", registry.CHAMPION, version.version)
    return folder / "mlflow.db"


@pytest.fixture
def store(template, tmp_path, monkeypatch) -> MlflowSettings:
    """A copy of the template store, retried for 3 s."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(template, tmp_path / template.name)
    return MlflowSettings(tracking_uri=sqlite(tmp_path), retry_seconds=3)


def sqlite(folder: Path) -> str:
    return f"{mlflow_store.SQLITE}{folder / 'mlflow.db'}"


@contextmanager
def locked(settings: MlflowSettings, seconds: float | None = None) -> Iterator[None]:
    """Hold the sqlite file's write lock (as a long transaction of another process would),
    for the block or, with ``seconds``, for that long."""
    path = settings.tracking_uri.removeprefix(mlflow_store.SQLITE)
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(seconds, connection.rollback) if seconds else None
    if release:
        release.start()
    try:
        yield
    finally:
        if release:
            release.join()
        connection.rollback()
        connection.close()


def test_a_locked_store_is_retried_then_named_in_one_line(store):
    client = mlflow_store.connect(store)
    started = time.monotonic()
    with locked(store), pytest.raises(StoreError) as raised:
        registry.rollback(client, "faces", store)
    message = str(raised.value)
    assert message.startswith(f"MLflow store {store.tracking_uri}: reading faces's champion")
    assert "database is locked" in message and "\n" not in message
    assert time.monotonic() - started < 60


def test_a_lock_released_within_the_retry_time_lets_the_command_through(store):
    client = mlflow_store.connect(store)
    patient = store.model_copy(update={"retry_seconds": 60})
    with locked(store, seconds=8):  # longer than sqlite's own 5 s wait: a retry must happen
        assert registry.rollback(client, "faces", patient) == ("2", "1")


def test_a_missing_sqlite_store_is_an_error_and_is_not_created(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path, {})
    for command in (["registry"], ["rollback", "faces"]):
        result = CliRunner().invoke(app, [*command, "-p", str(params)])
        assert result.exit_code == 1, result.output
        assert f"MLflow store sqlite:///{tmp_path / 'mlflow.db'}: no such file" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_the_registry_command_lists_through_retries(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    params = write_params(Path(store.tracking_uri.removeprefix(mlflow_store.SQLITE)).parent, {})
    with locked(store, seconds=7):
        result = CliRunner().invoke(app, ["registry", "-p", str(params)])
    assert result.exit_code == 0, result.output
    assert "faces" in result.output and "aliases=champion" in result.output


def test_the_registry_listing_as_json_for_scripts(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    params = write_params(Path(store.tracking_uri.removeprefix(mlflow_store.SQLITE)).parent, {})
    result = CliRunner().invoke(app, ["registry", "-p", str(params), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [(v["version"], v["aliases"], v["blessing"]) for v in listed["faces"]] == [
        ("1", [], "passed"),
        ("2", ["champion"], "passed"),
    ]


def test_the_version_is_the_installed_distributions():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"emoflow {version('emoflow')}"


@pytest.mark.slow
def test_trainings_started_side_by_side_on_a_fresh_store_all_open_it(tmp_path, monkeypatch):
    """Opening a fresh sqlite store creates its tables; trainings that open it at once (the
    grid's cells on Dask workers) must not race each other into "table already exists"."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    opener = (
        "import sys; from emoflow.components import mlflow_store; "
        "from emoflow.components.settings import MlflowSettings; "
        "mlflow_store.connect(MlflowSettings(tracking_uri=sys.argv[1]), create=True)"
    )
    uri = sqlite(tmp_path / "fresh")
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", opener, uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        outputs = [opener.communicate(timeout=300)[0] for opener in openers]
    finally:
        for process in openers:
            process.kill()
    assert [p.returncode for p in openers] == [0] * 4, "\n".join(outputs)
    experiments = mlflow_store.connect(MlflowSettings(tracking_uri=uri)).search_experiments()
    assert [e.name for e in experiments].count("emoflow") == 1
