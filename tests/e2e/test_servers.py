"""The local servers of infra/, for real: started by their scripts on free loopback ports, used
by the pipeline, stopped, and checked to leave no process behind.

- Prefect: the server, the `nightly` deployment of prefect.yaml (infra/prefect-deploy.sh), a
  process worker (infra/prefect-worker.sh); one run is triggered and must complete and
  register a model, with the outcome and gate artifacts in the server.
- MLflow: the tracking server with a sqlite store and proxied artifacts; the tiny pipeline
  logs to it over HTTP; the run, its metrics, artifacts and champion are read back over HTTP.
- What `make ui` shows, in headless Chromium: the project's run, model and flow run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import psutil
import pytest

from emoflow.components.settings import load_params
from tests.browser import headless_chromium, page_text, shows, skip_without_browser
from tests.conftest import ROOT, TINY_OVERRIDES, write_params

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
INFRA = ROOT / "infra"
RUN_TIMEOUT = 300  # seconds for one flow run; about 30 on an idle 2-core machine
UI_SECONDS = 120  # for a UI page to render what it fetched, on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The scripts' environment: state under ``tmp_path``, no inherited server address."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["EMOFLOW_PROJECT"] = str(tmp_path / "project")  # whose stores the servers serve
    env["EMOFLOW_SERVERS"] = str(tmp_path / "servers")
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    return {**env, **values}


def run_script(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (
        f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of a process group."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def server(script: str, env: dict[str, str]) -> Iterator[int]:
    """A server started by ``infra/<script> start``, stopped by ``stop``; its group is checked."""
    name = script.split("-")[0]
    run_script([str(INFRA / script), "start"], env)
    pid = int((Path(env["EMOFLOW_SERVERS"]) / f"{name}.pid").read_text())
    try:
        yield pid
    finally:
        subprocess.run([str(INFRA / script), "stop"], env=env, capture_output=True, timeout=60)
        left = group_members(pid)
        kill_group(pid)
    assert not left, f"{script} stop left {[p.pid for p in left]} running"
    assert not (Path(env["EMOFLOW_SERVERS"]) / f"{name}.pid").exists()


@contextmanager
def worker(env: dict[str, str], project: Path, log: Path) -> Iterator[subprocess.Popen]:
    """infra/prefect-worker.sh in its own process group, stopped (then killed) at the end."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(INFRA / "prefect-worker.sh")],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        children = (
            psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        )
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            process.wait(timeout=10)
        left = [
            c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
        ] + group_members(process.pid)
        for p in left:
            p.kill()
    assert not left, f"the worker left {[p.pid for p in left]} running"


def tiny_project(folder: Path) -> Path:
    """The code, prefect.yaml and tiny settings, as a project folder a deployment runs in."""
    folder.mkdir()
    for name in ("components", "flows"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "prefect.yaml", folder / "prefect.yaml")
    write_params(folder, TINY_OVERRIDES)
    return folder


def registered_name(project: Path) -> str:
    params = load_params(project / "params.yaml")
    [cell] = params.train.grid()
    return params.promote.registered_name(cell)


@dataclass
class NightlyRun:
    """One run of the `nightly` deployment, read back while its Prefect server still runs."""

    env: dict[str, str]
    project: Path
    flow_run: Any
    seconds: float
    worker_log: str
    deployment: Any
    artifacts: dict[str, str]


