"""One model trained by several machines: ``tf.distribute.MultiWorkerMirroredStrategy``.

Each machine runs the same train stage (``emoflow train -a ARCH -e SET``) with ``TF_CONFIG``
naming the cluster and its own task (``infra/tf_config.example.json``). Every worker holds a
replica of the network, reads every batch and keeps its share of it (data sharding, so the
examples of a step are those of a one-machine run), and gradients are all-reduced across the
workers at each step. What only one process may do falls to the chief (the ``chief`` task,
else worker 0): the MLflow run, the checkpoints and the model folder. ``train.out_dir`` must
lie on storage every worker reads (a shared volume), since all of them resume from the
chief's checkpoint.

Keras 3 cannot fit under this strategy as it is (keras-team/keras#20585): :func:`adapt` mends
the two places where it fails.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from emoflow.components.errors import EmoFlowError

TRAINING_JOBS = ("chief", "worker")  # the TF_CONFIG jobs that hold replicas
T = TypeVar("T")


class ClusterError(EmoFlowError):
    """The workers of a cluster cannot train together as configured."""


def cluster_size() -> int:
    """Tasks that train (chief and workers) in ``TF_CONFIG``; 0 when it is not set."""
    if not os.environ.get("TF_CONFIG"):
        return 0
    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    return sum(spec.num_tasks(job) for job in TRAINING_JOBS if job in spec.jobs)


@functools.cache
def strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The process's one strategy: creating it starts this task's server and configures
    TensorFlow's collective ops, which TensorFlow allows once, before it runs anything."""
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise ClusterError(
            f"TF_CONFIG names a cluster of {cluster_size()} workers, but TensorFlow already ran "
            f"in this process ({err}): start each worker's training in a fresh process "
            "(emoflow train --architecture A --emotion-set E)"
        ) from None


def is_multi_worker(current: tf.distribute.Strategy) -> bool:
    return isinstance(current, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(current: tf.distribute.Strategy) -> bool:
    """The one process that writes: always true outside a multi-worker cluster."""
    return current.extended.should_checkpoint


def shard_by_batch(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker keeps its part of every batch. Sharding by file (TensorFlow's default)
    would give workers whole shards: with fewer shards than workers it cannot, and with
    uneven shards the workers would see other examples than a one-machine run."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def gather(current: tf.distribute.Strategy, values: list[int]) -> np.ndarray:
    """Every replica's ``values``, one row each, on every worker (a collective: all must call)."""
    local = tf.constant([values], tf.int64)
    return current.gather(current.run(lambda: local), axis=0).numpy()


def check_agreement(current: tf.distribute.Strategy, **values: int) -> None:
    """Fail unless every worker holds the same ``values``. Workers that disagree on their data,
    settings or checkpoint would mix two models or wait on each other forever."""
    rows = gather(current, list(values.values()))
    for column, name in enumerate(values):
        seen = sorted(set(rows[:, column].tolist()))
        if len(seen) > 1:
            raise ClusterError(
                f"the workers disagree on the {name} ({', '.join(map(str, seen))}): give them "
                "the same data, settings and train.out_dir (on storage they share)"
            )


def outside_strategy(action: Callable[[], T]) -> T:
    """``action()`` in a thread of its own, where TensorFlow's strategy is the default one:
    the strategy in scope is per thread.

    For what only the chief does that builds a model: logging the registry model, MLflow loads
    it back to score its input example. Under the cluster's strategy that copy's variables
    would be created through collectives no other worker joins, which derails the cluster's
    next collective (the barrier). MLflow's active run is per thread too: ``action`` starts
    its own."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outside-strategy") as pool:
        return pool.submit(action).result()


def barrier(current: tf.distribute.Strategy) -> None:
    """Return once every worker has reached this point."""
    gather(current, [0])


def any_worker(current: tf.distribute.Strategy, flag: bool) -> bool:
    """Whether ``flag`` holds on some worker, told to all (a collective: all must call)."""
    return bool(gather(current, [int(flag)]).max())


def adapt(network: keras.Model, current: tf.distribute.Strategy) -> None:
    """Let Keras 3 fit ``network`` under a multi-worker strategy; call it before each fit.

    Keras averages the first batch over the replicas to build the model's state, which this
    strategy cannot do for a batch of several tensors: the state is built from this worker's
    share instead (its shapes are what matter). Keras then averages each step's metrics along
    an axis that scalars lack: they go out as one-element vectors, averaged over the workers.
    Both only feed progress logs: an epoch's metrics are read from the metric variables,
    which the strategy sums over every worker, so all workers log (and stop on) the same values.
    """

    def build_locally(iterator=None, data_batch=None) -> None:
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(
                    lambda v: current.experimental_local_results(v)[0], next(batches)
                )
                break
        with current.scope():
            network._symbolic_build(data_batch=data_batch)

    def vectors(step):
        return lambda data: tree.map_structure(lambda v: tf.reshape(v, [1]), step(data))

    network._maybe_symbolic_build = build_locally
    network.train_step = vectors(type(network).train_step.__get__(network))
    network.test_step = vectors(type(network).test_step.__get__(network))
