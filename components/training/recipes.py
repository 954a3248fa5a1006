"""Each grid cell's recipe as a file, so that DVC retrains only the cells a change touches.

DVC tracks params per stage, not per matrix item: were the ``train`` block a param of the
train stage, editing one emotion set or one architecture's override would retrain every
model of the grid. The ``recipes`` stage reads the blocks instead and writes, per cell, the
settings that cell's training reads (its emotions, its architecture's recipe with the
overrides applied, augmentation and serving); each train stage depends on its own file,
and a file rewritten with the same content does not make DVC run the stage again. The
Prefect flow keys its cache on the same settings (``flows.caching``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emoflow.components.artifacts import atomic_dir, write_json
from emoflow.components.settings import (
    GRID_FIELDS,
    AugmentSettings,
    ModelCell,
    ServeSettings,
    TrainSettings,
)

RECIPES_DIR = "recipes"  # under train.out_dir, beside the model folders


def cell_recipe(
    cell: ModelCell, train: TrainSettings, augment: AugmentSettings, serve: ServeSettings
) -> dict[str, Any]:
    """What training ``cell`` reads, as JSON values."""
    return {
        "cell": cell.model_dump(mode="json"),
        "train": train.recipe(cell.architecture).model_dump(mode="json", exclude=GRID_FIELDS),
        "augment": augment.model_dump(mode="json"),
        "serve": serve.model_dump(mode="json"),
    }


def write_recipes(train: TrainSettings, augment: AugmentSettings, serve: ServeSettings) -> Path:
    """Write ``<train.out_dir>/recipes/<cell>.json`` for every cell of the grid, and only those."""
    folder = train.out_dir / RECIPES_DIR
    with atomic_dir(folder) as tmp:
        for cell in train.grid():
            write_json(tmp / f"{cell.key}.json", cell_recipe(cell, train, augment, serve))
    return folder
