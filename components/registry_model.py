"""The model as consumers get it from the registry: an MLflow pyfunc over the Keras network.

It takes a batch of 48x48 grayscale faces and returns one probability column per emotion,
named, so a consumer never needs to know the class order the network was trained with.
Inputs go through ``components.preprocessing.to_model_input``: the function training used.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Schema, TensorSpec

from components.manifest import IMAGE_SIZE

KERAS_ARTIFACT = "keras_model"
LABELS_ARTIFACT = "emotions"
COMPONENTS_DIR = Path(__file__).resolve().parent


class EmotionClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: faces in, a DataFrame of per-emotion probabilities out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import keras

        self.network = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        self.emotions = json.loads(Path(context.artifacts[LABELS_ARTIFACT]).read_text())

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from components.preprocessing import to_model_input

        faces = _as_face_array(model_input)
        probabilities = self.network.predict(to_model_input(faces), verbose=0) if len(faces) else np.zeros(
            (0, len(self.emotions))
        )
        return pd.DataFrame(probabilities, columns=self.emotions)


def _as_face_array(model_input) -> np.ndarray:
    if isinstance(model_input, pd.DataFrame):
        model_input = model_input.to_numpy()
    faces = np.asarray(model_input)
    if faces.ndim == 2 and faces.shape[1] == IMAGE_SIZE * IMAGE_SIZE:
        faces = faces.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return faces.astype(np.uint8)


def signature(emotions: tuple[str, ...]) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, IMAGE_SIZE, IMAGE_SIZE))]),
        outputs=Schema([ColSpec("double", name) for name in emotions]),
    )


def log_registry_model(keras_path: Path, emotions: tuple[str, ...], work_dir: Path) -> str:
    """Log the pyfunc model in the active run; return its model URI."""
    labels_path = work_dir / "emotions.json"
    labels_path.write_text(json.dumps(list(emotions)))
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=EmotionClassifier(),
        artifacts={KERAS_ARTIFACT: str(keras_path), LABELS_ARTIFACT: str(labels_path)},
        code_paths=[str(COMPONENTS_DIR)],
        signature=signature(emotions),
        pip_requirements=_requirements(),
    )
    return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("tensorflow", "keras", "mlflow", "pandas", "numpy")]
