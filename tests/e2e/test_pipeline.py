"""End to end on a tiny built-in sample: DVC, the Prefect flow, the registry and the gate.

The DVC run and the Prefect run happen once per module in two temporary copies of the
project, with the same settings; each test then checks one property of their outputs. The
grid holds an image network and a sequence network (TimeDelayConvNN, the cheapest), so both
kinds go through ``dvc repro`` and the flow: the matrix, their own gates and registered models.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import PREFECT_STARTUP_TIMEOUT, ROOT, TINY_OVERRIDES, deep_merge, write_params
from tests.consumers import tracking

pytestmark = pytest.mark.slow
PROJECT_FILES = ["components", "flows", "dvc.yaml", "pyproject.toml", ".dvc/config", ".gitignore"]
MODEL_NAME = "emoflow-convnn-fer7"
KEY = "convnn-fer7"
SEQUENCE_MODEL_NAME = "emoflow-timedelay-fer7"
SEQUENCE_KEY = "timedelay-fer7"
GRID = deep_merge(
    TINY_OVERRIDES,
    {
        "train": {"architectures": ["convnn", "timedelay"]},
        "promote": {
            "model_name": "emoflow-{architecture}-{emotion_set}",
            "value_thresholds": {"fer2013.accuracy": 0.0, "ckplus_sequences.accuracy": 0.0},
        },
    },
)


def copy_project(target: Path) -> Path:
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    write_params(target, GRID)
    return target


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


def client_for(project: Path) -> mlflow.MlflowClient:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("dvc-project"))
    run(["git", "init", "-q"], project)
    commit(project, "tiny")
    run(["dvc", "repro"], project)
    commit(project, "first run")
    return project


def commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], project)


@pytest.fixture(scope="module")
def prefect_project(tmp_path_factory) -> tuple[Path, dict]:
    from prefect.testing.utilities import prefect_test_harness

    from flows.training import training_flow

    project = tmp_path_factory.mktemp("prefect-project")
    write_params(project, GRID)
    previous = Path.cwd()
    os.chdir(project)
    try:
        with prefect_test_harness(server_startup_timeout=PREFECT_STARTUP_TIMEOUT):
            results = training_flow(str(project / "params.yaml"))
    finally:
        os.chdir(previous)
    return project, results


def test_dvc_repro_registers_a_champion(dvc_project):
    blessing = json.loads((dvc_project / f"reports/promotion/{KEY}.json").read_text())
    assert blessing["passed"] is True and blessing["version"] == "1"
    champion = client_for(dvc_project).get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == "1" and champion.run_id == blessing["run_id"]


def test_dvc_repro_gates_and_registers_the_sequence_network_on_its_own_data(
    dvc_project, monkeypatch
):
    blessing = json.loads((dvc_project / f"reports/promotion/{SEQUENCE_KEY}.json").read_text())
    assert blessing["passed"] is True and blessing["model_name"] == SEQUENCE_MODEL_NAME
    assert [c["metric"] for c in blessing["checks"]] == ["ckplus_sequences.accuracy"]
    assert blessing["not_applicable"] == ["fer2013.accuracy"]
    metrics = json.loads(
        (dvc_project / f"reports/evaluation/{SEQUENCE_KEY}/metrics.json").read_text()
    )
    windows = metrics["ckplus_sequences"]["count"]
    assert list(metrics) == ["ckplus_sequences"] and windows > 0
    predictions = pd.read_csv(
        dvc_project / f"reports/predictions/{SEQUENCE_KEY}/ckplus_sequences.csv"
    )
    assert len(predictions) == windows

    monkeypatch.chdir(dvc_project)
    version = client_for(dvc_project).get_model_version_by_alias(SEQUENCE_MODEL_NAME, "champion")
    assert version.tags["architecture"] == "timedelay" and version.run_id == blessing["run_id"]
    with tracking(f"sqlite:///{dvc_project / 'mlflow.db'}"):
        model = mlflow.pyfunc.load_model(f"models:/{SEQUENCE_MODEL_NAME}@champion")
    windows = np.load(dvc_project / "data/interim/ckplus/pixels.npy")[:9].reshape(3, 3, 48, 48)
    probabilities = model.predict(windows)
    assert probabilities.shape == (3, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_second_repro_changes_nothing(dvc_project):
    started = time.monotonic()
    result = run(["dvc", "repro"], dvc_project)
    assert "Data and pipelines are up to date" in result.stdout + result.stderr
    assert time.monotonic() - started < 60
    assert len(client_for(dvc_project).search_model_versions(f"name = '{MODEL_NAME}'")) == 1


def test_dvc_metrics_and_plots_show(dvc_project):
    metrics = run(["dvc", "metrics", "show", "--json"], dvc_project).stdout
    values = json.loads(metrics)
    assert "fer2013" in json.dumps(values) and "accuracy" in json.dumps(values)
    plots = json.loads(run(["dvc", "plots", "show", "--json"], dvc_project).stdout)["data"]
    assert {"reports/augmentation_grid.png", f"reports/figures/{KEY}/confusion.png"} <= set(plots)
    confusion = plots[f"reports/predictions/{KEY}/fer2013.csv"][0]["content"]["data"]["values"]
    test_rows = len(pd.read_csv(dvc_project / f"reports/predictions/{KEY}/fer2013.csv"))
    assert len(confusion) == test_rows > 0 and {"actual", "predicted"} <= set(confusion[0])


def test_prefect_flow_produces_the_same_outputs_as_dvc(dvc_project, prefect_project):
    project, results = prefect_project
    models = {
        f"{stage}/{key}"
        for stage in ("train", "evaluate", "promote")
        for key in (KEY, SEQUENCE_KEY)
    }
    assert set(results) == {"sample", "ingest", "validate", "preprocess", "recipes"} | models
    for dataset in ("fer2013", "ckplus"):
        a = pd.read_parquet(dvc_project / f"data/interim/{dataset}/manifest.parquet")
        b = pd.read_parquet(project / f"data/interim/{dataset}/manifest.parquet")
        pd.testing.assert_frame_equal(a, b)
    shards = sorted(
        p.relative_to(dvc_project) for p in (dvc_project / "data/processed").rglob("*.tfrecord.gz")
    )
    assert shards and shards == sorted(
        p.relative_to(project) for p in (project / "data/processed").rglob("*.tfrecord.gz")
    )
    for shard in shards:
        assert (dvc_project / shard).read_bytes() == (project / shard).read_bytes(), shard
    for key in (KEY, SEQUENCE_KEY):
        dvc_metrics = json.loads(
            (dvc_project / f"reports/evaluation/{key}/metrics.json").read_text()
        )
        flow_metrics = json.loads((project / f"reports/evaluation/{key}/metrics.json").read_text())
        assert dvc_metrics == flow_metrics, (
            f"{key}: seeded, deterministic training gives the same model"
        )
        assert json.loads((project / f"reports/promotion/{key}.json").read_text())["passed"] is True


def test_champion_loads_from_the_registry_and_predicts(dvc_project, monkeypatch):
    monkeypatch.chdir(dvc_project)
    with tracking(f"sqlite:///{dvc_project / 'mlflow.db'}"):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    faces = np.load(dvc_project / "data/interim/fer2013/pixels.npy")[:5]
    probabilities = model.predict(faces)
    assert list(probabilities.columns) == [
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
    ]
    assert probabilities.shape == (5, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    import keras

    from components.model_input import to_model_input

    direct = keras.models.load_model(dvc_project / f"models/{KEY}/model.keras").predict(
        to_model_input(faces), verbose=0
    )
    np.testing.assert_allclose(probabilities.to_numpy(), direct, atol=1e-6)


def test_a_champion_of_the_sample_says_so_in_its_tags_and_warns_once_in_predict(dvc_project):
    version = client_for(dvc_project).get_model_version_by_alias(MODEL_NAME, "champion")
    assert version.tags["training_data"] == "synthetic-sample"
    assert version.description.startswith(f"# Model card: {MODEL_NAME} version")
    photos = dvc_project / "photos"
    photos.mkdir()
    faces = np.load(dvc_project / "data/interim/fer2013/pixels.npy")[:2]
    for index, face in enumerate(faces):
        cv2.imwrite(str(photos / f"face{index}.png"), cv2.resize(face, (192, 192)))
    model = f"models:/{MODEL_NAME}@champion"
    result = run(["emoflow", "predict", str(photos), "-m", model, "-o", "out.csv"], dvc_project)
    assert result.stderr.count("trained on EmoFlow's synthetic sample") == 1, result.stderr


def test_gate_refuses_a_model_below_threshold(prefect_project, monkeypatch):
    from components.settings import load_params
    from flows import stages

    project, _ = prefect_project
    monkeypatch.chdir(project)
    champion_before = client_for(project).get_model_version_by_alias(MODEL_NAME, "champion")
    strict = write_params(
        project,
        deep_merge(
            GRID,
            {"train": {"seed": 7}, "promote": {"value_thresholds": {"fer2013.accuracy": 1.01}}},
        ),
    )
    params = load_params(strict)
    [cell] = stages.select_cells(params, "convnn")
    stages.train(params, cell)
    stages.evaluate(params, cell)
    blessing = stages.promote(params, cell)
    assert blessing.passed is False and blessing.version is None
    assert [c.metric for c in blessing.checks if c.kind == "value" and not c.passed] == [
        "fer2013.accuracy"
    ]
    report = json.loads((project / f"reports/promotion/{KEY}.json").read_text())
    assert report["passed"] is False and "< 1.01" in report["checks"][0]["reason"]
    client = client_for(project)
    assert (
        client.get_model_version_by_alias(MODEL_NAME, "champion").version == champion_before.version
    )
    assert len(client.search_model_versions(f"name = '{MODEL_NAME}'")) == 1


def test_a_recipe_change_retrains_only_the_models_it_touches(dvc_project):
    write_params(
        dvc_project, deep_merge(GRID, {"train": {"overrides": {"timedelay": {"epochs": 3}}}})
    )
    try:
        run(["dvc", "repro", "recipes"], dvc_project)
        stale = json.loads(run(["dvc", "status", "--json"], dvc_project).stdout)
    finally:
        write_params(dvc_project, GRID)
        run(["dvc", "repro", "recipes"], dvc_project)
    assert sorted(stale) == [f"train@{SEQUENCE_KEY}"], "convnn's recipe did not change"
    assert json.loads(run(["dvc", "status", "--json"], dvc_project).stdout) == {}


def test_metrics_diff_between_commits_shows_a_params_change(dvc_project):
    """Runs last: it changes the DVC project's params and outputs."""
    # An evaluation setting: evaluate and promote run again, the models are kept.
    write_params(dvc_project, deep_merge(GRID, {"evaluate": {"tta": "flip"}}))
    run(["dvc", "repro"], dvc_project)
    commit(dvc_project, "faces averaged with their mirror images")
    diff = json.loads(
        run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], dvc_project).stdout
    )
    changed = diff[f"reports/evaluation/{KEY}/metrics.json"]
    assert "fer2013.ece" in changed, "averaged predictions are calibrated otherwise"
    assert all(set(entry) >= {"old", "new"} for entry in changed.values())
    params_diff = json.loads(
        run(["dvc", "params", "diff", "HEAD~1", "HEAD", "--json"], dvc_project).stdout
    )
    tta = params_diff["params.yaml"]["evaluate.tta"]
    assert (tta["old"], tta["new"]) == ("none", "flip")
