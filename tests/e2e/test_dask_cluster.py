"""The training grid on a standalone Dask cluster (a ``dask scheduler`` and two ``dask worker``
processes, started as on separate machines) that the flow reaches at ``flow.dask_address``:
it must train as the thread runner does (trained once for the module), and survive the loss
of a worker. Without an address the flow starts a ``LocalCluster`` of the same workers.

The standalone workers run in the project folder, as machines sharing it would (the stages'
paths are relative to it), and are stopped with the scheduler at the end of each test, pass
or fail. The file name ends in ``_cluster``: the test run keeps such files on one test worker
(tests/conftest.py), so that no two clusters of TensorFlow processes share the cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from distributed import Client
from prefect_dask import DaskTaskRunner

from emoflow.components.settings import FlowSettings
from emoflow.flows.training import task_runner
from tests.e2e.pipeline_runs import (
    CELLS,
    EMOFLOW,
    RUN_TIMEOUT,
    blessing,
    pipeline_in,
    prepared,
    scores,
)
from tests.processes import free_ports, log_tail, started

pytestmark = pytest.mark.slow
DASK = str(Path(sys.executable).parent / "dask")
STARTUP_TIMEOUT = 180  # seconds for the scheduler and both workers to come up


@contextlib.contextmanager
def dask_cluster(
    project: Path, env: dict[str, str], logs: Path
) -> Iterator[tuple[str, dict[str, subprocess.Popen]]]:
    """A scheduler and two single-threaded workers on loopback; yields the scheduler's address
    and the processes by name (scheduler, worker-0, worker-1)."""
    scheduler_port, *worker_ports = free_ports(3)
    address = f"tcp://127.0.0.1:{scheduler_port}"
    local = ["--host", "127.0.0.1", "--no-dashboard"]
    commands = {"scheduler": [DASK, "scheduler", "--port", str(scheduler_port), *local]}
    for index, port in enumerate(worker_ports):
        commands[f"worker-{index}"] = [
            *[DASK, "worker", address, "--nthreads", "1", "--nworkers", "1"],
            *["--worker-port", str(port), "--name", f"worker-{index}", *local],
            *["--death-timeout", str(STARTUP_TIMEOUT)],
        ]
    envs = dict.fromkeys(commands, env)
    with started(commands, project, envs, logs) as processes:
        try:
            with Client(address, timeout=STARTUP_TIMEOUT) as client:
                client.wait_for_workers(2, timeout=STARTUP_TIMEOUT)
        except (OSError, TimeoutError):
            pytest.fail("\n".join(log_tail(logs, name) for name in processes))
        yield address, processes


@pytest.fixture(scope="module")
def thread_run(tmp_path_factory) -> Path:
    """The grid trained on the thread runner: what every cluster must reproduce."""
    folder = tmp_path_factory.mktemp("threads")
    pipeline_in(folder, {"task_runner": "thread"})
    return folder


def same_models(project: Path, reference: Path, cells: list[str]) -> None:
    """Each cell trained as in the reference run, scored on the same data, and blessed.

    Seeded training on a Dask worker follows the thread runner's to within float noise, not
    bit for bit: the per-epoch losses agree to 1 % (measured: 0.1 %), while the metrics of
    these near-chance test models swing with the smallest change, so they are not compared.
    (A cell resumed after a lost worker draws other random numbers: it is not compared.)
    """
    for cell in cells:
        assert history(project, cell)["loss"] == pytest.approx(
            history(reference, cell)["loss"], rel=0.01
        ), f"{cell}: the same seeded training, wherever it runs"
        counts = {d: m["count"] for d, m in scores(project, cell).items()}
        assert counts == {d: m["count"] for d, m in scores(reference, cell).items()}
        assert blessing(project, cell)["passed"] is True


def history(project: Path, cell: str) -> dict[str, list[float]]:
    return json.loads((project / "models" / cell / "history.json").read_text())


def test_without_an_address_the_flow_starts_a_local_cluster_of_single_threaded_workers():
    runner = task_runner(FlowSettings(task_runner="dask", dask_workers=3))
    assert isinstance(runner, DaskTaskRunner) and runner.address is None
    assert runner.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1}


def test_the_grid_on_a_standalone_cluster_trains_as_on_threads_even_when_a_worker_is_lost(
    thread_run, tmp_path
):
    """The grid through ``flow.dask_address``; a worker is killed in its cell's second epoch
    (a machine lost). Dask runs that cell's train task again on the other worker, which
    resumes from the checkpoint in the same MLflow run; the flow ends well, the other cell
    trained as on threads, and each registered model holds one version, of a finished run."""
    project = tmp_path / "cluster"
    env = {**prepared(project, {}), "PYTHONUNBUFFERED": "1"}  # epochs logged at once
    logs = tmp_path / "logs"
    with dask_cluster(project, env, logs) as (address, processes):
        prepared(project, {"task_runner": "dask", "dask_address": address})
        with started({"flow": [EMOFLOW, "pipeline"]}, project, {"flow": env}, logs) as flow:
            victim = worker_in_second_epoch(logs, flow["flow"])
            os.killpg(processes[victim].pid, signal.SIGKILL)
            try:
                flow["flow"].wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(log_tail(logs, "flow"))
    assert flow["flow"].returncode == 0, log_tail(logs, "flow")
    [survivor] = {"worker-0", "worker-1"} - {victim}
    trained = read_log(logs, survivor)
    [lost] = [
        cell for cell in CELLS if f"{cell}: resuming from the checkpoint after epoch 1" in trained
    ]
    for cell in CELLS:
        assert f"train/{cell}" in read_log(logs, "worker-0") + trained, f"{cell} ran on the cluster"
    same_models(project, thread_run, [cell for cell in CELLS if cell != lost])

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    run_id = json.loads((project / "models" / lost / "run.json").read_text())["run_id"]
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.mlflow.runName = '{lost}'"
    )
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    assert runs[0].data.tags["resumed_from_epoch"] == "1"
    name = f"emoflow-{lost.removeprefix('convnn-')}"
    versions = client.search_model_versions(f"name='{name}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", run_id)]
    assert blessing(project, lost)["passed"] is True


def read_log(logs: Path, name: str) -> str:
    return (logs / f"{name}.log").read_text()


def worker_in_second_epoch(logs: Path, flow: subprocess.Popen) -> str:
    """The worker that has checkpointed its cell's first epoch and is training the second."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        assert flow.poll() is None, f"the flow ended first:\n{log_tail(logs, 'flow')}"
        for name in ("worker-0", "worker-1"):
            if "Epoch 2/2" in read_log(logs, name):
                return name
        time.sleep(0.1)
    pytest.fail(f"no worker reached a second epoch:\n{log_tail(logs, 'flow')}")
