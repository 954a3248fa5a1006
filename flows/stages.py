"""The pipeline as stages: each adapts ``Params`` to one component call.

This is the single place that knows which output folder feeds which stage: each stage's
function, and what it reads and writes (:data:`STAGE_FILES`). The CLI (and so DVC) and the
Prefect flow both run these functions, so no step exists twice; the flow's cache keys read
the declarations, and a test holds ``dvc.yaml`` to them and to the imports of each stage's
code. Data stages run once; model stages run once per cell of the training grid
(architecture x emotion set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.settings import ModelCell, Params, ParamsError

DATASETS = ("fer2013", "ckplus")


def interim_folders(params: Params) -> dict[str, Path]:
    return {name: params.ingest.out_dir / name for name in DATASETS}


# Imports stay inside the functions: `emoflow ingest` should not pay for TensorFlow.


def sample(params: Params):
    """Generate the built-in synthetic FER2013 csv and CK+48 folders."""
    from components.sample.generate import generate_sample

    return generate_sample(params.sample)


def ingest(params: Params):
    """Read the raw datasets into manifests and pixel arrays."""
    from components.ingest.stage import ingest as run

    return run(params.ingest)


def validate(params: Params):
    """Check the ingested data with Great Expectations."""
    from components.validate.stage import validate as run

    return run(interim_folders(params), params.validate_)


def preprocess(params: Params):
    """Write TFRecord shards and the augmentation grid."""
    from components.records.preprocess import preprocess as run

    return run(interim_folders(params), params.preprocess, params.augment)


def recipes(params: Params):
    """Write each model's recipe, the file its DVC train stage depends on."""
    from components.training.recipes import write_recipes

    return write_recipes(params.train, params.augment, params.serve)


def train(params: Params, cell: ModelCell):
    """Train a model of the grid and log it to MLflow."""
    from components.training.train import train as run

    shards = params.preprocess.out_dir / params.train.dataset_for(cell.architecture)
    return run(shards, cell, params.train, params.augment, params.mlflow, params.serve)


def evaluate(params: Params, cell: ModelCell):
    """Score a model in-dataset and across datasets."""
    from components.judging.evaluate import evaluate as run

    return run(
        params.train.out_dir / cell.key,
        params.preprocess.out_dir,
        params.train.sequence_dataset,
        params.evaluate,
        params.mlflow,
    )


def promote(params: Params, cell: ModelCell):
    """Gate a model against thresholds and the champion; register it on a pass."""
    from components.judging.promote import promote as run

    return run(
        params.train.out_dir / cell.key,
        params.preprocess.out_dir,
        params.train.sequence_dataset,
        params.evaluate,
        params.promote,
        params.mlflow,
    )


DATA_STAGES: dict[str, Callable[[Params], object]] = {
    stage.__name__: stage for stage in (sample, ingest, validate, preprocess, recipes)
}
MODEL_STAGES: dict[str, Callable[[Params, ModelCell], object]] = {
    stage.__name__: stage for stage in (train, evaluate, promote)
}


def select_cells(
    params: Params, architecture: str | None = None, emotion_set: str | None = None
) -> list[ModelCell]:
    """Grid cells matching the filters; an unknown filter value is an error, not a no-op."""
    grid = params.train.grid()
    cells = [
        c
        for c in grid
        if architecture in (None, c.architecture) and emotion_set in (None, c.emotion_set)
    ]
    if not cells:
        known = ", ".join(c.key for c in grid)
        raise ParamsError(
            f"no model in the grid matches architecture={architecture} emotion_set={emotion_set} "
            f"(grid: {known})"
        )
    return cells


Cell = ModelCell | None  # the grid cell of a model stage; None for a data stage


