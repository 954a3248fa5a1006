"""Evaluate: score a trained model in-dataset and across datasets, per class, with pictures.

Image networks are scored on faces (``components.judging.scores``), sequence networks on
the windows of their sequence records (``components.judging.sequence_scores``); both write
the same files, so the gate and ``dvc metrics`` read them alike:

- ``metrics.json``: the headline, a few numbers per model (:data:`HEADLINE`), the DVC metric:
  few enough that ``dvc metrics show`` prints a model's row in 120 columns, and ``dvc exp
  show`` has room for the settings beside them (every score made 64 columns of 2,089);
- ``scores.json``: every score, per class too: what the gate and the model card read;
- ``curves.csv`` (the training history, per epoch and split) and the predictions csv (a
  ``dataset`` column beside ``actual`` and ``predicted``): DVC plots, drawn with the project's
  templates in ``.dvc/plots``;
- the figures: confusion matrices and the reliability diagram, for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import pandas as pd

from emoflow.components import mlflow_store, plots
from emoflow.components.artifacts import atomic_file, read_json, write_json
from emoflow.components.face_views import load_network
from emoflow.components.judging.gate import flatten_metrics
from emoflow.components.judging.scores import EvaluationError, Scores, score_network
from emoflow.components.judging.sequence_scores import score_sequences
from emoflow.components.model_files import HISTORY_FILE, MODEL_FILE, RUN_FILE
from emoflow.components.model_kinds import reads_sequences, records_folder
from emoflow.components.records.run_inputs import EVALUATION_CONTEXT, log_splits
from emoflow.components.settings import EvaluateSettings, MlflowSettings, ModelCell

METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.json"
CURVES_FILE = "curves.csv"
CONFUSION_PNG = "confusion.png"
RELIABILITY_PNG = "reliability.png"
# The headline: on the data the model was trained on (the first scored dataset), accuracy,
# macro-F1 and expected calibration error; on another dataset, accuracy.
HEADLINE = ("accuracy", "macro_f1", "ece")
CROSS_DATASET_HEADLINE = ("accuracy",)


@dataclass(frozen=True)
class EvaluateOutputs:
    folder: Path
    metrics: Path
    scores: Path
    curves: Path
    predictions: Path  # dataset,actual,predicted (a DVC confusion plot per dataset)


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
    history = read_json(model_dir / HISTORY_FILE)
    return write_evaluation(
        model_dir.name,
        run["run_id"],
        scores,
        cell.emotions,
        history,
        settings,
        mlflow_settings,
        scored_splits(cell, processed, sequence_dataset, settings),
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


def scored_splits(
    cell: ModelCell, processed: Path, sequence_dataset: str, settings: EvaluateSettings
) -> dict[Path, list[str]]:
    """The record folders :func:`score_model` reads for ``cell``, and their splits it reads."""
    if reads_sequences(cell.architecture):
        return {
            records_folder(processed / sequence_dataset, cell.architecture): [settings.in_split]
        }
    return {
        processed / settings.in_dataset: [settings.in_split],
        processed / settings.cross_dataset: list(settings.cross_splits),
    }


def write_evaluation(
    key: str,
    run_id: str,
    scores: dict[str, Scores],
    emotions: tuple[str, ...],
    history: dict[str, list[float]],
    settings: EvaluateSettings,
    mlflow_settings: MlflowSettings,
    scored: dict[Path, list[str]] | None = None,
) -> EvaluateOutputs:
    """Write model ``key``'s metrics, scores, curves, predictions and figures; log them to its
    run (``history``: the training run's per-epoch metrics, as Keras gives them), with the
    record splits that were ``scored`` (folder -> splits) as its evaluation datasets."""
    out, figures = settings.out_dir / key, settings.figures_dir / key
    every = {name: s.metrics for name, s in scores.items()}
    write_json(out / METRICS_FILE, headline(every))
    write_json(out / SCORES_FILE, every)
    predictions = settings.predictions_dir / f"{key}.csv"
    for path, table in (
        (out / CURVES_FILE, plots.curves_table(history)),
        (predictions, pd.concat([s.table.assign(dataset=n) for n, s in scores.items()])),
    ):
        with atomic_file(path) as tmp:
            table.to_csv(tmp, index=False)
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
        mlflow.log_metrics(flatten_metrics(every))
        for png in (confusion, reliability):
            mlflow.log_artifact(str(png), "evaluation")
        mlflow.log_dict(every, f"evaluation/{SCORES_FILE}")
        for folder, splits in (scored or {}).items():
            log_splits(folder, dict.fromkeys(splits, EVALUATION_CONTEXT))
    return EvaluateOutputs(
        out, out / METRICS_FILE, out / SCORES_FILE, out / CURVES_FILE, predictions
    )


def headline(scores: dict[str, dict]) -> dict[str, dict]:
    """The few numbers of :data:`HEADLINE` per dataset; the first is the model's own (the
    order of :func:`score_model`), the others are cross-dataset."""
    return {
        dataset: {key: metrics[key] for key in (CROSS_DATASET_HEADLINE if i else HEADLINE)}
        for i, (dataset, metrics) in enumerate(scores.items())
    }


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