@pytest.fixture(scope="module")
def nightly(tmp_path_factory) -> Iterator[NightlyRun]:
    """The Prefect server, the deployment, a worker and one run, as `make ui`, `make deploy`,
    `make worker` and `prefect deployment run` do; the server stays up for the module."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp_path = tmp_path_factory.mktemp("nightly")
    project = tiny_project(tmp_path / "project")
    port = free_port()
    env = server_env(
        tmp_path,
        PREFECT_SERVER_API_PORT=str(port),
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    api = f"http://127.0.0.1:{port}/api"
    with server("prefect-server.sh", env):
        deployed = run_script([str(INFRA / "prefect-deploy.sh"), "nightly"], env, cwd=project)
        assert "emoflow-training/nightly" in deployed
        with (
            worker(env, project, tmp_path / "worker.log"),
            temporary_settings({PREFECT_API_URL: api}),
        ):
            started = time.monotonic()
            flow_run = run_deployment(
                "emoflow-training/nightly", timeout=RUN_TIMEOUT, poll_interval=1
            )
            seconds = time.monotonic() - started
            with get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name("emoflow-training/nightly")
                artifacts = client.read_artifacts(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
                )
        yield NightlyRun(
            env,
            project,
            flow_run,
            seconds,
            (tmp_path / "worker.log").read_text(),
            deployment,
            {a.key: a.data for a in artifacts},
        )


def test_the_nightly_deployment_runs_on_a_prefect_server_and_registers_a_model(nightly):
    assert nightly.flow_run.state.is_completed(), (
        f"{nightly.flow_run.state} after {nightly.seconds:.0f}s; worker log:\n"
        f"{nightly.worker_log[-4000:]}"
    )
    assert nightly.deployment.parameters == {"params_path": "params.yaml"}
    schedules = nightly.deployment.schedules
    assert [s.schedule.cron for s in schedules] == ["0 3 * * *"] and schedules[0].active
    assert "**Completed**" in nightly.artifacts["emoflow-run"]
    name = registered_name(nightly.project)
    assert f"## {name}: **champion**, registered as version 1" in nightly.artifacts["emoflow-gate"]
    store = f"sqlite:///{nightly.project / 'mlflow.db'}"
    champion = mlflow.MlflowClient(
        tracking_uri=store, registry_uri=store
    ).get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "1"


def test_the_uis_of_make_ui_show_the_projects_run_model_and_flow_run(nightly):
    """What a person sees first, in a real browser: the MLflow UI of `make ui` serves the
    project's own store (its run, its registered model and champion), the Prefect UI the
    completed flow run."""
    skip_without_browser()
    mlflow_port = free_port()
    env = {**nightly.env, "MLFLOW_PORT": str(mlflow_port)}
    store = f"sqlite:///{nightly.project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    name = registered_name(nightly.project)
    [run] = client.search_runs([client.get_experiment_by_name("emoflow").experiment_id])
    mlflow_ui = f"http://127.0.0.1:{mlflow_port}"
    prefect_ui = f"http://127.0.0.1:{env['PREFECT_SERVER_API_PORT']}"
    pages = {
        f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs": run.info.run_name,
        f"{mlflow_ui}/#/models": name,
        f"{mlflow_ui}/#/models/{name}": "champion",
        f"{prefect_ui}/runs": nightly.flow_run.name,
    }
    missing = {}
    with server("mlflow-server.sh", env), headless_chromium() as browser:
        for url, expected in pages.items():
            browser.get(url)
            if not shows(browser, expected, UI_SECONDS):
                missing[url] = f"no {expected!r} in: {page_text(browser)[:1500]}"
    assert not missing, missing


def test_the_pipeline_logs_runs_artifacts_and_models_to_an_mlflow_server(tmp_path, monkeypatch):
    from emoflow.flows.stages import DATA_STAGES, MODEL_STAGES

    port = free_port()
    env = server_env(
        tmp_path,
        MLFLOW_PORT=str(port),
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path / 'servers/mlflow/mlflow.db'}",
        MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "servers/mlflow/artifacts"),
    )
    uri = f"http://127.0.0.1:{port}"
    project = tmp_path / "project"
    project.mkdir()
    params = load_params(write_params(project, TINY_OVERRIDES))
    [cell] = params.train.grid()
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with server("mlflow-server.sh", env):
        for stage in DATA_STAGES.values():
            stage(params)
        outputs = {name: stage(params, cell) for name, stage in MODEL_STAGES.items()}
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.get_experiment_by_name(params.mlflow.experiment)
        [run] = client.search_runs([experiment.experiment_id])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        champion = client.get_model_version_by_alias(
            params.promote.registered_name(cell), "champion"
        )
        model_files = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{champion.name}@champion",
            dst_path=str(tmp_path / "download"),
            tracking_uri=uri,
        )
    mlflow.set_tracking_uri(None)  # the server is gone: leave no process-wide URI pointing at it

    assert experiment.artifact_location.startswith("mlflow-artifacts:"), (
        "artifacts go through the server"
    )
    assert run.info.run_id == outputs["train"].run_id and run.info.status == "FINISHED"
    assert run.data.params and "fer2013.accuracy" in run.data.metrics
    assert {"model_summary.txt", "promotion"} <= artifacts
    stored = {p.name for p in (tmp_path / "servers/mlflow/artifacts").rglob("*") if p.is_file()}
    assert {"model_summary.txt", "blessing.json", "MLmodel"} <= stored, (
        "uploaded through the server's proxy"
    )
    assert (
        str(champion.version) == outputs["promote"].version == "1"
        and champion.run_id == run.info.run_id
    )
    assert (Path(model_files) / "MLmodel").is_file()
