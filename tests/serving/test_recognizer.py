"""The peers' one-liner, ``Recognizer(uri).detect_emotions(img)``, over a registered model that
detects with MTCNN: its faces, scores and every single-image form."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest

from emoflow.components.serving.detection import FaceFinder
from emoflow.components.serving.recognizer import Recognizer
from emoflow.components.settings import ServeSettings
from tests.consumers import EMOTIONS, register_tiny_model, sample_photo, tracking

MTCNN = ServeSettings(detector="mtcnn")


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("recognizer")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return register_tiny_model(folder, uri, name="emoflow-mtcnn", serve=MTCNN), uri


@pytest.fixture(scope="module")
def recognizer(registered) -> Recognizer:
    model_uri, uri = registered
    return Recognizer(model_uri, tracking_uri=uri)


def test_one_image_gives_a_list_of_faces(recognizer):
    (face,) = recognizer.detect_emotions(str(sample_photo()))
    assert set(face) == {"box", "emotions", "emotion", "face_score"}
    assert list(face["emotions"]) == list(EMOTIONS) and face["emotion"] in EMOTIONS
    assert face["emotion"] == max(face["emotions"], key=face["emotions"].get)
    assert abs(sum(face["emotions"].values()) - 1) < 1e-5
    assert 0.8 <= face["face_score"] <= 1  # MTCNN's confidence, at least serve.score_threshold
    photo = cv2.cvtColor(cv2.imread(str(sample_photo())), cv2.COLOR_BGR2GRAY)
    (haar,) = FaceFinder(ServeSettings()).boxes(photo)
    x, y, w, h = face["box"]
    assert abs(x + w / 2 - (haar[0] + haar[2] / 2)) < haar[2] / 5  # the same face as Haar's
    assert abs(y + h / 2 - (haar[1] + haar[3] / 2)) < haar[3] / 5


def test_every_single_image_form_gives_the_same_faces(recognizer):
    path = sample_photo()
    image = cv2.imread(str(path))
    expected = recognizer.detect_emotions(path)
    forms = [
        (str(path), {}),
        (image, {}),
        (np.ascontiguousarray(image[..., ::-1]), {"channel_order": "rgb"}),
        (path.read_bytes(), {}),
        (base64.b64encode(path.read_bytes()).decode(), {}),
    ]
    for form, options in forms:
        assert recognizer.detect_emotions(form, **options) == expected


def test_an_image_without_faces_gives_an_empty_list(recognizer):
    assert recognizer.detect_emotions(np.full((240, 320, 3), 128, np.uint8)) == []


def test_a_model_folder_works_as_a_registry_uri(registered, recognizer, tmp_path):
    """The folder also shows what an MTCNN model ships: no detector file, mtcnn required."""
    model_uri, uri = registered
    with tracking(uri):
        folder = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path)))
    assert Recognizer(str(folder)).detect_emotions(sample_photo()) == recognizer.detect_emotions(
        sample_photo()
    )
    assert recognizer.classifier.detector_file is None
    assert not list(folder.rglob("*.xml")) and not list(folder.rglob("*.onnx"))
    required = {line.split("==")[0] for line in (folder / "requirements.txt").read_text().split()}
    assert {"mtcnn", "lz4", "joblib"} <= required
