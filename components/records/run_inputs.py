"""The record splits a run reads, logged on it as MLflow datasets: name, source and digest.

A split is logged by reference, as a :class:`~mlflow.data.meta_dataset.MetaDataset`: its
folder is the source, its shards' content hash (``components.provenance.content_hash``, the
hash model cards and version tags give) is the digest, and the record features are the
schema. Nothing is loaded to log it, so FER2013's 28,709 training faces cost one read of
their shards' bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import tensorflow as tf
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types.schema import ColSpec, Schema

from emoflow.components.model_kinds import SEQUENCES_DIR
from emoflow.components.provenance import content_hash
from emoflow.components.records.tfrecords import FEATURES, SEQUENCE_FEATURES, shard_paths

# What training reads, and the context each split is logged in on the training run.
TRAINING_SPLITS = {"train": "training", "val": "validation"}
EVALUATION_CONTEXT = "evaluation"  # the splits evaluate scores, logged on the same run
_COLUMN_TYPES = {tf.string: "binary", tf.int64: "long"}


def dataset_name(folder: Path, split: str) -> str:
    """``fer2013-train``; ``ckplus-sequences-train`` for the sequence records of CK+."""
    parts = [folder.parent.name, folder.name] if folder.name == SEQUENCES_DIR else [folder.name]
    return "-".join([*parts, split])


def records_dataset(folder: Path, split: str) -> MetaDataset:
    """One split of a records folder as an MLflow dataset, by reference."""
    features = SEQUENCE_FEATURES if folder.name == SEQUENCES_DIR else FEATURES
    # Built from its JSON form: resolving a bare path warns that two sources could read it.
    source = get_dataset_source_from_json(json.dumps({"uri": str(folder.resolve())}), "local")
    return MetaDataset(
        source,
        name=dataset_name(folder, split),
        digest=content_hash(shard_paths(folder, [split])),
        schema=Schema([ColSpec(_COLUMN_TYPES[f.dtype], name) for name, f in features.items()]),
    )


def log_splits(folder: Path, contexts: dict[str, str]) -> None:
    """Log splits of ``folder`` on the active run, each in its context (split -> context,
    as :data:`TRAINING_SPLITS`)."""
    for split, context in contexts.items():
        mlflow.log_input(records_dataset(folder, split), context=context)
