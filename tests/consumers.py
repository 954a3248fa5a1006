"""Builders shared by the consumer tests: a tiny model, a registered copy, images with faces.

The faces are real CK+48 crops where ``../shared/data`` exists and the built-in sample's
synthetic CK+-style faces otherwise; both are upscaled onto a canvas, as a face sits in a
photo. Whether OpenCV's Haar cascade finds them is checked by the tests, not assumed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import cv2
import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from emoflow.components.model_input import to_model_input
from emoflow.components.serving.image_model import log_registry_model
from emoflow.components.settings import ServeSettings
from emoflow.components.training import architectures
from tests.conftest import SHARED_DATA

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CKPLUS_FOLDERS = ("happy", "surprise", "anger", "sadness", "disgust", "fear")


def tiny_keras_model(folder: Path) -> Path:
    """The default architecture after a few steps on random faces: plumbing, not accuracy."""
    keras.utils.set_random_seed(0)
    network = architectures.build("convnn", len(EMOTIONS), 16)
    network.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (64, 48, 48), dtype=np.uint8)
    network.fit(
        to_model_input(faces),
        rng.integers(0, len(EMOTIONS), 64),
        batch_size=16,
        epochs=1,
        verbose=0,
    )
    path = folder / "model.keras"
    network.save(path)
    return path


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow pointed at ``uri`` for the block only: other tests must not inherit the store."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


def register_tiny_model(
    folder: Path, tracking_uri: str, name: str = "emoflow-test", serve: ServeSettings | None = None
) -> str:
    """Log the tiny model as the registry model, register it, alias it champion; its URI."""
    with tracking(tracking_uri):
        client = mlflow.MlflowClient()
        with mlflow.start_run(experiment_id=client.create_experiment("consumers")):
            model_uri = log_registry_model(tiny_keras_model(folder), EMOTIONS, folder, serve)
        version = mlflow.register_model(model_uri, name)
        client.set_registered_model_alias(name, "champion", version.version)
    return f"models:/{name}@champion"


def load_registered(model_uri: str, tracking_uri: str):
    with tracking(tracking_uri):
        return mlflow.pyfunc.load_model(model_uri)


def image_column(images) -> pd.DataFrame:
    """The form the model's input schema admits: one image per cell of the ``image`` column."""
    return pd.DataFrame({"image": list(images)})


@functools.cache
def face_crops() -> tuple[np.ndarray, ...]:
    """48x48 grayscale faces of different people and expressions."""
    if (SHARED_DATA / "ckplus48").is_dir():
        return tuple(
            cv2.imread(
                str(min((SHARED_DATA / "ckplus48" / folder).glob("*.png"))),
                cv2.IMREAD_GRAYSCALE,
            )
            for folder in CKPLUS_FOLDERS
        )
    return _synthetic_crops()


def _synthetic_crops() -> tuple[np.ndarray, ...]:
    import tempfile

    from emoflow.components.sample.generate import generate_sample
    from emoflow.components.settings import SampleSettings

    with tempfile.TemporaryDirectory() as tmp:
        files = generate_sample(
            SampleSettings(
                out_dir=Path(tmp) / "sample", images_per_class=3, ckplus_subjects=2, ckplus_frames=2
            )
        )
        paths = [max((files.ckplus_dir / folder).glob("*.png")) for folder in CKPLUS_FOLDERS]
        return tuple(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths)


def canvas_with_faces(
    crops: list[np.ndarray],
    size: tuple[int, int] = (640, 480),
    side: int = 160,
    background: int = 120,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A gray BGR canvas (width, height) with the crops upscaled to ``side`` in a row; boxes."""
    width, height = size
    canvas = np.full((height, width), background, np.uint8)
    # A horizontal light gradient, so the background is not a flat colour.
    canvas = np.clip(canvas + np.linspace(-30, 30, width)[np.newaxis, :], 0, 255).astype(np.uint8)
    gap = (width - len(crops) * side) // (len(crops) + 1)
    boxes = []
    for index, crop in enumerate(crops):
        x, y = gap + index * (side + gap), (height - side) // 2
        canvas[y : y + side, x : x + side] = cv2.resize(
            crop, (side, side), interpolation=cv2.INTER_CUBIC
        )
        boxes.append((x, y, side, side))
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR), boxes


def png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def best_iou(box, boxes) -> float:
    from emoflow.components.serving.detection import iou

    return max((iou(box, other) for other in boxes), default=0.0)


def detectable_crops(count: int) -> list[np.ndarray]:
    """``count`` test faces that OpenCV's Haar cascade finds on their own; skip if too few."""
    from emoflow.components.serving.detection import FaceFinder

    finder = FaceFinder(ServeSettings())
    found = [
        crop
        for crop in face_crops()
        if len(finder.boxes(cv2.cvtColor(canvas_with_faces([crop])[0], cv2.COLOR_BGR2GRAY))) == 1
    ]
    if len(found) < count:
        source = "CK+48" if (SHARED_DATA / "ckplus48").is_dir() else "synthetic sample"
        pytest.skip(
            f"the Haar cascade finds {len(found)} of the {source} test faces; {count} needed"
        )
    return found[:count]


def sample_photo() -> Path:
    """A real photograph no one here made: Grace Hopper's portrait (U.S. Navy, public domain),
    as matplotlib ships it among its sample data; one frontal face."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def write_params_for(folder: Path) -> Path:
    """The project's params with the MLflow store in ``folder``: nothing touches ./mlflow.db."""
    from tests.conftest import write_params

    return write_params(folder, {"mlflow": {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"}})
