"""Preprocess: interim datasets -> gzip TFRecord shards per dataset and split.

Datasets made of sequences (CK+) also get one record per sequence under ``sequences/``,
which the time-series networks read (``components.records.sequences``).

Augmentation does not happen here: it runs in the training input pipeline
(components.records.input_pipelines), so the shards stay the real images. This stage also draws the
augmentation grid, because it is the place where the augmentation settings can first be
seen on real examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from emoflow.components import plots
from emoflow.components.artifacts import staged_dir
from emoflow.components.manifest import read_dataset
from emoflow.components.model_input import to_model_input
from emoflow.components.provenance import read_provenance, write_provenance
from emoflow.components.records.augment import augment_image
from emoflow.components.records.tfrecords import write_sequences, write_split
from emoflow.components.settings import AugmentSettings, PreprocessSettings

GRID_ORIGINALS = 6
GRID_VARIANTS = 7


@dataclass(frozen=True)
class PreprocessOutputs:
    shards: dict[str, Path]  # dataset name -> folder of shards
    augmentation_grid: Path


def preprocess(
    interim: Mapping[str, Path], settings: PreprocessSettings, augment: AugmentSettings
) -> PreprocessOutputs:
    """Write shards for every dataset in ``interim`` (name -> interim folder).

    All datasets are written into one staging folder that replaces ``preprocess.out_dir``
    once every one is complete, so a failure or a kill never leaves new FER2013 shards
    beside old CK+ ones.
    """
    with staged_dir(settings.out_dir, owns=interim) as staging:
        for name, folder in interim.items():
            _write_records(folder, staging / name, settings)
    first = read_dataset(next(iter(interim.values())))
    grid = augmentation_grid(
        first.pixels[:GRID_ORIGINALS], first.manifest["label"][:GRID_ORIGINALS], augment
    )
    shards = {name: settings.out_dir / name for name in interim}
    return PreprocessOutputs(shards=shards, augmentation_grid=grid)


def _write_records(interim: Path, target: Path, settings: PreprocessSettings) -> None:
    """One dataset's shards per split, its sequence records and its provenance record."""
    dataset = read_dataset(interim)
    for split in sorted(dataset.manifest["split"].unique()):
        write_split(dataset, split, target, settings.examples_per_shard)
    write_sequences(dataset, target, settings.examples_per_shard)
    rows = dataset.manifest["split"].value_counts().sort_index()
    write_provenance(
        target, {**read_provenance(interim), "rows": {k: int(v) for k, v in rows.items()}}
    )


def augmentation_grid(pixels: np.ndarray, names: Sequence[str], settings: AugmentSettings) -> Path:
    """Each original beside random augmentations of it, as training will see them."""
    rows = []
    for index, face in enumerate(pixels):
        image = to_model_input(face)
        variants = [
            augment_image(image, tf.constant([index, variant], tf.int64), settings).numpy()
            for variant in range(GRID_VARIANTS)
        ]
        rows.append([image.numpy(), *variants])
    titles = [f"{name}: original, then augmented" for name in names]
    return plots.image_grid(rows, titles, settings.grid_png)
