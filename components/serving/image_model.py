"""The model as consumers get it from the registry: an MLflow pyfunc around the Keras network.

It carries its own face detector and serve settings, so ``models:/<name>@champion`` turns a
raw photo into per-face emotions with the preprocessing training used
(``components.serving.detection``).

Input (``model.predict(model_input, params={"mode": ..., "channel_order": ...})``): what the
peers take, a file path (in-process only), one image array (HxW gray, HxWx3 / HxWx4 in
``channel_order``: ``bgr``, OpenCV's order and the default, or ``rgb``), encoded bytes (PNG,
JPEG, BMP, WebP, TIFF), base64 text of those bytes (REST JSON has no bytes), or many of
them: a list, a batch array, a DataFrame with an ``image`` column (the REST form), a dict
``{"image": [...]}`` (REST ``inputs``). The rules that tell these apart, for arrays and for
strings, are in ``components.serving.model_inputs``.

- Images: one row per face: ``image`` (the input's index), ``source`` (its path, or
  ``image <index>``), ``x, y, w, h`` (the box in that image's pixels), ``face_score`` (the
  detector's confidence, None where it gives none: Haar), one probability column per emotion
  and ``emotion`` (the top one). An image without a face adds no rows.
- Face crops, the array form of the skeleton: uint8 [N, 48, 48] (or [N, 48, 48, 1], N rows
  of 2304 pixels, one [48, 48] crop). Output: one row per face, one probability column per
  emotion.

``mode``: ``auto`` (default: face-crop arrays are classified as they are, other images go
through detection), ``detect`` (always detect, also in 48x48 arrays) or ``faces`` (every
image is one face crop of any size: no detection, the box is the whole image).

There is no input schema in the signature: MLflow would enforce one form of input and
reject the other (a column schema refuses the face arrays; a tensor schema refuses encoded
images). The output schema describes the image form; the params schema lets ``mode`` and
``channel_order`` reach the model, also through REST.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from components.face_views import load_network, tta_views, view_margin
from components.manifest import IMAGE_SIZE
from components.model_input import INPUT_SHAPE
from components.provenance import warn_if_synthetic
from components.serving.detection import HAAR_CASCADE, FaceFinder, model_input
from components.serving.image_input import CHANNEL_ORDERS, ImageError
from components.serving.model_inputs import (
    IMAGE_COLUMN,
    READ_FILES,
    face_array,
    files_allowed,
    read_images,
)
from components.settings import ServeSettings

KERAS_ARTIFACT = "keras_model"
LABELS_ARTIFACT = "emotions"
SERVE_ARTIFACT = "serve_settings"
DETECTOR_ARTIFACT = "face_detector"
TRAINING_DATA_ARTIFACT = "training_data"  # components.provenance's record of the train set
SERVING_DIR = Path(__file__).resolve().parent
COMPONENTS_DIR = SERVING_DIR.parent
SOURCE_COLUMN = "source"
BOX_COLUMNS = ("x", "y", "w", "h")
SCORE_COLUMN = "face_score"
TOP_COLUMN = "emotion"
MODES = ("auto", "detect", "faces")


class EmotionClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: images or face crops in, a DataFrame of per-face emotions out.

    ``emoflow predict`` and the benchmark use this same object (``unwrap_python_model()``):
    its ``finder`` and :meth:`probabilities`, so every consumer shares one preprocessing path.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        artifacts = context.artifacts
        self._setup(
            load_network(artifacts[KERAS_ARTIFACT]),
            json.loads(Path(artifacts[LABELS_ARTIFACT]).read_text()),
            ServeSettings.model_validate_json(Path(artifacts[SERVE_ARTIFACT]).read_text()),
            Path(artifacts[DETECTOR_ARTIFACT]) if DETECTOR_ARTIFACT in artifacts else None,
        )
        self.training_data = training_data(artifacts)
        self.model_config = dict(context.model_config or {})

    @classmethod
    def from_keras(
        cls, keras_path: Path, emotions: list[str], settings: ServeSettings
    ) -> EmotionClassifier:
        """The same classifier straight from a ``.keras`` file, without a registry."""

        model = cls()
        model._setup(load_network(keras_path), emotions, settings, None)
        model.training_data = None
        model.model_config = {}
        return model

    def _setup(
        self, network, emotions: list[str], settings: ServeSettings, detector_file: Path | None
    ) -> None:
        self.network = network
        self.emotions = list(emotions)
        self.settings = settings
        self.detector_file = detector_file  # None: the settings' file, OpenCV's, or mtcnn's
        self.finder = FaceFinder(settings, detector_file)
        self._margin = view_margin(network)
        self._warned = False
        # One trace for every batch size; Keras' predict() costs ~50 ms per call in overhead.
        self._forward = tf.function(
            lambda x: network(x, training=False),
            input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32)],
        )

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        mode, channel_order = _options(params)
        try:
            faces = None if mode == "detect" else face_array(model_input)
            if faces is not None:
                return pd.DataFrame(self.probabilities(faces), columns=self.emotions)
            images = read_images(
                model_input, channel_order, self.settings, files_allowed(self.model_config)
            )
            return self.table([i.gray for i in images], mode, [i.name for i in images])
        except ImageError as err:  # the REST server answers 400 with this message
            raise MlflowException.invalid_parameter_value(str(err)) from None

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """uint8 [K, 48, 48] face crops -> float32 [K, emotions], averaged over the test-time
        views of ``serve.tta``. The first call of a model trained on the sample warns."""
        if not self._warned:
            self._warned = True
            warn_if_synthetic(self.training_data)
        if not len(crops):
            return np.zeros((0, len(self.emotions)), np.float32)
        views = tta_views(model_input(crops).numpy(), self.settings.tta, self._margin)
        return sum(self._forward(view).numpy() for view in views) / len(views)

    def table(
        self, images: list[np.ndarray], mode: str, names: list[str] | None = None
    ) -> pd.DataFrame:
        """Grayscale images -> one row per face (all faces through the network at once);
        ``names`` fill the ``source`` column (default: ``image <index>``)."""
        names = names or [f"image {index}" for index in range(len(images))]
        found = [self.finder.whole(g) if mode == "faces" else self.finder.detect(g) for g in images]
        counts = [len(f.boxes) for f in found]
        boxes = np.concatenate([np.zeros((0, 4), np.int64), *(f.boxes for f in found)])
        crops = np.concatenate(
            [np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), *(f.crops for f in found)]
        )
        probabilities = self.probabilities(crops)
        columns = {
            IMAGE_COLUMN: np.repeat(np.arange(len(found), dtype=np.int64), counts),
            SOURCE_COLUMN: np.repeat(np.array(names, dtype=object), counts),
        }
        columns.update({name: boxes[:, i] for i, name in enumerate(BOX_COLUMNS)})
        columns[SCORE_COLUMN] = _nullable(np.concatenate([np.zeros(0), *(f.scores for f in found)]))
        columns.update({name: probabilities[:, i] for i, name in enumerate(self.emotions)})
        columns[TOP_COLUMN] = np.array(self.emotions, dtype=object)[probabilities.argmax(axis=1)]
        return pd.DataFrame(columns)


def _nullable(scores: np.ndarray) -> np.ndarray:
    """None where a detector gives no score: NaN would make the REST answer invalid JSON."""
    return np.array([None if np.isnan(s) else float(s) for s in scores], dtype=object)


def _options(params: dict | None) -> tuple[str, str]:
    params = params or {}
    mode, channel_order = params.get("mode", "auto"), params.get("channel_order", "bgr")
    if mode not in MODES:
        raise MlflowException.invalid_parameter_value(
            f"params.mode must be one of {', '.join(MODES)}, got {mode!r}"
        )
    if channel_order not in CHANNEL_ORDERS:
        raise MlflowException.invalid_parameter_value(
            f"params.channel_order must be one of {', '.join(CHANNEL_ORDERS)}, "
            f"got {channel_order!r}"
        )
    return mode, channel_order


def signature(emotions: tuple[str, ...] | list[str]) -> ModelSignature:
    outputs = Schema(
        [
            ColSpec("long", IMAGE_COLUMN),
            ColSpec("string", SOURCE_COLUMN),
            *(ColSpec("long", name) for name in BOX_COLUMNS),
            ColSpec("double", SCORE_COLUMN, required=False),  # null: the detector gives none
            *(ColSpec("float", name) for name in emotions),
            ColSpec("string", TOP_COLUMN),
        ]
    )
    params = ParamSchema(
        [ParamSpec("mode", "string", "auto"), ParamSpec("channel_order", "string", "bgr")]
    )
    return ModelSignature(inputs=None, outputs=outputs, params=params)


def log_registry_model(
    keras_path: Path,
    emotions: tuple[str, ...],
    work_dir: Path,
    serve: ServeSettings | None = None,
    data: dict | None = None,
) -> str:
    """Log the pyfunc model in the active run; return its model URI.

    The face detector file (OpenCV's cascade unless ``serve.detector_model`` names one; none
    for mtcnn, whose weights come with its package, a requirement then), the serve settings
    and the training data's provenance record (``data``) travel as artifacts, so the model
    detects the same way anywhere and knows whether it learnt from real faces.
    """
    serve = serve or ServeSettings()
    labels_path = work_dir / "emotions.json"
    labels_path.write_text(json.dumps(list(emotions)))
    serve_path = work_dir / "serve.json"
    serve_path.write_text(serve.model_dump_json(indent=2))
    with tempfile.TemporaryDirectory() as scratch:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=EmotionClassifier(),
            artifacts={
                KERAS_ARTIFACT: str(keras_path),
                LABELS_ARTIFACT: str(labels_path),
                SERVE_ARTIFACT: str(serve_path),
                **detector_artifact(serve),
                **training_data_artifact(data, work_dir),
            },
            code_paths=[str(served_code(Path(scratch)))],
            signature=signature(emotions),
            pip_requirements=pip_requirements(serve),
            # declared, so that load_model(..., model_config={"read_files": False}) may override
            model_config={READ_FILES: True},
        )
    return info.model_uri


def detector_artifact(serve: ServeSettings) -> dict[str, str]:
    """The artifacts entry of the detector's file: a cascade or YuNet's .onnx; mtcnn has none."""
    if serve.detector == "mtcnn":
        return {}
    return {DETECTOR_ARTIFACT: str(serve.detector_model or HAAR_CASCADE)}


def training_data_artifact(data: dict | None, work_dir: Path) -> dict[str, str]:
    """The artifacts entry of the training data's record, when there is one."""
    if data is None:
        return {}
    path = work_dir / "training_data.json"
    path.write_text(json.dumps(data, indent=2))
    return {TRAINING_DATA_ARTIFACT: str(path)}


