"""Evaluate: score a trained model in-dataset and across datasets, per class, with pictures.

Image networks are scored on faces (``components.judging.scores``), sequence networks on
the windows of their sequence records (``components.judging.sequence_scores``); both write
the same files, so the gate and ``dvc metrics`` read them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow

from components import mlflow_store, plots
from components.artifacts import atomic_file, read_json, write_json
from components.face_views import load_network
from components.judging.gate import flatten_metrics
from components.judging.scores import EvaluationError, Scores, score_network
from components.judging.sequence_scores import score_sequences
from components.model_files import MODEL_FILE, RUN_FILE
from components.model_kinds import reads_sequences, records_folder
from components.settings import EvaluateSettings, MlflowSettings, ModelCell

METRICS_FILE = "metrics.json"
CONFUSION_PNG = "confusion.png"
RELIABILITY_PNG = "reliability.png"


@dataclass(frozen=True)
class EvaluateOutputs:
    folder: Path
    metrics: Path
    predictions: dict[str, Path]  # dataset -> csv of actual,predicted (DVC confusion plot)


def evaluate(
    model_dir: Path,
    processed: Path,
    sequence_dataset: str,
    settings: EvaluateSettings,
    mlflow_settings: MlflowSettings,
) -> EvaluateOutputs:
    """Score ``model_dir`` (a train output) on the records under ``processed``: faces of the
    in-dataset and cross datasets, or, for a sequence network, ``sequence_dataset``'s sequences."""
    run, network = load_candidate(model_dir)
    cell = run_cell(run)
    scores = score_model(network, cell, processed, sequence_dataset, settings)
    return write_evaluation(
        model_dir.name, run["run_id"], scores, cell.emotions, settings, mlflow_settings
    )


def run_cell(run: dict) -> ModelCell:
    """The grid cell a train stage's ``run.json`` describes."""
    return ModelCell(
        architecture=run["architecture"], emotion_set=run["emotion_set"], emotions=run["emotions"]
    )


def score_model(
    network: keras.Model,
    cell: ModelCell,
    processed: Path,
    sequence_dataset: str,
    settings: EvaluateSettings,
) -> dict[str, Scores]:
    """Scores per dataset key, for either kind of network (``components.model_kinds``)."""
    if reads_sequences(cell.architecture):
        shards = processed / sequence_dataset
        return {
            f"{sequence_dataset}_sequences": score_sequences(
                network, cell.emotions, shards, settings
            )
        }
    return score_network(network, cell.emotions, processed, settings)


def scored_folders(
    cell: ModelCell, processed: Path, sequence_dataset: str, settings: EvaluateSettings
) -> list[Path]:
    """The record folders :func:`score_model` reads for ``cell``."""
    if reads_sequences(cell.architecture):
        return [records_folder(processed / sequence_dataset, cell.architecture)]
    return [processed / settings.in_dataset, processed / settings.cross_dataset]


def write_evaluation(
    key: str,
    run_id: str,
    scores: dict[str, Scores],
    emotions: tuple[str, ...],
    settings: EvaluateSettings,
    mlflow_settings: MlflowSettings,
) -> EvaluateOutputs:
    """Write model ``key``'s metrics.json, predictions per dataset and figures; log them to its run.

    The folders come from the settings: metrics for ``dvc metrics``, predictions for the
    DVC confusion plots, figures (confusion matrices, reliability diagram) for people.
    """
    out, figures = settings.out_dir / key, settings.figures_dir / key
    metrics = {name: s.metrics for name, s in scores.items()}
    write_json(out / METRICS_FILE, metrics)
    predictions = {}
    for name, s in scores.items():
        predictions[name] = settings.predictions_dir / key / f"{name}.csv"
        with atomic_file(predictions[name]) as tmp:
            s.table.to_csv(tmp, index=False)
    confusion = plots.confusion_matrices(
        {n: s.matrix for n, s in scores.items()},
        {n: emotions for n in scores},
        figures / CONFUSION_PNG,
    )
    reliability = plots.reliability_diagram(
        {n: s.reliability for n, s in scores.items()}, figures / RELIABILITY_PNG
    )
    mlflow_store.connect(mlflow_settings)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(flatten_metrics(metrics))
        for png in (confusion, reliability):
            mlflow.log_artifact(str(png), "evaluation")
        mlflow.log_dict(metrics, "evaluation/metrics.json")
    return EvaluateOutputs(out, out / METRICS_FILE, predictions)


def load_candidate(model_dir: Path) -> tuple[dict, keras.Model]:
    """The train stage's run record and network, with an error a user can act on."""
    if not (model_dir / MODEL_FILE).exists() or not (model_dir / RUN_FILE).exists():
        raise EvaluationError(
            f"{model_dir}: no trained model here (run the train stage for it first)"
        )
    try:
        network = load_network(model_dir / MODEL_FILE)
    except (OSError, ValueError) as err:
        raise EvaluationError(f"{model_dir / MODEL_FILE}: cannot load the model: {err}") from None
    return read_json(model_dir / RUN_FILE), network
