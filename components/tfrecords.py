"""TFRecord shards: the on-disk format between preprocess and training.

One gzip-compressed ``tf.train.Example`` per image: raw 48x48 uint8 pixels, the canonical
label index and the image id. Labels stay canonical on disk; an emotion set is applied when
reading, so one set of shards serves every model of the grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from components import labels
from components.manifest import IMAGE_SIZE, Dataset

COMPRESSION = "GZIP"
FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.string),
}


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord.gz"


def write_split(dataset: Dataset, split: str, folder: Path, examples_per_shard: int) -> list[Path]:
    """Write the rows of one split into as many shards as ``examples_per_shard`` requires."""
    rows = np.flatnonzero(dataset.manifest["split"].to_numpy() == split)
    count = max(1, -(-len(rows) // examples_per_shard))
    options = tf.io.TFRecordOptions(compression_type=COMPRESSION)
    paths = []
    for index, chunk in enumerate(np.array_split(rows, count)):
        path = folder / shard_name(split, index, count)
        with tf.io.TFRecordWriter(str(path), options) as writer:
            for row in chunk:
                # deterministic: protobuf map order otherwise varies between processes
                writer.write(_example(dataset, int(row)).SerializeToString(deterministic=True))
        paths.append(path)
    return paths


def _example(dataset: Dataset, row: int) -> tf.train.Example:
    record = dataset.manifest.iloc[row]
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[dataset.pixels[row].tobytes()])),
        "label": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[labels.CANONICAL.index(record["label"])])
        ),
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record["id"].encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def shard_paths(folder: Path, splits: list[str] | tuple[str, ...]) -> list[str]:
    """Shard files of the given splits, sorted so that reading order is reproducible."""
    paths = sorted(str(p) for split in splits for p in folder.glob(f"{split}-*.tfrecord.gz"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no TFRecord shards for split(s) {', '.join(splits)}")
    return paths


def read_examples(folder: Path, splits: list[str] | tuple[str, ...], emotions: tuple[str, ...]) -> tf.data.Dataset:
    """Yield ``(uint8 image [48, 48, 1], class index in emotions, id)``; other classes dropped."""
    table = tf.constant(labels.index_table(emotions), dtype=tf.int64)

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(serialized, FEATURES)
        image = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), [IMAGE_SIZE, IMAGE_SIZE, 1])
        return image, tf.gather(table, example["label"]), example["id"]

    records = tf.data.TFRecordDataset(shard_paths(folder, splits), compression_type=COMPRESSION)
    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).filter(
        lambda image, label, ident: label >= 0
    )
