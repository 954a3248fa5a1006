"""Whether a network reads single faces or frame sequences, and where its records lie.

The one place that knows the two kinds of model: image networks read face shards
(``data/processed/<dataset>/``), sequence networks (ConvolutionalLstmNN, TimeDelayConvNN)
read the sequence records beside them (``data/processed/<dataset>/sequences/``). Every
stage that treats the kinds differently asks here.
"""

from __future__ import annotations

from pathlib import Path

SEQUENCE_ARCHITECTURES: frozenset[str] = frozenset({"convlstm", "timedelay"})
SEQUENCES_DIR = "sequences"  # under a dataset's shard folder


def reads_sequences(architecture: str) -> bool:
    """True for the time-series networks, which read windows of frames, not single faces."""
    return architecture in SEQUENCE_ARCHITECTURES


def records_folder(dataset_shards: Path, architecture: str) -> Path:
    """The records a network of ``architecture`` reads within one dataset's shard folder."""
    return dataset_shards / SEQUENCES_DIR if reads_sequences(architecture) else dataset_shards
