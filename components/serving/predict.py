"""``emoflow predict``: emotions in image files, videos and webcams.

Images become a table (CSV or JSON), one row per face, as the registry model returns it.
Videos and webcams become JSON lines, one per frame, with faces tracked and smoothed
(``components.serving.face_tracking``).

Every prediction goes through :class:`emoflow.components.serving.image_model.EmotionClassifier`, the
object inside the registry model, so the CLI preprocesses exactly as the REST server does.
The arguments, the input files and the model's location are checked first (:func:`plan`,
:func:`check_model`), before TensorFlow and MLflow are imported, which take half a minute:
the modules that need them are imported by the functions that use them. Every input is
tried; the summary lists those that failed, and the command exits non-zero when any did.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from emoflow.components.errors import EmoFlowError
from emoflow.components.model_files import RUN_FILE
from emoflow.components.serving.sources import PredictError, image_files, split_sources
from emoflow.components.settings import MlflowSettings, PredictSettings, ServeSettings
from emoflow.components.store_location import require_store, tracking_uri

if TYPE_CHECKING:
    import pandas as pd

    from emoflow.components.serving.image_model import EmotionClassifier

TABLE_SUFFIXES = (".csv", ".json")
LINES_SUFFIX = ".jsonl"
STORE_SCHEMES = ("models:/", "runs:/")  # model URIs read through the tracking store


# --- The model -----------------------------------------------------------------------------


def check_model(model: str, mlflow_settings: MlflowSettings, store: str | None = None) -> None:
    """Fail now if ``model`` cannot be there: a missing file or folder, or a registry URI
    whose sqlite store does not exist (MLflow would create an empty one in the working folder
    and then not find the model in it)."""
    path = Path(model)
    if path.suffix == ".keras":
        if not path.is_file() or not path.with_name(RUN_FILE).is_file():
            raise FileNotFoundError(
                f"{path}: a .keras model needs the file and its {RUN_FILE} beside it"
            )
    elif not (path / "MLmodel").is_file():
        if ":/" not in model:
            raise FileNotFoundError(
                f"{model}: not a registry URI, an MLflow model folder or a .keras file"
            )
        if model.startswith(STORE_SCHEMES):
            require_store(store or tracking_uri(mlflow_settings))


def load_classifier(
    model: str, serve: ServeSettings, mlflow_settings: MlflowSettings, store: str | None = None
) -> EmotionClassifier:
    """A registry URI (``models:/name@alias``), an MLflow model folder, or a ``.keras`` file.

    A ``.keras`` file has no detector settings of its own: ``serve`` supplies them, and the
    emotions come from the ``run.json`` the train stage writes beside it. The registry is
    ``store`` when the caller names one, else ``MLFLOW_TRACKING_URI``, else the settings'.
    """
    check_model(model, mlflow_settings, store)
    from emoflow.components.serving.image_model import EmotionClassifier

    path = Path(model)
    if path.suffix == ".keras":
        from emoflow.components.artifacts import read_json

        emotions = read_json(path.with_name(RUN_FILE))["emotions"]
        return EmotionClassifier.from_keras(path, emotions, serve)
    import mlflow

    uri = store or tracking_uri(mlflow_settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    classifier = mlflow.pyfunc.load_model(model).unwrap_python_model()
    if not isinstance(classifier, EmotionClassifier):
        raise PredictError(
            f"{model}: not an EmoFlow model (it holds a {type(classifier).__name__})"
        )
    return classifier


# --- What to do, checked before the model loads --------------------------------------------


@dataclass(frozen=True)
class PredictJob:
    """What one ``emoflow predict`` reads and writes."""

    images: list[tuple[Path, Path]]  # (file, name for outputs)
    streams: list[Path | int]  # video files, then a camera
    out: Path | None  # None: stdout
    annotate_dir: Path | None
    mode: str
    max_frames: int | None


def plan(
    sources: Sequence[Path],
    out: Path | None = None,
    annotate_dir: Path | None = None,
    mode: str = "detect",
    webcam: int | None = None,
    max_frames: int | None = None,
) -> PredictJob:
    """Check the options and that every input exists; list the images in folders."""
    if mode not in ("detect", "faces"):
        raise PredictError(f"mode must be detect or faces, got {mode!r}")
    images, videos = split_sources(sources)
    streams: list[Path | int] = [*videos, *([webcam] if webcam is not None else [])]
    if images and streams:
        raise PredictError(
            "give images and videos (or a webcam) in separate runs: their outputs differ"
        )
    if not images and not streams:
        raise PredictError("nothing to predict: give image files, folders, videos or --webcam")
    if streams:
        if mode != "detect":
            raise PredictError(f"mode {mode} is for images; video frames are always searched")
        if out is not None and out.suffix != LINES_SUFFIX:
            raise PredictError(
                f"{out}: video predictions are JSON lines, use a {LINES_SUFFIX} file"
            )
        for video in videos:
            if not video.is_file():
                raise FileNotFoundError(f"{video}: no such file")
        return PredictJob([], streams, out, annotate_dir, mode, max_frames)
    if out is not None and out.suffix not in TABLE_SUFFIXES:
        raise PredictError(f"{out}: image predictions are a table, use a .csv or .json file")
    files = image_files(images)
    if not files:
        raise PredictError(f"no image files in {', '.join(str(s) for s in images)}")
    return PredictJob(files, [], out, annotate_dir, mode, max_frames)


# --- Running it ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictSummary:
    """What a run predicted and which inputs failed: a line for people, a document for scripts."""

    kind: str  # "images", or "videos" (a camera counts as one)
    inputs: int
    predicted: int  # images with faces found, or frames read
    faces: int  # faces found, in all images or frames
    failed: list[str]  # one message per input that failed, naming it
    out: str  # where the predictions went

    def line(self) -> str:
        done = (
            f"{self.faces} faces in {self.predicted} of {self.inputs} images"
            if self.kind == "images"
            else f"{self.predicted} frames ({self.faces} faces) from {self.inputs} "
            + ("video" if self.inputs == 1 else "videos")
        )
        failed = f"; {len(self.failed)} of {self.inputs} {self.kind} failed" if self.failed else ""
        return f"{done}{failed}; wrote {self.out}"

    def document(self) -> dict:
        return asdict(self)


def run(
    classifier: EmotionClassifier,
    job: PredictJob,
    settings: PredictSettings,
    allow_no_face: bool = False,
    warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> PredictSummary:
    """Predict on the job's images, or its videos and camera, and write the results.

    An input that fails is reported through ``warn`` and the others go on; an image in which
    no face is found fails too, unless ``allow_no_face``."""
    from emoflow.components.serving.prediction_files import write_lines, write_table

    where = str(job.out) if job.out is not None else "stdout"
    if job.streams:
        streams = _Streams()
        frames = write_lines(streams.records(classifier, job, settings), job.out)
        for message in streams.failed:
            warn(f"skipped {message}")
        return PredictSummary(
            "videos", len(job.streams), frames, streams.faces, streams.failed, where
        )
    table, failed = predict_images(
        classifier, job.images, job.mode, job.annotate_dir, allow_no_face
    )
    for message in failed:
        warn(f"skipped {message}")
    write_table(table, job.out)
    found = table["source"].nunique()
    return PredictSummary("images", len(job.images), found, len(table), failed, where)


def predict_images(
    classifier: EmotionClassifier,
    files: Sequence[tuple[Path, Path]],
    mode: str = "detect",
    annotate_dir: Path | None = None,
    allow_no_face: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per face with its source file, and a message for each file that failed: not
    an image, over a limit, one OpenCV cannot process, or (unless ``allow_no_face``) one
    without a face. Each file is one call of the model, with the limits and checks of a REST
    request."""
    import pandas as pd
    from tqdm import tqdm

    from emoflow.components.serving.prediction_files import write_annotated_image

    tables, failed = [], []
    for path, name in tqdm(
        files, desc="images", unit="image", file=sys.stderr, disable=len(files) < 2
    ):
        try:
            table = classifier.emotions_in([path], mode, "bgr").drop(columns="image")
        except EmoFlowError as err:
            failed.append(str(err))
            continue
        if table.empty and not allow_no_face:
            failed.append(f"{path}: no face found")
        tables.append(table)
        if annotate_dir is not None:
            write_annotated_image(path, annotate_dir / name, table, classifier.emotions)
    empty = classifier.table([], []).drop(columns="image")
    return pd.concat([empty, *tables], ignore_index=True), failed


@dataclass
class _Streams:
    """The job's streams read in turn, counting faces; a stream that fails is listed and the
    next goes on."""

    faces: int = 0
    failed: list[str] = field(default_factory=list)

    def records(
        self, classifier: EmotionClassifier, job: PredictJob, settings: PredictSettings
    ) -> Iterator[dict]:
        from emoflow.components.serving.video import predict_video

        for stream in job.streams:
            try:
                for record in predict_video(
                    classifier, stream, settings, job.annotate_dir, job.max_frames
                ):
                    self.faces += len(record["faces"])
                    yield record
            except PredictError as err:
                self.failed.append(str(err))
