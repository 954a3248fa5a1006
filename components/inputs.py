"""tf.data input pipelines over the TFRecord shards, for training and for scoring."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from components.augment import augment_image
from components.preprocessing import to_model_input
from components.settings import AugmentSettings
from components.tfrecords import read_examples


def training_batches(
    folder: Path,
    emotions: tuple[str, ...],
    batch_size: int,
    seed: int,
    augment: AugmentSettings | None,
) -> tf.data.Dataset:
    """Shuffled, augmented ``(x, y)`` batches of the train split, reproducible from ``seed``.

    Each example draws its augmentation seed from a seeded random stream that is drawn
    anew every epoch, so epochs differ but a rerun with the same seed does not.
    """
    examples = read_examples(folder, ["train"], emotions).map(lambda x, y, _: (x, y)).cache()
    examples = examples.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    if augment is None:
        return _finish(examples.map(lambda x, y: (to_model_input(x), y)), batch_size)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    augmented = tf.data.Dataset.zip(examples, seeds).map(
        lambda xy, s: (augment_image(to_model_input(xy[0]), s, augment), xy[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return _finish(augmented, batch_size)


def scoring_batches(
    folder: Path, splits: list[str] | tuple[str, ...], emotions: tuple[str, ...], batch_size: int
) -> tf.data.Dataset:
    """Unshuffled, unaugmented ``(x, y)`` batches in shard order."""
    examples = read_examples(folder, splits, emotions).map(lambda x, y, _: (to_model_input(x), y))
    return _finish(examples, batch_size)


def _finish(examples: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)