def training_data(artifacts: dict[str, str]) -> dict | None:
    """A loaded model's training-data record; None for a model logged before records."""
    path = artifacts.get(TRAINING_DATA_ARTIFACT)
    return json.loads(Path(path).read_text()) if path else None


def served_code(scratch: Path) -> Path:
    """A copy of the code a registered model runs: the shared root of ``components`` and
    ``components/serving``, nothing of ingest, validation, training or judging (which serving
    never imports: a test holds it to that). Written as ``scratch/components``."""
    target = scratch / COMPONENTS_DIR.name
    (target / SERVING_DIR.name).mkdir(parents=True)
    for module in COMPONENTS_DIR.glob("*.py"):
        shutil.copy2(module, target / module.name)
    for module in SERVING_DIR.glob("*.py"):
        shutil.copy2(module, target / SERVING_DIR.name / module.name)
    return target


def pip_requirements(serve: ServeSettings | None = None) -> list[str]:
    """What the model needs installed, pinned to this environment; mtcnn when it detects."""
    from importlib.metadata import version

    mtcnn = serve is not None and serve.detector == "mtcnn"

    names = (
        "tensorflow",
        "keras",
        "mlflow",
        "pandas",
        "numpy",
        "opencv-python-headless",
        "pillow",
        "pydantic",
        "pyyaml",
        *(("mtcnn", "lz4", "joblib") if mtcnn else ()),
    )
    return [f"{name}=={version(name)}" for name in names]
