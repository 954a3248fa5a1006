"""How a network is scored on one dataset: accuracy, macro-F1, calibration, per-class scores.

Cross-dataset scores (train on FER2013, test on CK+) only count classes both the model and
the other dataset know: CK+ has no neutral in its peak frames and FER2013 no contempt.
Public because the gate re-scores the current champion with the same code, on the same data,
in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from emoflow.components.errors import EmoFlowError
from emoflow.components.face_views import predict_views
from emoflow.components.records.input_pipelines import scoring_batches
from emoflow.components.settings import EvaluateSettings


class EvaluationError(EmoFlowError, ValueError):
    """The model or an evaluation set cannot be scored; the message says which and why."""


@dataclass(frozen=True)
class Scores:
    """One dataset's scores: the metrics JSON part and what the pictures need."""

    metrics: dict[str, object]
    matrix: np.ndarray
    table: pd.DataFrame
    reliability: dict[str, list[float]]


def score_network(
    network: keras.Model, emotions: tuple[str, ...], processed: Path, settings: EvaluateSettings
) -> dict[str, Scores]:
    """Score on the in-dataset split and on the cross dataset (classes it shares only)."""
    plan = {
        settings.in_dataset: [settings.in_split],
        settings.cross_dataset: list(settings.cross_splits),
    }
    return {
        name: _score(network, processed / name, splits, emotions, settings)
        for name, splits in plan.items()
    }


def _score(
    network, folder: Path, splits: list[str], emotions: tuple[str, ...], settings: EvaluateSettings
) -> Scores:
    faces, truth = _collect(scoring_batches(folder, splits, emotions, settings.batch_size))
    if len(truth) == 0:
        raise EvaluationError(
            f"{folder}: no images of the model's classes ({', '.join(emotions)}) in split(s) "
            f"{', '.join(splits)}: this dataset shares no class with the emotion set"
        )
    probabilities = predict_views(network, faces, settings.tta, settings.batch_size)
    return scores_from(probabilities, truth, emotions, settings)


def scores_from(
    probabilities: np.ndarray,
    truth: np.ndarray,
    emotions: tuple[str, ...],
    settings: EvaluateSettings,
) -> Scores:
    """Accuracy, macro-F1, calibration and per-class scores from predicted probabilities."""
    predicted = probabilities.argmax(axis=1)
    present = sorted(set(truth.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=present, zero_division=0
    )
    ece, reliability = calibration(
        probabilities.max(axis=1), predicted == truth, settings.calibration_bins
    )
    metrics: dict[str, object] = {
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(
            f1_score(truth, predicted, labels=present, average="macro", zero_division=0)
        ),
        "ece": ece,
        "count": int(len(truth)),
        "per_class": {
            emotions[c]: {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(n),
            }
            for c, p, r, f, n in zip(present, precision, recall, f1, support)
        },
    }
    table = pd.DataFrame(
        {"actual": [emotions[i] for i in truth], "predicted": [emotions[i] for i in predicted]}
    )
    # Square over all the model's classes: a CK+ face predicted as neutral must show up.
    matrix = confusion_matrix(truth, predicted, labels=range(len(emotions)))
    return Scores(metrics, matrix, table, reliability)


def calibration(
    confidence: np.ndarray, correct: np.ndarray, bins: int
) -> tuple[float, dict[str, list[float]]]:
    """Expected calibration error over equal-width confidence bins, and the diagram's data."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins)
    mean_confidence = np.bincount(which, weights=confidence, minlength=bins)
    filled = counts > 0
    accuracy[filled] /= counts[filled]
    mean_confidence[filled] /= counts[filled]
    ece = float(
        np.sum(counts[filled] / counts.sum() * np.abs(accuracy[filled] - mean_confidence[filled]))
    )
    return ece, {
        "bin_centers": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "accuracy": accuracy.tolist(),
        "confidence": mean_confidence.tolist(),
        "count": counts.astype(float).tolist(),
    }


def _collect(batches) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the data: the arrays are small enough, and labels and inputs stay aligned."""
    pairs = [(x.numpy(), y.numpy()) for x, y in batches]
    if not pairs:
        return np.zeros((0,)), np.zeros((0,), np.int64)
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])
