"""The registry end to end: champion, refusal, promotion, rollback, races and faults.

One small sample is prepared per module; each candidate is a real (tiny) training run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from emoflow.components.judging import registry
from emoflow.components.mlflow_store import StoreError
from emoflow.components.settings import load_params
from emoflow.flows import stages
from tests.conftest import TINY_OVERRIDES, write_params
from tests.processes import free_ports

pytestmark = pytest.mark.slow
NAME = "emoflow-fer7"
KEY = "convnn-fer7"
GATE = {
    "value_thresholds": {"fer2013.accuracy": 0.0},
    "change_thresholds": {"fer2013.accuracy": 0.02},
}


def settings_for(project: Path, name: str = "params.yaml", **train) -> object:
    overrides = {
        **TINY_OVERRIDES,
        "sample": {"images_per_class": 30, "ckplus_subjects": 3, "ckplus_frames": 4},
        "train": {**TINY_OVERRIDES["train"], **train},
        "promote": GATE,
    }
    path = write_params(project, overrides)
    return load_params(path.rename(project / name))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("registry-project")
    previous = Path.cwd()
    os.chdir(folder)
    try:
        params = settings_for(folder)
        for stage in stages.DATA_STAGES.values():
            stage(params)
    finally:
        os.chdir(previous)
    return folder


@pytest.fixture
def client(project, monkeypatch) -> mlflow.MlflowClient:
    monkeypatch.chdir(project)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # Explicit registry: an earlier test in this process may have set MLflow's global one.
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def candidate(**train):
    """Train, evaluate and promote one candidate; return its blessing."""
    params = settings_for(Path.cwd(), **train)
    [cell] = params.train.grid()
    stages.train(params, cell)
    stages.evaluate(params, cell)
    return stages.promote(params, cell)


def champion_version(client) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def test_champion_refusal_promotion_and_rollback(client, project):
    first = candidate(epochs=6)
    assert first.passed and first.version == "1" and champion_version(client) == "1"
    report = json.loads(first.report.read_text())
    assert (
        report["note"].startswith("first model of this name") and report["champion_before"] is None
    )
    assert report["champion_after"] == "1", "read back from the registry after the move"

    worse = candidate(epochs=1, learning_rate=1e-9, seed=11)
    assert worse.value_passed and not worse.passed, (
        "a weak model may be a challenger, never the champion"
    )
    assert champion_version(client) == "1"
    assert (
        str(client.get_model_version_by_alias(NAME, "challenger").version) == worse.version == "2"
    )
    refused = json.loads(worse.report.read_text())
    change = next(c for c in refused["checks"] if c["kind"] == "change")
    assert (
        change["passed"] is False and refused["champion_before"] == refused["champion_after"] == "1"
    )
    assert refused["champion_metrics"]["fer2013"]["accuracy"] == pytest.approx(
        json.loads((project / f"reports/evaluation/{KEY}/metrics.json").read_text())["fer2013"][
            "accuracy"
        ],
        abs=1,
    )

    better = candidate(epochs=30, seed=12)
    assert better.passed and better.version == "3" and champion_version(client) == "3"
    tags = client.get_model_version(NAME, "3").tags
    assert (
        tags["blessing"] == "passed"
        and tags["architecture"] == "convnn"
        and tags["emotion_set"] == "fer7"
    )
    assert len(tags["data_hash"]) == 16 and len(tags["params_hash"]) == 16 and tags["git_commit"]
    assert client.get_model_version(NAME, "2").tags["blessing"] == "failed"

    assert registry.rollback(client, NAME, settings_for(project).mlflow) == ("3", "1"), (
        "v2 was never blessed, so rollback skips it"
    )
    assert champion_version(client) == "1"
    listed = {v.version: v.aliases for v in registry.versions(client, NAME)}
    assert listed == {"1": ("champion",), "2": (), "3": ("challenger",)}, (
        "what `emoflow registry` prints"
    )


def test_promoting_the_same_run_again_registers_nothing_new(client, project):
    params = settings_for(project)
    [cell] = params.train.grid()
    before = len(client.search_model_versions(f"name = '{NAME}'"))
    again = stages.promote(params, cell)
    assert len(client.search_model_versions(f"name = '{NAME}'")) == before
    assert again.version == "3", "the last candidate trained was v3: its run keeps its version"


def test_the_champion_is_rescored_without_running_its_python_code(client, project, monkeypatch):
    """Loading a registry model runs its code file (or the pickle of an older one): promote
    reads only its Keras file."""
    import cloudpickle

    def refuse(*args, **kwargs):
        raise AssertionError("promote loaded the registry model's pickled code")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", refuse)
    monkeypatch.setattr(cloudpickle, "load", refuse)
    monkeypatch.setattr(cloudpickle, "loads", refuse)
    blessing = stages.promote(settings_for(project), settings_for(project).train.grid()[0])
    assert blessing.value_passed and json.loads(blessing.report.read_text())["champion_metrics"]


def test_two_processes_promoting_at_once_leave_one_consistent_champion(client, project):
    for folder in ("models_a", "models_b"):
        shutil.copytree(project / "models", project / folder, dirs_exist_ok=True)
    # Both copies hold the same run: the race must still end in one version of it.
    race = {
        "value_thresholds": {"fer2013.accuracy": 0.0},
        "change_thresholds": {},
        "model_name": "race-{emotion_set}",
    }
    commands = []
    for folder in ("models_a", "models_b"):
        path = write_params(
            project,
            {
                **TINY_OVERRIDES,
                "train": {**TINY_OVERRIDES["train"], "out_dir": folder},
                "promote": race,
            },
        )
        commands.append(path.rename(project / f"{folder}.yaml"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    running = [
        subprocess.Popen(
            ["emoflow", "promote", "-p", str(p)],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in commands
    ]
    outputs = [p.communicate(timeout=300)[0] for p in running]
    assert all(p.returncode == 0 for p in running), outputs
    versions = client.search_model_versions("name = 'race-fer7'")
    assert len(versions) == 1, "one run, one version, however many promoters race"
    assert str(client.get_model_version_by_alias("race-fer7", "champion").version) == str(
        versions[0].version
    )


def test_an_unreachable_store_fails_promote_in_bounded_time_naming_it(project, monkeypatch):
    """MLflow's own retries of a refused connection would take about 16 minutes: the project
    bounds them (mlflow.http_retries, request_timeout_seconds) and its own (retry_seconds)."""
    monkeypatch.chdir(project)
    [port] = free_ports(1)  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    for variable in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(variable, "unset by the test")  # restored afterwards, then:
        monkeypatch.delenv(variable)  # the project's settings apply
    params = settings_for(project)
    params = params.model_copy(
        update={"mlflow": params.mlflow.model_copy(update={"retry_seconds": 4})}
    )
    [cell] = params.train.grid()
    started = time.monotonic()
    with pytest.raises(
        StoreError, match=rf"^MLflow store http://127.0.0.1:{port}: .* tries in 4 s"
    ):
        stages.promote(params, cell)
    assert time.monotonic() - started < 60


def test_missing_candidate_is_a_clear_error(project, monkeypatch):
    from emoflow.components.judging.evaluate import EvaluationError

    monkeypatch.chdir(project)
    params = settings_for(project)
    params = params.model_copy(
        update={"train": params.train.model_copy(update={"out_dir": Path("nowhere")})}
    )
    [cell] = params.train.grid()
    with pytest.raises(EvaluationError, match=r"nowhere/convnn-fer7: no trained candidate here"):
        stages.promote(params, cell)
