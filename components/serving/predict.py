"""``emoflow predict``: emotions in image files, videos and webcams.

Images become a table (CSV or JSON), one row per face, as the registry model returns it.
Videos and webcams become JSON lines, one per frame, with faces tracked and smoothed
(``components.serving.face_tracking``).

Every prediction goes through :class:`components.serving.image_model.EmotionClassifier`, the
object inside the registry model, so the CLI preprocesses exactly as the REST server does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from components.artifacts import read_json
from components.errors import EmoFlowError
from components.model_files import RUN_FILE
from components.serving.image_model import EmotionClassifier
from components.serving.prediction_files import write_annotated_image, write_lines, write_table
from components.serving.sources import PredictError, image_files, split_sources
from components.serving.video import predict_video
from components.settings import MlflowSettings, PredictSettings, ServeSettings

TABLE_SUFFIXES = (".csv", ".json")
LINES_SUFFIX = ".jsonl"


# --- Loading the model ---------------------------------------------------------------------


def load_classifier(
    model: str, serve: ServeSettings, mlflow_settings: MlflowSettings, store: str | None = None
) -> EmotionClassifier:
    """A registry URI (``models:/name@alias``), an MLflow model folder, or a ``.keras`` file.

    A ``.keras`` file has no detector settings of its own: ``serve`` supplies them, and the
    emotions come from the ``run.json`` the train stage writes beside it. The registry is
    ``store`` when the caller names one, else ``MLFLOW_TRACKING_URI``, else the settings'.
    """
    import mlflow

    path = Path(model)
    if path.suffix == ".keras":
        run_file = path.with_name(RUN_FILE)
        if not path.is_file() or not run_file.is_file():
            raise FileNotFoundError(
                f"{path}: a .keras model needs the file and its {RUN_FILE} beside it"
            )
        return EmotionClassifier.from_keras(path, read_json(run_file)["emotions"], serve)
    if ":/" not in model and not (path / "MLmodel").is_file():
        raise FileNotFoundError(
            f"{model}: not a registry URI, an MLflow model folder or a .keras file"
        )
    from components.mlflow_store import tracking_uri

    uri = store or tracking_uri(mlflow_settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    classifier = mlflow.pyfunc.load_model(model).unwrap_python_model()
    if not isinstance(classifier, EmotionClassifier):
        raise PredictError(
            f"{model}: not an EmoFlow model (it holds a {type(classifier).__name__})"
        )
    return classifier


# --- Images --------------------------------------------------------------------------------


def predict_images(
    classifier: EmotionClassifier,
    files: Sequence[tuple[Path, Path]],
    mode: str = "detect",
    annotate_dir: Path | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per face with its source file. A file that fails (not an image, over a limit,
    one OpenCV cannot process) is listed with its reason and the others go on: each file is
    one call of the model, with the limits and checks of a REST request."""
    tables, skipped = [], []
    for path, name in tqdm(
        files, desc="images", unit="image", file=sys.stderr, disable=len(files) < 2
    ):
        try:
            table = classifier.emotions_in([path], mode, "bgr").drop(columns="image")
        except EmoFlowError as err:
            skipped.append(str(err))
            continue
        tables.append(table)
        if annotate_dir is not None:
            write_annotated_image(path, annotate_dir / name, table, classifier.emotions)
    empty = classifier.table([], []).drop(columns="image")
    return pd.concat([empty, *tables], ignore_index=True), skipped


# --- The command ---------------------------------------------------------------------------


def run(
    classifier: EmotionClassifier,
    sources: Sequence[Path],
    settings: PredictSettings,
    out: Path | None = None,
    annotate_dir: Path | None = None,
    mode: str = "detect",
    webcam: int | None = None,
    max_frames: int | None = None,
    warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> str:
    """Predict on images, or on videos / a webcam, and write the results; return a summary.

    Images that fail are reported through ``warn``, the others' results written, and then a
    :class:`PredictError` counts the failures, so that the command exits non-zero."""
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
        records = (
            r
            for s in streams
            for r in predict_video(classifier, s, settings, annotate_dir, max_frames)
        )
        return f"{write_lines(records, out)} frames"
    if out is not None and out.suffix not in TABLE_SUFFIXES:
        raise PredictError(f"{out}: image predictions are a table, use a .csv or .json file")
    files = image_files(images)
    table, skipped = predict_images(classifier, files, mode, annotate_dir)
    for message in skipped:
        warn(f"skipped {message}")
    write_table(table, out)
    summary = f"{table['source'].nunique()} images with faces, {len(table)} faces"
    if skipped:  # the others' results are written; the exit status still says it failed
        raise PredictError(f"{summary}; {len(skipped)} of {len(files)} images failed (above)")
    return summary
