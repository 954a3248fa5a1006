"""What both builders share: the example schema and turning an ingested dataset into examples."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from emoflow.components import labels
from emoflow.components.manifest import IMAGE_SIZE, Dataset

SPLITS = ("train", "val", "test")
HOMEPAGE = "https://github.com/thoughtworksarts/EmoPy"
# Where the builders' code and metadata are, told rather than inferred: TFDS infers them from
# the top package (``emoflow``), a namespace package that an editable install cannot resolve.
BUILDERS_DIR = tfds.core.Path(__file__).parent


def features(**extra: tfds.features.FeatureConnector) -> tfds.features.FeaturesDict:
    """48x48 grey face, canonical label, the manifest id (and any dataset-specific extra)."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=list(labels.CANONICAL)),
            "id": tfds.features.Text(),
            **extra,
        }
    )


def splits(dataset: Dataset) -> list[str]:
    """The splits the dataset has, in train/val/test order (TFDS refuses an empty split)."""
    present = set(dataset.manifest["split"])
    return [split for split in SPLITS if split in present]


def examples(dataset: Dataset, split: str, *extra: str) -> Iterator[tuple[str, dict[str, object]]]:
    """The images of ``split``, keyed by manifest id, with the manifest columns ``extra``."""
    manifest = dataset.manifest
    for row in np.flatnonzero((manifest["split"] == split).to_numpy()):
        record = manifest.iloc[row]
        yield (
            record["id"],
            {
                "image": np.asarray(dataset.pixels[row])[..., np.newaxis],
                "label": record["label"],
                "id": record["id"],
                **{column: record[column] for column in extra},
            },
        )
