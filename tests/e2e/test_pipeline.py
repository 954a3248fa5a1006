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

from emoflow.components import web_assets
from tests.browser import headless_chromium, page_text, skip_without_browser, wait_for
from tests.conftest import PREFECT_STARTUP_TIMEOUT, ROOT, TINY_OVERRIDES, deep_merge, write_params
from tests.consumers import image_column, tracking

pytestmark = pytest.mark.slow
PROJECT_FILES = [
    "components",
    "flows",
    "dvc.yaml",
    "pyproject.toml",
    ".dvc/config",
    ".dvc/plots",
    ".gitignore",
]
MODEL_NAME = "emoflow-convnn-fer7"
KEY = "convnn-fer7"
SEQUENCE_MODEL_NAME = "emoflow-timedelay-fer7"
SEQUENCE_KEY = "timedelay-fer7"
DVC_TEMPLATE = web_assets.ASSETS_DIR / web_assets.DVC_TEMPLATE
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


def run(command: list[str], cwd: Path, **environ: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(environ)
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

    from emoflow.flows.training import training_flow

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
    scores = json.loads(
        (dvc_project / f"reports/evaluation/{SEQUENCE_KEY}/scores.json").read_text()
    )
    windows = scores["ckplus_sequences"]["count"]
    assert list(scores) == ["ckplus_sequences"] and windows > 0
    predictions = pd.read_csv(dvc_project / f"reports/predictions/{SEQUENCE_KEY}.csv")
    assert len(predictions) == windows and set(predictions["dataset"]) == {"ckplus_sequences"}

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


def test_dvc_metrics_show_a_few_headline_numbers_per_model(dvc_project):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], dvc_project).stdout)
    files = shown[""]["data"]
    headline = {
        path: {dataset: sorted(values) for dataset, values in metrics["data"].items()}
        for path, metrics in files.items()
    }
    assert headline == {
        f"reports/evaluation/{KEY}/metrics.json": {
            "fer2013": ["accuracy", "ece", "macro_f1"],
            "ckplus": ["accuracy"],
        },
        f"reports/evaluation/{SEQUENCE_KEY}/metrics.json": {
            "ckplus_sequences": ["accuracy", "ece", "macro_f1"]
        },
    }
    table = run(["dvc", "metrics", "show", f"reports/evaluation/{KEY}/metrics.json"], dvc_project)
    assert max(len(line) for line in table.stdout.splitlines()) <= 120, table.stdout


def test_dvc_plots_show_draws_each_models_plot_files_and_nothing_else(dvc_project):
    shown = run(["dvc", "plots", "show", "--json"], dvc_project)
    assert "failed to load" not in shown.stderr
    plots = json.loads(shown.stdout)
    assert "errors" not in plots
    assert set(plots["data"]) == {"reports/augmentation_grid.png"} | {
        path
        for key in (KEY, SEQUENCE_KEY)
        for path in (
            f"reports/predictions/{key}.csv",
            f"reports/evaluation/{key}/curves.csv",
            f"reports/figures/{key}/confusion.png",
            f"reports/figures/{key}/reliability.png",
        )
    }

    def values(path: str) -> list[dict]:
        return plots["data"][path][0]["content"]["data"]["values"]

    predictions = pd.read_csv(dvc_project / f"reports/predictions/{KEY}.csv")
    confusion = values(f"reports/predictions/{KEY}.csv")
    assert len(confusion) == len(predictions) > 0
    assert {row["dataset"] for row in confusion} == {"fer2013", "ckplus"}
    curves = values(f"reports/evaluation/{KEY}/curves.csv")
    epochs = TINY_OVERRIDES["train"]["epochs"]
    assert sorted((int(r["epoch"]), r["split"]) for r in curves) == sorted(
        (epoch, split) for epoch in range(1, epochs + 1) for split in ("train", "val")
    )
    assert {"loss", "accuracy"} <= set(curves[0])


@pytest.fixture(scope="module")
def offline_browser():
    """Headless Chromium that can reach nothing outside file://: no name resolves, and every
    http(s) request is blocked."""
    skip_without_browser()
    if not web_assets.installed() or not DVC_TEMPLATE.is_file():
        pytest.skip(
            "the offline reports' scripts and styles are not installed: "
            "run python -m emoflow.components.web_assets"
        )
    with headless_chromium("--host-resolver-rules=MAP * ~NOTFOUND") as driver:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]})
        yield driver


