"""The Keras process settings a training run needs: seeds, precision, device strategy.

Kept apart from the train stage because they change process-wide state (the global
dtype policy, TensorFlow's determinism) and so must be set, and undone, in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import keras
import tensorflow as tf

from components.training import multi_worker


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TF; with ``deterministic``, reruns give identical weights."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def distribution_strategy(multi_gpu: bool) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` names several workers (each uses every
    GPU of its machine); else MirroredStrategy over every GPU when there are several (and
    ``multi_gpu``); else the default strategy, whose scope changes nothing.

    Call it before anything else of TensorFlow: a multi-worker strategy must come first.
    ``batch_size`` stays the global batch: each of n replicas gets ``batch_size / n``.
    """
    if multi_worker.cluster_size() > 1:
        return multi_worker.strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if multi_gpu and len(gpus) > 1:
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    return tf.distribute.get_strategy()


@contextmanager
def mixed_precision(enabled: bool) -> Iterator[str]:
    """Compute in float16 (variables stay float32) while a GPU trains, when ``enabled``.

    CPUs gain nothing from float16, so there the policy stays float32. The previous policy
    comes back afterwards: the policy is global to the process.
    """
    previous = keras.mixed_precision.global_policy()
    policy = "mixed_float16" if enabled and tf.config.list_logical_devices("GPU") else previous.name
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)
