"""How the registry model is stored: as code with its detector, not a pickle; with an example.

One tiny model is logged and registered for the module, with MLflow's warnings and log
records captured while it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import mlflow
import numpy as np
import pytest
from mlflow.models import Model
from mlflow.pyfunc import scoring_server

from emoflow.components.serving.detection import HAAR_CASCADE
from emoflow.components.serving.image_model import BOX_COLUMNS, DETECTOR_ARTIFACT, SCORE_COLUMN
from emoflow.components.serving.stored_model import CODE_FILE, example_base64, example_face
from emoflow.components.settings import SampleSettings
from tests.consumers import EMOTIONS, load_registered, register_tiny_model, tracking

TABLE_COLUMNS = ["image", "source", *BOX_COLUMNS, SCORE_COLUMN, *EMOTIONS, "emotion"]


@contextlib.contextmanager
def mlflow_messages() -> Iterator[list[str]]:
    """Every warning and every MLflow log record of the block, as text."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler, logger = Keep(), logging.getLogger("mlflow")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)


async def invoke(app, payload: dict) -> httpx.Response:
    """POST ``payload`` to the app's /invocations, in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
        return await client.post("/invocations", json=payload)


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[str, str, list[str], Path]:
    """The registered model's URI, its store's, what MLflow said logging it, and a copy of
    the logged model's folder."""
    folder = tmp_path_factory.mktemp("stored")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the experiment's artifacts go to ./mlruns
        with mlflow_messages() as messages:
            model_uri = register_tiny_model(folder, uri)
        with tracking(uri):
            local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder)))
    return model_uri, uri, messages, local


def test_the_model_is_stored_as_code_with_its_detector_and_nothing_is_pickled(logged):
    model_uri, uri, messages, local = logged
    flavor = Model.load(local).flavors["python_function"]
    assert flavor["model_code_path"].endswith(CODE_FILE) and "python_model" not in flavor
    assert "set_model(EmotionClassifier())" in (local / CODE_FILE).read_text()
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle")]
    assert not [m for m in messages if "pickle" in m.lower()], "no warning about pickling"
    assert not [m for m in messages if "input example was not provided" in m]
    bundled = load_registered(model_uri, uri).unwrap_python_model().detector_file
    assert bundled.name == HAAR_CASCADE.name and bundled != HAAR_CASCADE, "the model's own copy"
    assert bundled.read_bytes() == HAAR_CASCADE.read_bytes()
    assert DETECTOR_ARTIFACT in flavor["artifacts"]


def test_the_example_is_a_face_in_the_rest_form_and_scores_in_process_and_over_rest(logged):
    model_uri, uri, _, local = logged
    stored = Model.load(local)
    example, params = stored.load_input_example(local), stored.load_input_example_params(local)
    assert example["image"].tolist() == [example_base64()] and params == {"mode": "faces"}
    request = json.loads((local / "serving_input_example.json").read_text())
    assert request == {
        "dataframe_split": {"columns": ["image"], "data": [[example_base64()]]},
        "params": {"mode": "faces"},
    }
    assert stored.signature.inputs.input_names() == ["image"], "one image per cell, any form"
    assert [p.name for p in stored.signature.params.params] == ["mode", "channel_order"]

    model = load_registered(model_uri, uri)
    table = model.predict(example, params=params)
    assert list(table.columns) == TABLE_COLUMNS and len(table) == 1
    assert table[list(BOX_COLUMNS)].iloc[0].tolist() == [0, 0, 48, 48], "the face, whole"
    answer = asyncio.run(invoke(scoring_server.init(model), request))
    assert answer.status_code == 200, answer.text
    [row] = answer.json()["predictions"]
    assert row["emotion"] == table["emotion"].iloc[0]
    np.testing.assert_allclose([row[e] for e in EMOTIONS], table[list(EMOTIONS)].iloc[0], 1e-6)


def test_the_example_face_is_the_built_in_samples():
    from emoflow.components.sample.generate import generate_sample

    with tempfile.TemporaryDirectory() as scratch:
        settings = SampleSettings(
            out_dir=Path(scratch) / "sample",
            seed=2018,
            images_per_class=3,
            ckplus_subjects=1,
            ckplus_frames=2,
        )
        peak = max((generate_sample(settings).ckplus_dir / "happy").glob("S005_*.png"))
        np.testing.assert_array_equal(example_face(), cv2.imread(str(peak), cv2.IMREAD_GRAYSCALE))