def open_offline(driver, page: Path, shown) -> None:
    """Open ``page`` and wait until ``shown(driver)``; nothing may have been asked of the
    network (Chromium lists blocked requests among the page's resources too)."""
    driver.get(page.as_uri())
    wait_for(driver, shown, 60)
    requested = driver.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    assert [url for url in requested if not url.startswith("file:")] == []


# Per canvas, the pixels that are drawn: neither transparent nor near white.
DRAWN_PIXELS = """
return Array.from(document.querySelectorAll('canvas')).map(canvas => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 0; i < data.length; i += 4)
    if (data[i + 3] > 0 && data[i] + data[i + 1] + data[i + 2] < 600) drawn++;
  return drawn;
});
"""
# Bootstrap's font on the page, Font Awesome's on its icons: unstyled, both are Times.
FONTS = """
return [getComputedStyle(document.body).fontFamily,
        getComputedStyle(document.querySelector('.fas, .fa'), '::before').fontFamily];
"""


def test_dvc_plots_render_offline(dvc_project, offline_browser, tmp_path):
    web_assets.use_for_dvc_plots(dvc_project, DVC_TEMPLATE)  # as web_assets' main does
    run(["dvc", "plots", "show", "-o", str(tmp_path)], dvc_project)
    charts = 2 * 2  # per model: its confusion matrices and its training curves

    def drawn(driver) -> bool:
        pixels = driver.execute_script(DRAWN_PIXELS)
        return len(pixels) == charts and all(count > 500 for count in pixels)

    open_offline(offline_browser, tmp_path / "index.html", drawn)
    widths = offline_browser.execute_script(
        "return Array.from(document.images).map(image => image.naturalWidth)"
    )
    assert len(widths) == 5 and all(widths), "the augmentation grid and two figures per model"


def test_data_docs_render_offline_with_their_styles(dvc_project, offline_browser):
    site = dvc_project / "reports" / "data_docs"

    def listed(driver) -> bool:  # bootstrap-table fills the index's lists from a script
        return "emoflow.fer2013.images" in page_text(driver)

    open_offline(offline_browser, site / "index.html", listed)
    body, icons = offline_browser.execute_script(FONTS)
    assert body.startswith("-apple-system") and "Font Awesome" in icons
    [page] = site.glob("validations/emoflow/fer2013/images/**/*.html")
    open_offline(
        offline_browser, page, lambda driver: "Expectation Validation Result" in page_text(driver)
    )
    assert "Succeeded" in page_text(offline_browser)
    body, icons = offline_browser.execute_script(FONTS)
    assert body.startswith("-apple-system") and "Font Awesome" in icons


def test_validate_run_again_as_the_flow_does_leaves_nothing_to_rerun(dvc_project, monkeypatch):
    """The Prefect flow runs the same validate stage as DVC: its output must come out byte for
    byte, or both would run preprocess, and everything after it, again."""
    from emoflow.components.settings import load_params
    from emoflow.flows import stages
    from emoflow.flows.caching import input_key

    monkeypatch.chdir(dvc_project)
    params = load_params(dvc_project / "params.yaml")
    flow_key = input_key(stages.preprocess, stages.STAGE_FILES["preprocess"], params)

    stages.validate(params)

    assert json.loads(run(["dvc", "status", "--json"], dvc_project).stdout) == {}
    assert input_key(stages.preprocess, stages.STAGE_FILES["preprocess"], params) == flow_key


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
    probabilities = model.predict(image_column(faces))
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

    from emoflow.components.model_input import to_model_input

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
    from emoflow.components.settings import load_params
    from emoflow.flows import stages

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
    # The experiments table as README shows it (what changed, no deps' hashes) fits a
    # 120-column terminal: here for the image network alone, as in params.yaml's grid (the
    # sequence network's headline changed too, and takes three more columns).
    drop = ".*/|ckplus_sequences"
    table = run(
        ["dvc", "exp", "show", "-n", "2", "--no-pager", "--only-changed", "--drop", drop],
        dvc_project,
        COLUMNS="120",
    ).stdout
    header = table.splitlines()[1]
    assert "…" not in table and {"fer2013.ece", "evaluate.tta"} <= set(header.split()), table
