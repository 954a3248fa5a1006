"""The pipeline as stages: each adapts ``Params`` to one component call.

This is the single place that knows which output folder feeds which stage; the CLI (and so
DVC) and the Prefect flow both run these functions, so no step exists twice. Data stages
run once; model stages run once per cell of the training grid (architecture x emotion set).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from components.settings import SEQUENCE_ARCHITECTURES, ModelCell, Params, ParamsError

DATASETS = ("fer2013", "ckplus")


def interim_folders(params: Params) -> dict[str, Path]:
    return {name: params.ingest.out_dir / name for name in DATASETS}


# Imports stay inside the functions: `emoflow ingest` should not pay for TensorFlow.


def sample(params: Params):
    """Generate the built-in synthetic FER2013 csv and CK+48 folders."""
    from components.sample import generate_sample

    return generate_sample(params.sample)


def ingest(params: Params):
    """Read the raw datasets into manifests and pixel arrays."""
    from components.ingest import ingest as run

    return run(params.ingest)


def validate(params: Params):
    """Check the ingested data with Great Expectations."""
    from components.validate import validate as run

    return run(interim_folders(params), params.validate_)


def preprocess(params: Params):
    """Write TFRecord shards and the augmentation grid."""
    from components.preprocess import preprocess as run

    return run(interim_folders(params), params.preprocess, params.augment)


def recipes(params: Params):
    """Write each model's recipe, the file its DVC train stage depends on."""
    from components.recipes import write_recipes

    return write_recipes(params.train, params.augment, params.serve)


def train(params: Params, cell: ModelCell):
    """Train a model of the grid and log it to MLflow."""
    from components.train import train as run

    shards = params.preprocess.out_dir / params.train.dataset_for(cell.architecture)
    return run(shards, cell, params.train, params.augment, params.mlflow, params.serve)


def evaluate(params: Params, cell: ModelCell):
    """Score a model in-dataset and across datasets."""
    model_dir = params.train.out_dir / cell.key
    if cell.architecture in SEQUENCE_ARCHITECTURES:
        from components.evaluate_sequences import evaluate_sequences

        shards = params.preprocess.out_dir / params.train.dataset_for(cell.architecture)
        return evaluate_sequences(model_dir, shards, params.evaluate, params.mlflow)
    from components.evaluate import evaluate as run

    return run(model_dir, params.preprocess.out_dir, params.evaluate, params.mlflow)


def promote(params: Params, cell: ModelCell):
    """Gate a model against thresholds and the champion; register it on a pass."""
    from components.promote import promote as run

    return run(
        params.train.out_dir / cell.key,
        params.preprocess.out_dir,
        params.evaluate,
        params.promote,
        params.mlflow,
        sequence_dataset=params.train.sequence_dataset,
    )


DATA_STAGES: dict[str, Callable[[Params], object]] = {
    stage.__name__: stage for stage in (sample, ingest, validate, preprocess, recipes)
}
MODEL_STAGES: dict[str, Callable[[Params, ModelCell], object]] = {
    stage.__name__: stage for stage in (train, evaluate, promote)
}


def select_cells(params: Params, architecture: str | None = None, emotion_set: str | None = None) -> list[ModelCell]:
    """Grid cells matching the filters; an unknown filter value is an error, not a no-op."""
    grid = params.train.grid()
    cells = [
        c for c in grid
        if architecture in (None, c.architecture) and emotion_set in (None, c.emotion_set)
    ]
    if not cells:
        known = ", ".join(c.key for c in grid)
        raise ParamsError(f"no model in the grid matches architecture={architecture} emotion_set={emotion_set} (grid: {known})")
    return cells
