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

The input schema is one ``image`` column of MLflow's type ``any``: one image per cell, in any
of the forms above (base64 text, bytes, a path in-process, a pixel array). MLflow enforces it
before the model sees its input, so through ``mlflow.pyfunc.load_model`` the input is a
DataFrame with that column (the REST ``dataframe_split`` / ``dataframe_records`` forms) or a
dict ``{"image": [...]}`` (REST ``inputs``, which MLflow hands over as one cell holding the
list: a cell holding a list of strings or bytes is that many images). A column of face-crop
arrays, every cell [48, 48], is face crops (modes ``auto`` and ``faces``). The bare forms (a
list, a batch array, a lone value) are refused there, by MLflow, naming the missing column;
they stay open in-process on the unwrapped model (``unwrap_python_model()``, which
``emoflow predict`` and ``Recognizer`` use). A string or binary column would refuse arrays, and a
tensor schema refuses encoded images. The input example (``components.serving.stored_model``)
is one face as a base64 PNG in the ``image`` column with ``mode: faces``, which MLflow turns
into the REST request that scores it (``serving_input_example.json``) and scores through its
serving path as it logs the model. The output schema describes the image form; the params
schema lets ``mode`` and ``channel_order`` reach the model, also through REST; any other
param is refused by name.

Bounded per call (``serve:`` limits, ``components.serving.model_inputs``): the whole call is
measured from the images' headers before any is decoded; then images are decoded one at a
time (a large one at a reduced scale, ``components.serving.image_input.decode``), searched,
and dropped before the next is decoded, taking turns with other calls at an
:class:`ImageGate`; a call stops between images once past its deadline
(504), so work a client gave up on does not go on. Every failure is an MLflow error with its
own HTTP status (400 for a bad input, naming the image and the reason), whose message quotes
no input data and carries no stack trace (:class:`RequestError`).
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import (
    DEADLINE_EXCEEDED,
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.pyfunc.context import get_prediction_context
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

from emoflow.components.errors import EmoFlowError
from emoflow.components.face_views import load_network, tta_views, view_margin
from emoflow.components.manifest import IMAGE_SIZE
from emoflow.components.model_input import INPUT_SHAPE
from emoflow.components.provenance import warn_if_synthetic
from emoflow.components.serving.detection import HAAR_CASCADE, FaceFinder, Faces, model_input
from emoflow.components.serving.image_input import CHANNEL_ORDERS, ImageError, PendingImage, decode
from emoflow.components.serving.model_inputs import (
    IMAGE_COLUMN,
    READ_FILES,
    face_array,
    files_allowed,
    pending_images,
)
from emoflow.components.serving.stored_model import code_file, example_base64
from emoflow.components.settings import ServeSettings

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
PARAMS = {"mode": "auto", "channel_order": "bgr"}  # the params schema: names and defaults
FORWARD_BATCH = 256  # faces per network call: bounds the activations, however many faces
_logger = logging.getLogger(__name__)


class RequestError(EmoFlowError, MlflowException):
    """A failed call, as the REST server answers it: its HTTP status and this message only.

    MLflow's scoring server rewrites the message of an MlflowException a model raises as
    ``Failed to predict data '<the request>'...``, echoing base64 faces and pixel arrays into
    the answer (and any log of it); any other exception becomes a 400 carrying the server's
    stack trace. The message of this one is set once, by its constructor, and kept.
    """

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


class DeadlineExceeded(EmoFlowError):
    """A call ran past ``serve.request_timeout_seconds`` (or the server's own timeout)."""


class ServerBusy(EmoFlowError):
    """The call's next image was refused a place in the queue of the :class:`ImageGate`."""


class BadParams(EmoFlowError, ValueError):
    """Params the model does not take, or values it does not know; refused by name, since a
    misspelt ``mode`` that went unnoticed would silently detect instead."""


_HTTP_CODES = {DeadlineExceeded: DEADLINE_EXCEEDED, ServerBusy: TEMPORARILY_UNAVAILABLE}


class Deadline:
    """When a call must stop: checked between images, and bounding each wait for a turn."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def check(self, name: str) -> None:
        if not self.left():
            raise self.exceeded(name)

    def exceeded(self, name: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{name}: not searched, the call ran past its limit of {self.seconds:g} s"
        )


def call_timeout(settings: ServeSettings) -> float:
    """``serve.request_timeout_seconds``, or MLflow's scoring-server timeout (``-t``, set in
    the server's environment) when that is lower: past it the client has its 504 already."""
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT as SERVING
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT as TIMEOUT

    if SERVING.get():
        return min(settings.request_timeout_seconds, TIMEOUT.get())
    return settings.request_timeout_seconds


@dataclass(order=True)
class _Waiter:
    key: tuple[int, int]  # (pixels of its call so far, this image's included; arrival)
    ready: threading.Event = field(default_factory=threading.Event, compare=False)
    refused: bool = field(default=False, compare=False)


class ImageGate:
    """Turns at decoding and searching an image, shared by the calls running at once (the REST
    server runs each request on a worker thread).

    At most ``parallel`` images at a time, which bounds the decoded pixels in memory; the
    cheapest waiting image goes next: the one whose call has the fewest pixels so far, its
    own included, so a one-photo call is served before the third 40-megapixel image of
    another. With ``queued`` images waiting, the costliest of them, or the newcomer if it
    costs more, is refused at once (503): that frees its worker thread (MLflow's server has
    a handful) rather than holding it until its deadline. (``threading.Semaphore`` would let
    a thread that has just released its slot take it straight back.)
    """

    def __init__(self, parallel: int, queued: int):
        self._lock = threading.Lock()
        self._free = parallel
        self._queued = queued
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()

    @contextlib.contextmanager
    def turn(self, cost: int, deadline: Deadline, name: str) -> Iterator[None]:
        waiter = self._join(cost, name)
        if waiter is not None:
            self._wait(waiter, deadline, name)
        try:
            yield
        finally:
            self._leave()

    def _join(self, cost: int, name: str) -> _Waiter | None:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return None
            waiter = _Waiter((cost, next(self._arrivals)))
            if len(self._waiting) >= self._queued:
                costliest = max(self._waiting, default=waiter)
                if costliest is waiter or costliest < waiter:
                    raise _busy(name)
                self._waiting.remove(costliest)
                costliest.refused = True
                costliest.ready.set()
            self._waiting.append(waiter)
            return waiter

    def _wait(self, waiter: _Waiter, deadline: Deadline, name: str) -> None:
        waiter.ready.wait(deadline.left())
        with self._lock:
            if not waiter.ready.is_set():
                self._waiting.remove(waiter)
                raise deadline.exceeded(name)
        if waiter.refused:
            raise _busy(name)

    def _leave(self) -> None:
        with self._lock:
            if self._waiting:
                following = min(self._waiting)
                self._waiting.remove(following)
                following.ready.set()
            else:
                self._free += 1


def _busy(name: str) -> ServerBusy:
    return ServerBusy(f"{name}: not searched, the server is busy with other images; retry later")


# MLflow drops the params a signature does not declare before predict runs, with a warning
# only. The warning is logged in the calling thread, inside the prediction's context, just
# before predict: this filter reads the names from it and keeps them for predict to refuse.
_DROPPED: ContextVar[tuple[object, list[str]] | None] = ContextVar("emoflow_dropped", default=None)
_DROPPED_PATTERN = re.compile(r"Unrecognized params (\[.*?\]) are ignored")
_MLFLOW_PARAMS_LOGGER = "mlflow.models.utils"  # where MLflow 3 enforces the params schema


class _DroppedParams(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        match = _DROPPED_PATTERN.match(record.getMessage())
        context = get_prediction_context()
        if match and context is not None:
            _DROPPED.set((context, ast.literal_eval(match.group(1))))
        return True


def _watch_dropped_params() -> None:
    logger = logging.getLogger(_MLFLOW_PARAMS_LOGGER)
    if not any(isinstance(f, _DroppedParams) for f in logger.filters):
        logger.addFilter(_DroppedParams())


def _dropped_params() -> list[str]:
    """The params MLflow dropped from this prediction (none outside a pyfunc prediction)."""
    dropped = _DROPPED.get()
    _DROPPED.set(None)
    if dropped is None or dropped[0] is not get_prediction_context():
        return []
    return [str(name) for name in dropped[1]]


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
        _watch_dropped_params()

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
        self.gate = ImageGate(settings.parallel_images, settings.queued_images)
        self._margin = view_margin(network)
        self._warned = False
        # One trace for every batch size; Keras' predict() costs ~50 ms per call in overhead.
        self._forward = tf.function(
            lambda x: network(x, training=False),
            input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32)],
        )

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        """Every failure is a :class:`RequestError`: what the REST server answers."""
        try:
            # the params MLflow dropped go back in, for _options to refuse by name
            mode, channel_order = _options({**(params or {}), **dict.fromkeys(_dropped_params())})
            return self.emotions_in(model_input, mode, channel_order)
        except EmoFlowError as err:
            code = next((c for t, c in _HTTP_CODES.items() if isinstance(err, t)), None)
            raise RequestError(str(err), code or INVALID_PARAMETER_VALUE) from None
        except Exception as err:  # a fault of ours: logged in full, answered without detail
            _logger.exception("EmoFlow predict failed")
            raise RequestError(
                f"internal error ({type(err).__name__}); the server's log has the details",
                INTERNAL_ERROR,
            ) from err

    def emotions_in(self, model_input, mode: str, channel_order: str) -> pd.DataFrame:
        """:meth:`predict` in-process, raising :class:`EmoFlowError` subclasses (bad images
        are :class:`ImageError`). Each image is decoded and searched in its turn at the gate,
        and dropped before the next: only its faces are kept."""
        deadline = Deadline(call_timeout(self.settings))
        faces = None if mode == "detect" else face_array(model_input, self.settings)
        if faces is not None:
            return pd.DataFrame(self.probabilities(faces), columns=self.emotions)
        images = pending_images(model_input, self.settings, files_allowed(self.model_config))
        found, pixels = [], 0
        for image in images:
            deadline.check(image.name)
            pixels += image.area
            with self.gate.turn(pixels, deadline, image.name):
                found.append(self._faces_in(image, mode, channel_order))
        return self.table(found, [image.name for image in images])

    def _faces_in(self, image: PendingImage, mode: str, channel_order: str) -> Faces:
        """One image's faces, boxes in its own pixels (it may be decoded at a reduced scale)."""
        try:
            gray, scale = decode(image, channel_order, self.settings.detect_max_side)
            faces = self.finder.whole(gray) if mode == "faces" else self.finder.detect(gray)
        except cv2.error:  # its message holds OpenCV's source paths, not the input's fault
            raise ImageError(
                f"{image.name}: OpenCV cannot process this {image.width}x{image.height} image"
            ) from None
        return Faces(faces.boxes * scale, faces.crops, faces.scores)

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """uint8 [K, 48, 48] face crops -> float32 [K, emotions], averaged over the test-time
        views of ``serve.tta``. The first call of a model trained on the sample warns."""
        if not self._warned:
            self._warned = True
            warn_if_synthetic(self.training_data)
        batches = [crops[i : i + FORWARD_BATCH] for i in range(0, len(crops), FORWARD_BATCH)]
        return np.concatenate(
            [np.zeros((0, len(self.emotions)), np.float32), *map(self._views_mean, batches)]
        )

    def _views_mean(self, crops: np.ndarray) -> np.ndarray:
        views = tta_views(model_input(crops).numpy(), self.settings.tta, self._margin)
        return sum(self._forward(view).numpy() for view in views) / len(views)

    def table(self, found: list[Faces], names: list[str]) -> pd.DataFrame:
        """Each image's faces -> one row per face (all faces through the network at once);
        ``names`` fill the ``source`` column."""
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


