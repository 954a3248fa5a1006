"""The Keras process settings a training run needs: seeds, precision, device strategy.

Kept apart from the train stage because they change process-wide state (the global
dtype policy, TensorFlow's determinism) and so must be set, and undone, in one place.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import tensorflow as tf

from emoflow.components.training import multi_worker

_trainings = 0  # trainings under way in this process (thread runner: flow.max_parallel_models)
_trainings_lock = threading.Lock()


@contextmanager
def seeded_training(seed: int, deterministic: bool) -> Iterator[None]:
    """Seed Python, NumPy and TF for a training run (the block); with ``deterministic``,
    reruns give identical weights.

    Keras' state of earlier trainings goes first: a Dask worker trains one cell after another
    in one long-lived thread, and what a previous model left in Keras' global state changed
    the next model's weights. Clearing it resets every thread's Keras state, so it is done
    only while no other training runs in the process.
    """
    global _trainings
    with _trainings_lock:
        if _trainings == 0:
            keras.backend.clear_session()
        _trainings += 1
        keras.utils.set_random_seed(seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        with _trainings_lock:
            _trainings -= 1


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
