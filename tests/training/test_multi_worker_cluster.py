"""Multi-worker training: two processes on this machine train one model together
(``tf.distribute.MultiWorkerMirroredStrategy`` from ``TF_CONFIG``), and only the chief writes.

Each worker is ``emoflow train`` in a fresh process, as on a real cluster: the strategy must be
created before TensorFlow runs anything, which the pytest process has long done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import tensorflow as tf

from emoflow.components import mlflow_store
from emoflow.components.provenance import SyntheticSampleWarning
from emoflow.components.settings import load_params
from emoflow.components.training import checkpoints, multi_worker
from emoflow.components.training.runtime import distribution_strategy
from tests.conftest import TINY_OVERRIDES, write_params
from tests.consumers import image_column
from tests.processes import free_ports, log_tail, started

EMOTIONS = ["angry", "happy", "surprise"]
CELL = "convnn-ahs"
TRAIN = {
    "architectures": ["convnn"],
    "emotion_sets": {"ahs": EMOTIONS},
    "epochs": 1,
    "batch_size": 32,
    "dense_units": 8,
}
RUN_TIMEOUT = 420  # seconds for one training run of the cluster; about 90 on a busy 2-core one
EMOFLOW = str(Path(sys.executable).parent / "emoflow")


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def train_on_two_workers(project: Path, logs: Path, params: list[str]) -> dict[str, Path]:
    """``emoflow train`` in two worker processes (worker 0, the chief, reads ``params[0]``);
    both must succeed. Returns each worker's TMPDIR."""
    ports = free_ports(2)
    names = [f"worker-{index}" for index in range(2)]
    tmp = {name: logs / f"{name}-tmp" for name in names}
    envs = {}
    for index, name in enumerate(names):
        tmp[name].mkdir(parents=True)
        envs[name] = {
            **os.environ,
            "TF_CONFIG": tf_config(ports, index),
            "TMPDIR": str(tmp[name]),
        }
    commands = {
        name: [EMOFLOW, "train", "-p", params[index], "-a", "convnn", "-e", "ahs"]
        for index, name in enumerate(names)
    }
    with started(commands, project, envs, logs) as processes:
        for name, process in processes.items():
            try:
                process.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail("\n".join(log_tail(logs, n) for n in names))
            assert process.returncode == 0, "\n".join(log_tail(logs, n) for n in names)
    return tmp


def params_file(project: Path, name: str, **train) -> str:
    """The tiny settings with these train settings, in a file of their own in the project
    (relative paths in a params file hold from its folder)."""
    overrides = {**TINY_OVERRIDES, "train": {**TRAIN, **train}}
    return str(write_params(project, overrides, f"params-{name}.yaml"))


def runs(project: Path) -> list[mlflow.entities.Run]:
    """The runs in the project's own store, created if need be (connected here, so no store
    an earlier test of this process set stays current)."""
    settings = load_params(project / "params.yaml").mlflow
    client = mlflow_store.connect(settings, create=True)
    experiment = client.get_experiment_by_name(settings.experiment)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
