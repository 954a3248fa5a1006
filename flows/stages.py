"""The pipeline as a list of stages: each adapts ``Params`` to one component call.

This is the single place that knows which output folder feeds which stage; the CLI (and so
DVC) and the Prefect flow both run these functions, so no step exists twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from components.settings import Params

DATASETS = ("fer2013", "ckplus")


def interim_folders(params: Params) -> dict[str, Path]:
    return {name: params.ingest.out_dir / name for name in DATASETS}


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


def train(params: Params):
    """Train the model and log it to MLflow."""
    from components.train import train as run

    return run(params.preprocess.out_dir / params.train.dataset, params.train, params.augment, params.mlflow)


def evaluate(params: Params):
    """Score the model in-dataset and across datasets."""
    from components.evaluate import evaluate as run

    return run(params.train.out_dir, params.preprocess.out_dir, params.evaluate, params.mlflow)


def promote(params: Params):
    """Gate the model and, on a pass, register it as champion."""
    from components.evaluate import METRICS_FILE
    from components.promote import promote as run

    return run(params.train.out_dir, params.evaluate.out_dir / METRICS_FILE, params.promote, params.mlflow)


# Imports stay inside the functions: `emoflow ingest` should not pay for TensorFlow.
STAGES: dict[str, Callable[[Params], object]] = {
    stage.__name__: stage for stage in (sample, ingest, validate, preprocess, train, evaluate, promote)
}
