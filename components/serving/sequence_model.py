"""The registry model of the sequence networks: windows of face crops in, emotions out.

ConvolutionalLstmNN and TimeDelayConvNN read ``time_delay`` consecutive 48x48 face crops of
one person, not a photo, so their pyfunc takes those windows as a uint8 array
``[N, time_delay, 48, 48]`` (the signature says so, and MLflow enforces it) and returns one
row per window, one probability column per emotion. Pixels go through the same
``to_model_input`` as training.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Schema, TensorSpec

from emoflow.components.face_views import load_network
from emoflow.components.manifest import IMAGE_SIZE
from emoflow.components.model_input import to_model_input
from emoflow.components.provenance import warn_if_synthetic
from emoflow.components.serving.image_model import (
    KERAS_ARTIFACT,
    LABELS_ARTIFACT,
    pip_requirements,
    served_code,
    training_data,
    training_data_artifact,
)
from emoflow.components.serving.stored_model import code_file, example_face


class SequenceClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a sequence network (``network``, ``emotions`` as in EmotionClassifier)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.network = load_network(context.artifacts[KERAS_ARTIFACT])
        self.emotions = json.loads(Path(context.artifacts[LABELS_ARTIFACT]).read_text())
        self.training_data = training_data(context.artifacts)
        self._warned = False

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        if not self._warned:
            self._warned = True
            warn_if_synthetic(self.training_data)
        windows = np.asarray(model_input)
        frames = self.network.input_shape[1]
        if windows.ndim != 4 or windows.shape[1:] != (frames, IMAGE_SIZE, IMAGE_SIZE):
            raise MlflowException.invalid_parameter_value(
                f"expected windows of {frames} face crops, uint8 [N, {frames}, {IMAGE_SIZE}, "
                f"{IMAGE_SIZE}]; "
                f"got shape {tuple(np.shape(model_input))}"
            )
        probabilities = self.network.predict(to_model_input(windows.astype(np.uint8)), verbose=0)
        return pd.DataFrame(probabilities, columns=self.emotions)


def log_sequence_model(
    keras_path: Path,
    emotions: tuple[str, ...],
    time_delay: int,
    work_dir: Path,
    data: dict | None = None,
) -> str:
    """Log the pyfunc of a sequence network in the active run, as code with an input example
    (``components.serving.stored_model``); return its model URI (``data``: the training
    data's provenance record, as for image models)."""
    labels_path = work_dir / "emotions.json"
    labels_path.write_text(json.dumps(list(emotions)))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, time_delay, IMAGE_SIZE, IMAGE_SIZE))]),
        outputs=Schema([ColSpec("float", name) for name in emotions]),
    )
    with tempfile.TemporaryDirectory() as scratch:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code_file(SequenceClassifier, Path(scratch))),
            artifacts={
                KERAS_ARTIFACT: str(keras_path),
                LABELS_ARTIFACT: str(labels_path),
                **training_data_artifact(data, work_dir),
            },
            code_paths=[str(served_code(Path(scratch)))],
            signature=signature,
            # one window of the example face held still, the shape the signature takes
            input_example=np.repeat(example_face()[None, None], time_delay, axis=1),
            pip_requirements=pip_requirements(),
        )
    return info.model_uri
