"""Where a dataset came from, carried from ingest to the model card: real data or the sample.

A model trained on the built-in synthetic sample answers real photos with confident nonsense
("disgust 0.9999"). The sample generator leaves a marker beside its files; ingest records, per
dataset, the input it read and whether that marker was there; preprocess copies the record
next to the shards with their row counts, and promote puts it in the model card and tags.
Records are known by their content hash (:func:`content_hash`) wherever a model names them.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from pathlib import Path

from emoflow.components.artifacts import read_json, write_json

SAMPLE_MARKER = "SYNTHETIC_SAMPLE.json"  # written by `emoflow sample` beside its files
PROVENANCE_FILE = "provenance.json"  # in each interim and processed dataset folder
TRAINING_DATA_TAG = "training_data"  # on registered versions and training runs: SYNTHETIC or REAL
SYNTHETIC = "synthetic-sample"
REAL = "real"
HASH_CHUNK = 1 << 20  # bytes read at a time when hashing records


def mark_sample(folder: Path, seed: int) -> None:
    """Mark ``folder`` as holding the generated sample, not faces of real people."""
    write_json(
        folder / SAMPLE_MARKER,
        {"generator": "emoflow sample", "seed": seed, "content": "synthetic faces"},
    )


def source_record(path: Path) -> dict[str, str]:
    """What ingest knows of an input: its path and whether the sample generator wrote it."""
    synthetic = (path.parent / SAMPLE_MARKER).is_file()
    return {"source": str(path), "kind": SYNTHETIC if synthetic else REAL}


def write_provenance(folder: Path, record: dict) -> None:
    write_json(folder / PROVENANCE_FILE, record)


def read_provenance(folder: Path) -> dict:
    """A dataset folder's record; one written before records existed is of unknown kind."""
    path = folder / PROVENANCE_FILE
    return read_json(path) if path.is_file() else {"source": "unknown", "kind": "unknown"}


def content_hash(paths: Iterable[str | Path]) -> str:
    """The files' bytes, in the order given, hashed: what a model's records are known by, in
    version tags, model cards and the digests of a run's datasets (which MLflow caps at 36
    characters: 16 hex digits, 64 bits, tell apart any datasets a registry will hold)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as file:
            while chunk := file.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]


SYNTHETIC_WARNING = (
    "this model was trained on EmoFlow's synthetic sample, not on faces of real people: its "
    "answers on real photos mean nothing. Train it on real data (make run-real) before use."
)


class SyntheticSampleWarning(UserWarning):
    """A model trained on the built-in synthetic sample is being used for predictions."""


def warn_if_synthetic(record: dict | None) -> bool:
    """Warn when ``record`` (a model's training data) is the synthetic sample; True if so."""
    if record is None or record.get("kind") != SYNTHETIC:
        return False
    warnings.warn(SYNTHETIC_WARNING, SyntheticSampleWarning, stacklevel=3)
    return True
