"""The ``emoflow`` command as a user meets it: mistakes reported before the heavy libraries
load, stage summaries of one line (or JSON), the registry commands without TensorFlow.

Commands that must not import TensorFlow or MLflow run in a child process of their own (this
one has long imported both), which reports the exit status and what it imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emoflow.flows.cli import app
from tests.conftest import TINY_OVERRIDES, write_params

HEAVY = ("tensorflow", "keras", "mlflow", "prefect")
CHILD = textwrap.dedent(
    f"""
    import json, sys
    from emoflow.flows.cli import app
    try:
        app(sys.argv[1:], prog_name="emoflow")
    except SystemExit as stopped:
        status = stopped.code
    imported = [name for name in {HEAVY!r} if name in sys.modules]
    print(json.dumps({{"status": status, "imported": imported}}))
    """
)


def emoflow_child(args: list[str], cwd: Path, **env: str) -> tuple[dict, str, str]:
    """``emoflow ARGS`` in a fresh process: its report (exit status, heavy modules imported),
    the command's own stdout before it, and its stderr."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | env
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    *printed, report = done.stdout.splitlines()
    return json.loads(report), "\n".join(printed), done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with the project's params.yaml and nothing else: no data, models or store."""
    write_params(tmp_path, {})
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # exists; never read
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "nothere.jpg"], "nothere.jpg: no such file or folder"),
        (["predict", "clip.mp4"], "clip.mp4: no such file"),
        (["predict", "photo.png", "-m", "gone.keras"], "gone.keras: a .keras model needs"),
        (["predict", "photo.png"], "MLflow store sqlite:///{project}/mlflow.db: no such file"),
        (["export", "-m", "gone/model.keras"], "a .keras model needs the file"),
        (["demo", "-m", "gone"], "gone: not a registry URI, an MLflow model folder"),
        (["serve"], "MLflow store sqlite:///{project}/mlflow.db: no such file"),
        (["rollback", "emoflow-fer7"], "MLflow store sqlite:///{project}/mlflow.db: no such file"),
        (["registry", "--json"], "MLflow store sqlite:///{project}/mlflow.db: no such file"),
        (
            ["evaluate"],
            "models/convnn-fer7: no such file or folder (emoflow train writes it); "
            "data/processed: no such file or folder (emoflow preprocess writes it)",
        ),
        (["ingest"], "data/sample/fer2013.csv: no such file or folder (emoflow sample writes it)"),
        (
            ["pipeline", "--profile", "real-data", "--data", "nowhere"],
            "nowhere/fer2013/fer2013.csv.gz: no such file or folder",
        ),
    ],
)
def test_a_mistake_is_reported_before_tensorflow_or_mlflow_is_imported(project, args, message):
    report, _, stderr = emoflow_child(args, project)
    assert report == {"status": 1, "imported": []}, stderr
    assert message.format(project=project) in stderr
    assert "Traceback" not in stderr and not (project / "mlflow.db").exists()


@pytest.fixture
def store(project: Path) -> Path:
    """The project's store, holding one model of two blessed versions, v2 champion."""
    import mlflow

    from emoflow.components import mlflow_store
    from emoflow.components.judging import registry
    from emoflow.components.settings import load_params

    try:
        with pytest.MonkeyPatch.context() as env:
            env.chdir(project)
            client = mlflow_store.connect(load_params("params.yaml").mlflow, create=True)
        client.create_registered_model("faces")
        for _ in range(2):
            version = client.create_model_version(
                "faces", str(project), tags={"blessing": "passed"}
            )
        client.set_registered_model_alias("faces", registry.CHAMPION, version.version)
    finally:  # MLflow keeps the store in MLFLOW_TRACKING_URI: no later test may inherit it
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    return project / "mlflow.db"


def test_rollback_moves_the_champion_without_loading_tensorflow(store, project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    params = str(project / "params.yaml")
    report, printed, stderr = emoflow_child(
        ["rollback", "faces", "-p", params, "--json"], elsewhere
    )
    assert report["status"] == 0, stderr
    assert "tensorflow" not in report["imported"] and "keras" not in report["imported"]
    assert json.loads(printed) == {"model": "faces", "champion_before": "2", "champion_after": "1"}
    assert not (elsewhere / "mlflow.db").exists(), "the store beside params.yaml was used"

    report, _, stderr = emoflow_child(["rollback", "faces", "-p", params], elsewhere)
    assert report["status"] == 1 and "no blessed version older than champion v1" in stderr


def test_the_environment_store_wins_over_the_params_folder(store, project):
    other = f"sqlite:///{project / 'other.db'}"
    report, _, stderr = emoflow_child(["registry"], project, MLFLOW_TRACKING_URI=other)
    assert report["status"] == 1 and f"MLflow store {other}: no such file" in stderr


def test_data_stages_print_one_line_or_one_json_document(project, monkeypatch):
    write_params(project, TINY_OVERRIDES)
    monkeypatch.chdir(project)
    sample = CliRunner().invoke(app, ["sample"])
    assert sample.exit_code == 0, sample.output
    rows = len((project / "data/sample/fer2013.csv").read_text().splitlines()) - 1
    crops = len(list((project / "data/sample/ckplus48").rglob("*.png")))
    assert sample.stdout == (
        f"emoflow sample: wrote data/sample; fer2013.images {rows}, ckplus.images {crops}\n"
    )

    ingest = CliRunner().invoke(app, ["ingest", "--json"])
    assert ingest.exit_code == 0, ingest.output
    assert json.loads(ingest.stdout) == {
        "stage": "ingest",
        "model": None,
        "read": ["data/sample/fer2013.csv", "data/sample/ckplus48"],
        "wrote": ["data/interim"],
        "figures": {"fer2013.images": rows, "ckplus.images": crops},
    }

    recipes = CliRunner().invoke(app, ["recipes"])
    assert recipes.stdout == "emoflow recipes: wrote models/recipes; models 1\n"
