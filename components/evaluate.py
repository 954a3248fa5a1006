"""Evaluate: score a trained model in-dataset and across datasets, per class, with pictures.

Cross-dataset scores (train on FER2013, test on CK+) only count classes both the model and
the other dataset know: CK+ has no neutral in its peak frames and FER2013 no contempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from components import plots, tracking
from components.artifacts import atomic_file, read_json, write_json
from components.inputs import scoring_batches
from components.settings import EvaluateSettings, MlflowSettings
from components.train import MODEL_FILE, RUN_FILE

METRICS_FILE = "metrics.json"
CONFUSION_PNG = "confusion.png"


class EvaluationError(ValueError):
    """The model or an evaluation set cannot be scored; the message says which and why."""


@dataclass(frozen=True)
class EvaluateOutputs:
    metrics: Path
    confusion_png: Path
    predictions: dict[str, Path]  # dataset -> csv of actual,predicted (DVC confusion plot)


@dataclass(frozen=True)
class _Scores:
    metrics: dict[str, object]
    matrix: np.ndarray
    classes: tuple[str, ...]
    table: pd.DataFrame


def evaluate(
    model_dir: Path, processed: Path, settings: EvaluateSettings, mlflow_settings: MlflowSettings
) -> EvaluateOutputs:
    """Score ``model_dir`` (a train output) on the datasets under ``processed``."""
    if not (model_dir / MODEL_FILE).exists():
        raise EvaluationError(f"{model_dir / MODEL_FILE}: no trained model (run the train stage)")
    run = read_json(model_dir / RUN_FILE)
    emotions = tuple(run["emotions"])
    network = keras.models.load_model(model_dir / MODEL_FILE, compile=False)
    plan = {
        settings.in_dataset: (emotions, [settings.in_split]),
        settings.cross_dataset: (emotions, settings.cross_splits),
    }
    scores = {
        name: _score(network, processed / name, splits, classes, settings.batch_size, name)
        for name, (classes, splits) in plan.items()
    }
    out = settings.out_dir
    metrics = {name: s.metrics for name, s in scores.items()}
    write_json(out / METRICS_FILE, metrics)
    predictions = {}
    for name, s in scores.items():
        predictions[name] = out / f"predictions_{name}.csv"
        with atomic_file(predictions[name]) as tmp:
            s.table.to_csv(tmp, index=False)
    png = plots.confusion_matrices(
        {n: s.matrix for n, s in scores.items()}, {n: s.classes for n, s in scores.items()}, out / CONFUSION_PNG
    )
    tracking.connect(mlflow_settings)
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics(flatten_metrics(metrics))
        mlflow.log_artifact(str(png), "evaluation")
        mlflow.log_dict(metrics, "evaluation/metrics.json")
    return EvaluateOutputs(out / METRICS_FILE, png, predictions)


def _score(network, folder: Path, splits, emotions: tuple[str, ...], batch_size: int, name: str) -> _Scores:
    """Predict over the splits; only classes of ``emotions`` present in the data are scored."""
    faces, truth = _collect(scoring_batches(folder, splits, emotions, batch_size))
    if len(truth) == 0:
        raise EvaluationError(
            f"{folder}: no images of the classes {', '.join(emotions)} in split(s) {', '.join(splits)}"
        )
    probabilities = network.predict(faces, batch_size=batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    present = sorted(set(truth.tolist()))
    classes = tuple(emotions[i] for i in present)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=present, zero_division=0
    )
    metrics: dict[str, object] = {
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0)),
        "count": int(len(truth)),
        "per_class": {
            cls: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for cls, p, r, f, n in zip(classes, precision, recall, f1, support)
        },
    }
    table = pd.DataFrame(
        {"actual": [emotions[i] for i in truth], "predicted": [emotions[i] for i in predicted]}
    )
    # Square over all the model's classes: a CK+ face predicted as neutral must show up.
    matrix = confusion_matrix(truth, predicted, labels=range(len(emotions)))
    return _Scores(metrics, matrix, emotions, table)


def _collect(batches) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the data: the arrays are small enough, and labels and inputs stay aligned."""
    pairs = [(x.numpy(), y.numpy()) for x, y in batches]
    if not pairs:
        return np.zeros((0,)), np.zeros((0,), np.int64)
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """``{"fer2013": {"accuracy": x}}`` -> ``{"fer2013.accuracy": x}`` (the gate's keys too)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        else:
            flat[name] = float(value)
    return flat


