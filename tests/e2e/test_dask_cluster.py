"""The training grid on a standalone Dask cluster: a ``dask scheduler`` and two ``dask worker``
processes, started as on separate machines, which the flow reaches at ``flow.dask_address``.

The workers run in the project folder, as machines sharing it would (the stages' paths are
relative to it), and are stopped with the scheduler at the end of each test, pass or fail.
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

from tests.e2e.pipeline_runs import (
    CELLS,
    EMOFLOW,
    RUN_TIMEOUT,
    blessing,
    metrics,
    pipeline_in,
    prepared,
)
from tests.processes import free_ports, log_tail, started

pytestmark = pytest.mark.slow
KILLED = "convnn-fer7"
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


def test_grid_on_a_standalone_dask_cluster_matches_the_thread_run(tmp_path):
    pipeline_in(tmp_path / "threads", {"task_runner": "thread"})
    project = tmp_path / "cluster"
    env = prepared(project, {})
    with dask_cluster(project, env, tmp_path / "logs") as (address, _):
        pipeline_in(project, {"task_runner": "dask", "dask_address": address})
    for cell in CELLS:
        assert metrics(project, cell) == metrics(tmp_path / "threads", cell), (
            f"{cell}: the same seeded model, wherever it trains"
        )
        assert blessing(project, cell)["passed"] is True
    trained = read_log(tmp_path / "logs", "worker-0") + read_log(tmp_path / "logs", "worker-1")
    for cell in CELLS:
        assert f"train/{cell}" in trained, f"{cell} was trained on a worker of the cluster"


def test_a_worker_lost_while_training_hands_its_cell_to_another(tmp_path):
    """A worker killed after its cell's first epoch (a machine lost): Dask runs the cell's train
    task again on the other worker, which resumes from the checkpoint, in the same MLflow run;
    the flow ends well and the registry holds one version, of that finished run."""
    project = tmp_path / "cluster"
    one_cell = {}  # params.yaml's grid: convnn-fer7 alone
    env = {**prepared(project, {}, one_cell), "PYTHONUNBUFFERED": "1"}  # epochs logged at once
    logs = tmp_path / "logs"
    with dask_cluster(project, env, logs) as (address, processes):
        prepared(project, {"task_runner": "dask", "dask_address": address}, one_cell)
        with started({"flow": [EMOFLOW, "pipeline"]}, project, {"flow": env}, logs) as flow:
            victim = worker_in_second_epoch(logs, flow["flow"])
            os.killpg(processes[victim].pid, signal.SIGKILL)
            try:
                flow["flow"].wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(log_tail(logs, "flow"))
    assert flow["flow"].returncode == 0, log_tail(logs, "flow")
    [survivor] = {"worker-0", "worker-1"} - {victim}
    assert f"{KILLED}: resuming from the checkpoint after epoch 1" in read_log(logs, survivor)

    run_id = json.loads((project / "models" / KILLED / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    assert runs[0].data.tags["resumed_from_epoch"] == "1"
    versions = client.search_model_versions("name='emoflow-fer7'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", run_id)]
    assert blessing(project, KILLED)["passed"] is True


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
