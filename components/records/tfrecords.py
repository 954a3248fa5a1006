"""TFRecord shards: the on-disk format between preprocess and training.

One gzip-compressed ``tf.train.Example`` per image: raw 48x48 uint8 pixels, the canonical
label index and the image id. Labels stay canonical on disk; an emotion set is applied when
reading, so one set of shards serves every model of the grid.

Datasets with sequences (CK+) also get sequence records under ``sequences/``: one
``tf.train.Example`` per sequence holding its kept frames in frame order
(``components.records.sequences``); the time-series networks cut them into windows when reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from emoflow.components import labels
from emoflow.components.manifest import IMAGE_SIZE, Dataset
from emoflow.components.model_kinds import SEQUENCES_DIR
from emoflow.components.records.sequences import FrameSequence, frame_sequences

COMPRESSION = "GZIP"
FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.string),
}
SEQUENCE_FEATURES = {
    "frames": tf.io.FixedLenFeature([], tf.string),  # length x 48 x 48 uint8, in frame order
    "length": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.string),
}


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord.gz"


def write_split(dataset: Dataset, split: str, folder: Path, examples_per_shard: int) -> list[Path]:
    """Write the rows of one split into as many shards as ``examples_per_shard`` requires.

    Each shard's pixels are copied out of the dataset when the shard is written, so the
    images held at once are one shard's, however many the dataset has.
    """
    rows = np.flatnonzero(dataset.manifest["split"].to_numpy() == split)
    label_index = pd.Categorical(dataset.manifest["label"], categories=labels.CANONICAL).codes
    if (label_index[rows] < 0).any():
        unknown = set(dataset.manifest["label"].iloc[rows[label_index[rows] < 0]])
        raise ValueError(f"labels {sorted(unknown)} are not in {labels.CANONICAL}")
    ids = dataset.manifest["id"]

    def examples(chunk: np.ndarray) -> Iterator[tf.train.Example]:
        shard = rows[chunk]
        images = _take(dataset.pixels, shard)
        for image, label, ident in zip(images, label_index[shard], ids.iloc[shard], strict=True):
            yield _example(image, int(label), ident)

    return _write_shards(folder, split, len(rows), examples, examples_per_shard)


def _take(pixels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A copy of ``pixels[rows]``; a memory-mapped file is mapped afresh for it.

    Pages read through one mapping of the whole file stay resident until it is unmapped, so
    preprocess would grow by the whole pixel file (2.3 GB at a million images); a mapping
    per shard is released with the shard.
    """
    if isinstance(pixels, np.memmap) and pixels.filename is not None:
        pixels = np.memmap(pixels.filename, pixels.dtype, "r", pixels.offset, pixels.shape)
    return np.array(pixels[rows])


def write_sequences(dataset: Dataset, folder: Path, examples_per_shard: int) -> list[Path]:
    """Write the dataset's sequence records under ``folder/sequences``; nothing if it has none."""
    sequences = frame_sequences(dataset.manifest.reset_index(drop=True))
    paths: list[Path] = []
    for split in sorted({s.split for s in sequences}):
        paths += write_sequence_split(
            dataset, sequences, split, folder / SEQUENCES_DIR, examples_per_shard
        )
    return paths


def write_sequence_split(
    dataset: Dataset,
    sequences: Sequence[FrameSequence],
    split: str,
    folder: Path,
    examples_per_shard: int,
) -> list[Path]:
    """Write the sequences of one split, one record per sequence, into shards under ``folder``."""
    chosen = [s for s in sequences if s.split == split]

    def examples(chunk: np.ndarray) -> Iterator[tf.train.Example]:
        return (_sequence_example(dataset, chosen[position]) for position in chunk)

    return _write_shards(folder, split, len(chosen), examples, examples_per_shard)


def _write_shards(
    folder: Path,
    split: str,
    items: int,
    examples: Callable[[np.ndarray], Iterable[tf.train.Example]],
    examples_per_shard: int,
) -> list[Path]:
    """Shard ``items`` evenly; ``examples`` gives the records of one shard's positions."""
    count = max(1, -(-items // examples_per_shard))
    options = tf.io.TFRecordOptions(compression_type=COMPRESSION)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    shards = np.array_split(np.arange(items), count)
    for index, chunk in enumerate(tqdm(shards, desc=f"shards {split}", mininterval=5)):
        path = folder / shard_name(split, index, count)
        with tf.io.TFRecordWriter(str(path), options) as writer:
            for example in examples(chunk):
                # deterministic: protobuf map order otherwise varies between processes
                writer.write(example.SerializeToString(deterministic=True))
        paths.append(path)
    return paths


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _example(image: np.ndarray, label: int, ident: str) -> tf.train.Example:
    feature = {
        "image": _bytes(image.tobytes()),
        "label": _int(label),
        "id": _bytes(ident.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _sequence_example(dataset: Dataset, sequence: FrameSequence) -> tf.train.Example:
    frames = np.ascontiguousarray(dataset.pixels[sequence.rows], dtype=np.uint8)
    feature = {
        "frames": _bytes(frames.tobytes()),
        "length": _int(len(sequence.rows)),
        "label": _int(labels.CANONICAL.index(sequence.label)),
        "id": _bytes(sequence.id.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def shard_paths(folder: Path, splits: list[str] | tuple[str, ...]) -> list[str]:
    """Shard files of the given splits, sorted so that reading order is reproducible."""
    paths = sorted(str(p) for split in splits for p in folder.glob(f"{split}-*.tfrecord.gz"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no TFRecord shards for split(s) {', '.join(splits)}")
    return paths


def read_examples(
    folder: Path, splits: list[str] | tuple[str, ...], emotions: tuple[str, ...]
) -> tf.data.Dataset:
    """Yield ``(uint8 image [48, 48, 1], class index in emotions, id)``; other classes dropped."""
    table = tf.constant(labels.index_table(emotions), dtype=tf.int64)

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(serialized, FEATURES)
        image = tf.reshape(
            tf.io.decode_raw(example["image"], tf.uint8), [IMAGE_SIZE, IMAGE_SIZE, 1]
        )
        return image, tf.gather(table, example["label"]), example["id"]

    return _parsed(folder, splits, parse)


def read_sequences(
    folder: Path, splits: list[str] | tuple[str, ...], emotions: tuple[str, ...]
) -> tf.data.Dataset:
    """Yield ``(uint8 frames [length, 48, 48, 1], class index in emotions, id)``.

    Sequences of other classes are dropped.
    """
    table = tf.constant(labels.index_table(emotions), dtype=tf.int64)

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(serialized, SEQUENCE_FEATURES)
        frames = tf.io.decode_raw(example["frames"], tf.uint8)
        frames = tf.reshape(frames, tf.stack([example["length"], IMAGE_SIZE, IMAGE_SIZE, 1]))
        return frames, tf.gather(table, example["label"]), example["id"]

    return _parsed(folder, splits, parse)


def _parsed(folder: Path, splits: list[str] | tuple[str, ...], parse: Callable) -> tf.data.Dataset:
    records = tf.data.TFRecordDataset(shard_paths(folder, splits), compression_type=COMPRESSION)
    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).filter(
        lambda x, label, ident: label >= 0
    )
