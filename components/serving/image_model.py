"""The model as consumers get it from the registry: an MLflow pyfunc around the Keras network.

It carries its own face detector and serve settings, so ``models:/<name>@champion`` turns a
raw photo into per-face emotions with the preprocessing training used
(``components.serving.detection``).

Input (``model.predict(model_input, params={"mode": ..., "channel_order": ...})``):

- images: a DataFrame with an ``image`` column (the REST form), a list, a dict
  ``{"image": [...]}`` (REST ``inputs``), or a single image. Each image is encoded bytes
  (PNG, JPEG, BMP, WebP, TIFF), base64 text of those bytes (REST JSON has no bytes), or a
  pixel array HxW (gray), HxWx3 / HxWx4 in ``channel_order`` (``bgr``, OpenCV's order and
  the default, or ``rgb``). A numpy array is a batch: [N, H, W] or [N, H, W, C].
  Output: one row per face, ``image`` (index of the input image), ``x, y, w, h`` (the box
  in that image's pixels), one probability column per emotion and ``emotion`` (the top
  one). An image without a face adds no rows.
- face crops, the array form of the skeleton: uint8 [N, 48, 48] (or [N, 48, 48, 1], or N
  rows of 2304 pixels). Output: one row per face, one probability column per emotion.

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
from components.serving.image_input import (
    CHANNEL_ORDERS,
    ImageError,
    as_uint8,
    decode_image,
    to_gray,
)
from components.settings import ServeSettings

KERAS_ARTIFACT = "keras_model"
LABELS_ARTIFACT = "emotions"
SERVE_ARTIFACT = "serve_settings"
DETECTOR_ARTIFACT = "face_detector"
TRAINING_DATA_ARTIFACT = "training_data"  # components.provenance's record of the train set
SERVING_DIR = Path(__file__).resolve().parent
COMPONENTS_DIR = SERVING_DIR.parent
IMAGE_COLUMN = "image"
BOX_COLUMNS = ("x", "y", "w", "h")
TOP_COLUMN = "emotion"
MODES = ("auto", "detect", "faces")
_STRING_LIKE = (bytes, bytearray, memoryview, str)


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
            Path(artifacts[DETECTOR_ARTIFACT]),
        )
        self.training_data = training_data(artifacts)

    @classmethod
    def from_keras(
        cls, keras_path: Path, emotions: list[str], settings: ServeSettings
    ) -> EmotionClassifier:
        """The same classifier straight from a ``.keras`` file, without a registry."""

        model = cls()
        model._setup(load_network(keras_path), emotions, settings, None)
        model.training_data = None
        return model

    def _setup(
        self, network, emotions: list[str], settings: ServeSettings, detector_file: Path | None
    ) -> None:
        self.network = network
        self.emotions = list(emotions)
        self.settings = settings
        self.detector_file = detector_file  # None: the serve settings' file or OpenCV's
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
            return self.table(read_images(model_input, channel_order, self.settings), mode)
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

    def table(self, images: list[np.ndarray], mode: str) -> pd.DataFrame:
        """Grayscale images -> one row per face (all faces through the network at once)."""
        found = [self.finder.whole(g) if mode == "faces" else self.finder.detect(g) for g in images]
        boxes = np.concatenate([np.zeros((0, 4), np.int64), *(f.boxes for f in found)])
        crops = np.concatenate(
            [np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), *(f.crops for f in found)]
        )
        probabilities = self.probabilities(crops)
        columns = {
            IMAGE_COLUMN: np.repeat(
                np.arange(len(found), dtype=np.int64), [len(f.boxes) for f in found]
            )
        }
        columns.update({name: boxes[:, i] for i, name in enumerate(BOX_COLUMNS)})
        columns.update({name: probabilities[:, i] for i, name in enumerate(self.emotions)})
        columns[TOP_COLUMN] = np.array(self.emotions, dtype=object)[probabilities.argmax(axis=1)]
        return pd.DataFrame(columns)


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


def face_array(model_input) -> np.ndarray | None:
    """The skeleton's input, 48x48 face crops as an array or a 2304-column frame; else None."""
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN in model_input.columns or model_input.shape[1] != IMAGE_SIZE * IMAGE_SIZE:
            return None
        model_input = model_input.to_numpy()
    if not isinstance(model_input, np.ndarray) or model_input.dtype.kind not in "uif":
        return None
    flat = model_input.ndim == 2 and model_input.shape[1] == IMAGE_SIZE * IMAGE_SIZE
    crops = model_input.shape[1:] in ((IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE, 1))
    if not (flat or crops):
        return None
    return as_uint8(model_input.reshape(-1, IMAGE_SIZE, IMAGE_SIZE), "face array")


def read_images(model_input, channel_order: str, settings: ServeSettings) -> list[np.ndarray]:
    """Every accepted image form -> grayscale uint8 arrays, checked against the limits."""
    items = _image_items(model_input)
    if len(items) > settings.max_images:
        raise ImageError(
            f"{len(items)} images in one call, over the limit of {settings.max_images}"
        )
    return [
        _read(item, f"image {index}", channel_order, settings) for index, item in enumerate(items)
    ]


def _image_items(model_input) -> list:
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ImageError(
                f"a DataFrame needs an {IMAGE_COLUMN!r} column (base64 text, bytes or pixel "
                f"arrays); got columns {[str(c) for c in model_input.columns[:8]]}"
            )
        return list(model_input[IMAGE_COLUMN])
    if isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise ImageError(
                f"a dict input needs an {IMAGE_COLUMN!r} key; got keys {list(model_input)[:8]}"
            )
        model_input = model_input[IMAGE_COLUMN]
    if isinstance(model_input, _STRING_LIKE):
        return [model_input]
    if isinstance(model_input, np.ndarray):
        if model_input.dtype.kind in "OSU":
            return list(model_input.ravel())
        if model_input.ndim not in (3, 4):
            raise ImageError(
                "an array is a batch of images, [N, H, W] or [N, H, W, C]; "
                f"got shape {model_input.shape}"
            )
        return list(model_input)
    if isinstance(model_input, (list, tuple, pd.Series)):
        return list(model_input)
    raise ImageError(
        f"unsupported input type {type(model_input).__name__}: see "
        "components/serving/image_model.py"
    )


def _read(item, name: str, channel_order: str, settings: ServeSettings) -> np.ndarray:
    if isinstance(item, _STRING_LIKE):
        return decode_image(item, name, settings)
    try:
        pixels = np.asarray(item)
    except ValueError as err:  # ragged nested lists
        raise ImageError(f"{name}: not a pixel array ({err})") from None
    return to_gray(pixels, channel_order, name, settings)


def signature(emotions: tuple[str, ...] | list[str]) -> ModelSignature:
    outputs = Schema(
        [
            ColSpec("long", IMAGE_COLUMN),
            *(ColSpec("long", name) for name in BOX_COLUMNS),
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

    The face detector file (OpenCV's cascade unless ``serve.detector_model`` names one), the
    serve settings and the training data's provenance record (``data``) travel as artifacts,
    so the model detects the same way anywhere and knows whether it learnt from real faces.
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
                DETECTOR_ARTIFACT: str(serve.detector_model or HAAR_CASCADE),
                **training_data_artifact(data, work_dir),
            },
            code_paths=[str(served_code(Path(scratch)))],
            signature=signature(emotions),
            pip_requirements=pip_requirements(),
        )
    return info.model_uri


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


def pip_requirements() -> list[str]:
    from importlib.metadata import version

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
    )
    return [f"{name}=={version(name)}" for name in names]
