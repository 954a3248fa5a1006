"""tf.data input pipelines over the TFRecord shards, for training and for scoring.

Faces come from the image shards, sequence windows from the sequence records
(``components.records.sequences``); both yield ``(x, class index)`` batches. :func:`fitting_batches`
turns those into what ``Model.fit`` takes: one-hot labels (label smoothing and mixup need
them), optional per-example class weights, optional mixup.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from emoflow.components.model_input import to_model_input
from emoflow.components.records.augment import augment_image
from emoflow.components.records.sequences import windows
from emoflow.components.records.tfrecords import read_examples, read_sequences
from emoflow.components.settings import AugmentSettings

SHUFFLE_BUFFER = 4096


def training_batches(
    folder: Path,
    emotions: tuple[str, ...],
    batch_size: int,
    seed: int,
    augment: AugmentSettings | None,
) -> tf.data.Dataset:
    """Shuffled, augmented ``(x, y)`` batches of the train split, reproducible from ``seed``."""
    examples = read_examples(folder, ["train"], emotions).map(lambda x, y, _: (x, y))
    return _finish(_shuffled_augmented(examples, seed, augment), batch_size)


def training_sequence_batches(
    folder: Path,
    emotions: tuple[str, ...],
    time_delay: int,
    batch_size: int,
    seed: int,
    augment: AugmentSettings | None,
) -> tf.data.Dataset:
    """Shuffled, augmented ``(windows [B, time_delay, 48, 48, 1], y)`` of the train split.

    All frames of a window get the same augmentation: a face does not turn between frames.
    """
    return _finish(
        _shuffled_augmented(
            sequence_windows(folder, ["train"], emotions, time_delay), seed, augment
        ),
        batch_size,
    )


def scoring_batches(
    folder: Path, splits: list[str] | tuple[str, ...], emotions: tuple[str, ...], batch_size: int
) -> tf.data.Dataset:
    """Unshuffled, unaugmented ``(x, y)`` batches in shard order."""
    examples = read_examples(folder, splits, emotions).map(lambda x, y, _: (to_model_input(x), y))
    return _finish(examples, batch_size)


def scoring_sequence_batches(
    folder: Path,
    splits: list[str] | tuple[str, ...],
    emotions: tuple[str, ...],
    time_delay: int,
    batch_size: int,
) -> tf.data.Dataset:
    """Unshuffled, unaugmented ``(windows, y)`` batches in record order."""
    examples = sequence_windows(folder, splits, emotions, time_delay).map(
        lambda x, y: (to_model_input(x), y)
    )
    return _finish(examples, batch_size)


def sequence_windows(
    folder: Path, splits: list[str] | tuple[str, ...], emotions: tuple[str, ...], time_delay: int
) -> tf.data.Dataset:
    """Every window of ``time_delay`` frames of every sequence: ``(uint8 [T, 48, 48, 1], y)``."""

    def cut(frames: tf.Tensor, label: tf.Tensor, _: tf.Tensor) -> tf.data.Dataset:
        cuts = windows(frames, time_delay)
        return tf.data.Dataset.from_tensor_slices((cuts, tf.fill(tf.shape(cuts)[:1], label)))

    return read_sequences(folder, splits, emotions).flat_map(cut)


def label_counts(examples: tf.data.Dataset, num_classes: int) -> np.ndarray:
    """How many ``(x, y)`` examples of each class a dataset holds (one pass over it)."""
    counts = np.zeros(num_classes, np.int64)
    for labels in examples.map(lambda x, y: y).batch(SHUFFLE_BUFFER).as_numpy_iterator():
        counts += np.bincount(labels, minlength=num_classes)
    return counts


def balanced_class_weights(counts: np.ndarray, power: float = 1.0) -> np.ndarray:
    """``n / (classes x count)`` per class, sklearn's "balanced", raised to ``power``; 0 for a
    class with no examples. A power of 0.5 pushes toward rare classes more gently: on FER2013
    full balancing weighs disgust (1.5 % of faces) 9.4 times and costs accuracy elsewhere."""
    present = counts > 0
    weights = np.zeros(len(counts), np.float32)
    weights[present] = (counts.sum() / (present.sum() * counts[present])) ** power
    return weights


def fitting_batches(
    batches: tf.data.Dataset,
    num_classes: int,
    class_weights: np.ndarray | None = None,
    mixup_alpha: float = 0.0,
    seed: int = 0,
) -> tf.data.Dataset:
    """``(x, class index)`` batches -> ``(x, one-hot y[, sample weight])`` as ``fit`` takes them.

    With ``mixup_alpha`` > 0 each batch is blended with itself reversed, by a weight drawn
    from Beta(alpha, alpha) per batch (mixup, Zhang et al. 2018); labels and weights blend
    alike. The draws come from a seeded stream, as the augmentation seeds do.
    """
    weights = None if class_weights is None else tf.constant(class_weights, tf.float32)

    def encode(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, ...]:
        onehot = tf.one_hot(y, num_classes)
        return (x, onehot) if weights is None else (x, onehot, tf.gather(weights, y))

    encoded = batches.map(encode)
    if mixup_alpha <= 0:
        return encoded
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(encoded, seeds).map(lambda batch, s: _mixup(batch, s, mixup_alpha))


def _mixup(batch: tuple[tf.Tensor, ...], seed: tf.Tensor, alpha: float) -> tuple[tf.Tensor, ...]:
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    a = tf.random.stateless_gamma([], seeds[0], alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha)
    mix = a / (a + b)
    return tuple(mix * t + (1.0 - mix) * tf.reverse(t, [0]) for t in batch)


def _shuffled_augmented(
    examples: tf.data.Dataset, seed: int, augment: AugmentSettings | None
) -> tf.data.Dataset:
    """Cached, reshuffled every epoch, and augmented with a fresh seed per example and epoch.

    Each example draws its augmentation seed from a seeded random stream that is drawn
    anew every epoch, so epochs differ but a rerun with the same seed does not.
    """
    examples = examples.cache().shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    if augment is None:
        return examples.map(lambda x, y: (to_model_input(x), y))
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(examples, seeds).map(
        lambda xy, s: (_augmented(to_model_input(xy[0]), s, augment), xy[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _augmented(x: tf.Tensor, seed: tf.Tensor, augment: AugmentSettings) -> tf.Tensor:
    """A face, or every frame of a window with the same seed (so the same warp)."""
    if x.shape.rank == 3:
        return augment_image(x, seed, augment)
    return tf.map_fn(lambda frame: augment_image(frame, seed, augment), x)


def _finish(examples: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)