def _options(params: dict) -> tuple[str, str]:
    if unknown := sorted(str(name) for name in params if name not in PARAMS):
        raise BadParams(
            f"unknown params {', '.join(unknown)}: this model takes {', '.join(PARAMS)}"
        )
    mode, channel_order = ({**PARAMS, **params}[name] for name in PARAMS)
    if mode not in MODES:
        raise BadParams(f"params.mode must be one of {', '.join(MODES)}, got {_quoted(mode)}")
    if channel_order not in CHANNEL_ORDERS:
        raise BadParams(
            f"params.channel_order must be one of {', '.join(CHANNEL_ORDERS)}, "
            f"got {_quoted(channel_order)}"
        )
    return mode, channel_order


def _quoted(value: object, chars: int = 40) -> str:
    """A param's value in an error, cut short: a client's param must not fill the answer."""
    text = repr(value)
    return text if len(text) <= chars else f"{text[:chars]}..."


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
    params = ParamSchema([ParamSpec(name, "string", default) for name, default in PARAMS.items()])
    inputs = Schema([ColSpec(AnyType(), IMAGE_COLUMN)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example() -> tuple[pd.DataFrame, dict[str, str]]:
    """The example face in the REST form, a base64 PNG in the ``image`` column, scored as a face
    crop: a 48x48 image is smaller than any face detection finds."""
    return pd.DataFrame({IMAGE_COLUMN: [example_base64()]}), {"mode": "faces"}


def log_registry_model(
    keras_path: Path,
    emotions: tuple[str, ...],
    work_dir: Path,
    serve: ServeSettings | None = None,
    data: dict | None = None,
) -> str:
    """Log the pyfunc model in the active run, as code with its input example
    (``components.serving.stored_model``); return its model URI.

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
            python_model=str(code_file(EmotionClassifier, Path(scratch))),
            artifacts={
                KERAS_ARTIFACT: str(keras_path),
                LABELS_ARTIFACT: str(labels_path),
                SERVE_ARTIFACT: str(serve_path),
                **detector_artifact(serve),
                **training_data_artifact(data, work_dir),
            },
            code_paths=[str(served_code(Path(scratch)))],
            signature=signature(emotions),
            input_example=input_example(),
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
    never imports: a test holds it to that). Written as ``scratch/emoflow/components``, so the
    model imports it by its installed name; ``emoflow`` is a namespace package, which merges
    with an installed EmoFlow. Returns ``scratch/emoflow``, the folder MLflow ships."""
    package = scratch / "emoflow"
    target = package / COMPONENTS_DIR.name
    (target / SERVING_DIR.name).mkdir(parents=True)
    for module in COMPONENTS_DIR.glob("*.py"):
        shutil.copy2(module, target / module.name)
    for module in SERVING_DIR.glob("*.py"):
        shutil.copy2(module, target / SERVING_DIR.name / module.name)
    return package


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