@dataclass(frozen=True)
class StageFiles:
    """What one stage depends on and produces, as functions of the settings (and grid cell)."""

    settings: Callable[[Params, Cell], dict[str, Any]]  # the settings the stage reads
    reads: Callable[[Params, Cell], Iterable[Path | None]]
    writes: Callable[[Params, Cell], Iterable[Path]]
    tracked: bool = False  # logs to MLflow: the tracking store is one of its outputs
    cached: bool = True  # a flow run may skip it when its inputs and outputs are unchanged


def blocks(params: Params, *names: str) -> dict[str, Any]:
    """Settings blocks by their params.yaml names, as JSON values."""
    dumped = params.model_dump(mode="json", by_alias=True)
    return {name: dumped[name] for name in names}


def _model_settings(params: Params, cell: Cell, *names: str) -> dict[str, Any]:
    """A model stage's blocks and its own grid cell (a new cell re-runs no other)."""
    return {**blocks(params, *names), "cell": cell.model_dump(mode="json")}


def _training_settings(params: Params, cell: Cell) -> dict[str, Any]:
    """Only what the cell's training reads, as DVC sees it (``components.training.recipes``):
    another cell's emotions or another architecture's override change nothing here."""
    from components.training.recipes import cell_recipe

    return {
        **cell_recipe(cell, params.train, params.augment, params.serve),
        **blocks(params, "mlflow"),
    }


def _card(params: Params, cell: Cell) -> Path:
    from components.judging.promote import card_path

    return card_path(params.promote.out_dir, cell.key)


def _recipes_folder(params: Params) -> Path:
    from components.training.recipes import RECIPES_DIR

    return params.train.out_dir / RECIPES_DIR


# What each stage reads and writes: the flow's cache keys use it, and a test holds dvc.yaml's
# deps and outs to it, so the stage graph is declared once.
STAGE_FILES: dict[str, StageFiles] = {
    "sample": StageFiles(
        lambda p, c: blocks(p, "sample"),
        lambda p, c: (),
        lambda p, c: (p.sample.out_dir,),
    ),
    "ingest": StageFiles(
        lambda p, c: blocks(p, "ingest"),
        lambda p, c: (p.ingest.fer2013, p.ingest.ckplus, p.ingest.ferplus),
        lambda p, c: (p.ingest.out_dir,),
    ),
    "validate": StageFiles(
        lambda p, c: blocks(p, "validate"),
        lambda p, c: (p.ingest.out_dir, p.validate_.reference),
        lambda p, c: (p.validate_.out_dir,),
    ),
    "preprocess": StageFiles(
        lambda p, c: blocks(p, "preprocess", "augment"),
        lambda p, c: (p.ingest.out_dir, p.validate_.out_dir),
        lambda p, c: (p.preprocess.out_dir, p.augment.grid_png),
    ),
    "recipes": StageFiles(
        lambda p, c: blocks(p, "train", "augment", "serve"),
        lambda p, c: (),
        lambda p, c: (_recipes_folder(p),),
    ),
    "train": StageFiles(
        _training_settings,
        lambda p, c: (
            p.preprocess.out_dir / p.train.dataset_for(c.architecture),
            p.serve.detector_model,
        ),
        lambda p, c: (p.train.out_dir / c.key,),
        tracked=True,
    ),
    "evaluate": StageFiles(
        lambda p, c: _model_settings(p, c, "evaluate", "mlflow"),
        lambda p, c: (p.train.out_dir / c.key, p.preprocess.out_dir),
        lambda p, c: tuple(
            folder / c.key
            for folder in (p.evaluate.out_dir, p.evaluate.predictions_dir, p.evaluate.figures_dir)
        ),
        tracked=True,
    ),
    # Never cached: its verdict depends on the registry's champion, which no key can see.
    "promote": StageFiles(
        lambda p, c: _model_settings(p, c, "evaluate", "promote", "mlflow"),
        lambda p, c: (
            p.train.out_dir / c.key,
            p.preprocess.out_dir,
            p.evaluate.out_dir / c.key,
        ),
        lambda p, c: (p.promote.out_dir / f"{c.key}.json", _card(p, c)),
        tracked=True,
        cached=False,
    ),
}