def test_two_workers_train_one_model_that_only_the_chief_writes(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)
    before = {run.info.run_id for run in runs(project)}
    params = params_file(project, "plain", out_dir="models_plain")
    tmp = train_on_two_workers(project, tmp_path, [params, params])

    folder = project / "models_plain" / CELL
    assert {"model.keras", "run.json", "history.json", "curves.png"} <= set(left_in(folder))
    assert len(json.loads((folder / "history.json").read_text())["loss"]) == 1
    written = json.loads((folder / "run.json").read_text())
    assert (written["architecture"], written["emotion_set"]) == ("convnn", "ahs")
    new = [run for run in runs(project) if run.info.run_id not in before]
    assert [run.info.run_id for run in new] == [written["run_id"]], "one MLflow run: the chief's"
    assert new[0].info.status == "FINISHED" and new[0].data.params["model.architecture"] == "convnn"
    for name in ("worker-0", "worker-1"):
        assert "val_accuracy:" in (tmp_path / f"{name}.log").read_text(), f"{name} trained"
        assert left_in(tmp[name]) == [], f"{name} left temporary files"
    assert not checkpoints.checkpoint_folder(project / "models_plain", CELL).exists()

    version = mlflow.register_model(written["model_uri"], "multi-worker-convnn")
    model = mlflow.pyfunc.load_model(f"models:/multi-worker-convnn/{version.version}")
    faces = image_column(np.random.default_rng(0).integers(0, 256, (2, 48, 48), np.uint8))
    with pytest.warns(SyntheticSampleWarning):
        probabilities = model.predict(faces)
    assert list(probabilities.columns) == EMOTIONS
    np.testing.assert_allclose(probabilities.to_numpy().sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_a_cluster_stops_together_and_resumes_from_the_chiefs_checkpoint(
    project, tmp_path, monkeypatch
):
    """The chief's time budget runs out after the first of two epochs, the worker's does not:
    both stop there, or the worker would wait for the chief forever. Run again, both resume
    from the chief's checkpoint, in the chief's MLflow run."""
    monkeypatch.chdir(project)
    before = {run.info.run_id for run in runs(project)}
    out_dir = project / "models_resumed"
    tight = params_file(project, "tight", epochs=2, out_dir=out_dir.name, time_budget_minutes=1e-4)
    roomy = params_file(project, "roomy", epochs=2, out_dir=out_dir.name, time_budget_minutes=60)
    work = checkpoints.checkpoint_folder(out_dir, CELL)

    first_tmp = train_on_two_workers(project, tmp_path / "first", [tight, roomy])
    worker = (tmp_path / "first" / "worker-1.log").read_text()
    assert "time budget: another worker's is spent" in worker, "stopped by the chief's budget"
    assert [p.name for p in work.glob("epoch-*")] == ["epoch-0001"], "kept for the rerun"
    first = json.loads((out_dir / CELL / "run.json").read_text())
    first_loss = json.loads((out_dir / CELL / "history.json").read_text())["loss"]
    assert len(first_loss) == 1

    second_tmp = train_on_two_workers(project, tmp_path / "second", [roomy, roomy])
    for name in ("worker-0", "worker-1"):
        log = (tmp_path / "second" / f"{name}.log").read_text()
        assert f"{CELL}: resuming from the checkpoint after epoch 1" in log, name
        assert "Epoch 1/2" not in log and "Epoch 2/2" in log, name
        assert left_in(first_tmp[name]) == left_in(second_tmp[name]) == []
    second = json.loads((out_dir / CELL / "run.json").read_text())
    history = json.loads((out_dir / CELL / "history.json").read_text())
    assert second["run_id"] == first["run_id"] and history["loss"][:1] == first_loss
    assert len(history["loss"]) == 2 and not work.exists()
    assert [run.info.run_id for run in runs(project) if run.info.run_id not in before] == [
        first["run_id"]
    ]
    steps = mlflow_store.connect(load_params(project / "params.yaml").mlflow).get_metric_history(
        first["run_id"], "loss"
    )
    assert sorted(m.step for m in steps) == [0, 1]


def test_tf_config_of_one_worker_trains_as_one_machine(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config([12345], 0))
    assert multi_worker.cluster_size() == 1
    assert not multi_worker.is_multi_worker(distribution_strategy(multi_gpu=True))
    monkeypatch.delenv("TF_CONFIG")
    assert multi_worker.cluster_size() == 0


def test_a_cluster_joined_after_tensorflow_ran_is_refused_with_what_to_do(monkeypatch):
    tf.config.list_logical_devices()  # TensorFlow has run in this process
    monkeypatch.setenv("TF_CONFIG", tf_config(free_ports(2), 1))
    assert multi_worker.cluster_size() == 2
    with pytest.raises(multi_worker.ClusterError, match=r"start each worker's training in a fresh"):
        distribution_strategy(multi_gpu=True)
