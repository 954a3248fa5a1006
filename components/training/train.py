"""Train: TFRecord shards -> one Keras model for an (architecture, emotion set), tracked in MLflow.

A run survives being killed: it checkpoints every epoch (``components.training.checkpoints``) and a
rerun with the same settings and data resumes from the last checkpoint, in the same MLflow
run. On GPUs it computes in mixed precision and spreads batches over every GPU
(``tf.distribute.MirroredStrategy``); on a CPU both are no-ops. With ``TF_CONFIG`` naming
several workers, they train the model together (``components.training.multi_worker``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import keras
import mlflow
import numpy as np
import tensorflow as tf
from mlflow.exceptions import MlflowException

from emoflow.components import mlflow_store, plots
from emoflow.components.artifacts import atomic_dir, write_json
from emoflow.components.model_files import CURVES_FILE, HISTORY_FILE, MODEL_FILE, RUN_FILE
from emoflow.components.model_kinds import reads_sequences, records_folder
from emoflow.components.provenance import TRAINING_DATA_TAG, read_provenance
from emoflow.components.records.input_pipelines import (
    balanced_class_weights,
    fitting_batches,
    label_counts,
    scoring_batches,
    scoring_sequence_batches,
    sequence_windows,
    training_batches,
    training_sequence_batches,
)
from emoflow.components.records.run_inputs import TRAINING_SPLITS, log_splits
from emoflow.components.records.tfrecords import read_examples, shard_paths
from emoflow.components.serving.image_model import log_registry_model
from emoflow.components.serving.sequence_model import log_sequence_model
from emoflow.components.settings import (
    GRID_FIELDS,
    AugmentSettings,
    MlflowSettings,
    ModelCell,
    ServeSettings,
    TrainSettings,
)
from emoflow.components.training import architectures, checkpoints, multi_worker
from emoflow.components.training.checkpoints import (
    Checkpoint,
    ResumableEarlyStopping,
    ResumablePlateau,
    Resumed,
)
from emoflow.components.training.runtime import (
    distribution_strategy,
    mixed_precision,
    seeded_training,
)
from emoflow.components.training.time_budget import TimeBudget

# train.class_weight -> the power its balanced weights are raised to
WEIGHT_POWERS = {"balanced": 1.0, "sqrt_balanced": 0.5}


@dataclass(frozen=True)
class TrainOutputs:
    folder: Path
    model: Path
    run_id: str
    model_uri: str
    resumed_from: int | None = None  # epochs a checkpoint had finished, when the run resumed


@dataclass(frozen=True)
class TrainingData:
    """What ``fit`` reads for one cell, and what was counted on the way."""

    folder: Path  # the records read
    train: tf.data.Dataset  # (x, one-hot y[, weight]) batches
    val: tf.data.Dataset
    counts: np.ndarray  # training examples per class
    steps_per_epoch: int


def train(
    shards: Path,
    cell: ModelCell,
    settings: TrainSettings,
    augment: AugmentSettings,
    mlflow_settings: MlflowSettings,
    serve: ServeSettings | None = None,
) -> TrainOutputs | None:
    """Fit one grid cell on the train split, watching val, and log everything to one MLflow run.

    ``shards`` is the folder of the cell's dataset (``data/processed/<dataset>``, the
    dataset being ``settings.dataset_for(cell.architecture)``); sequence networks read the
    sequence records under it. The outputs go to ``<settings.out_dir>/<cell.key>``; ``serve``
    (face detection for raw images) is logged with the registry model. In a multi-worker
    cluster (``TF_CONFIG``: ``components.training.multi_worker``) every worker calls this;
    the chief writes the outputs and returns them, the other workers return None.
    """
    recipe = settings.recipe(cell.architecture)
    strategy = distribution_strategy(recipe.multi_gpu)  # before TensorFlow runs anything else
    chief = multi_worker.is_chief(strategy)
    work = checkpoints.checkpoint_folder(settings.out_dir, cell.key)
    # Every worker checkpoints when the chief does (saving reads variables all workers
    # share); the others write into a folder of their own, deleted at the end.
    writes = work if chief else Path(tempfile.mkdtemp(prefix=f"emoflow-{cell.key}-"))
    fingerprint = _fingerprint(cell, recipe, augment, records_folder(shards, cell.architecture))
    client = mlflow_store.connect(mlflow_settings, create=True) if chief else None
    # The network is initialised first thing after seeding, so its weights depend on the seed only.
    try:
        with (
            seeded_training(recipe.seed, recipe.deterministic),
            mixed_precision(recipe.mixed_precision),
            strategy.scope(),
        ):
            resumed = _resumable(work, fingerprint, recipe, strategy)
            if resumed is None:
                network = architectures.build(
                    cell.architecture, len(cell.emotions), recipe.dense_units, recipe
                )
            else:
                print(f"{cell.key}: resuming from the checkpoint after epoch {resumed.epoch}")
                network = resumed.network
            data = training_data(shards, cell, recipe, augment)
            if multi_worker.is_multi_worker(strategy):
                data = replace(
                    data,
                    train=multi_worker.shard_by_batch(data.train),
                    val=multi_worker.shard_by_batch(data.val),
                )
            with _tracked_run(client, resumed, cell, recipe, augment, data, network, shards) as run:
                checkpoint = Checkpoint(
                    writes if recipe.checkpoints else None, fingerprint, run, resumed
                )
                budget = _time_budget(recipe, strategy)
                history = _fit(network, cell, recipe, data, resumed, checkpoint, budget, strategy)
                outputs = _finish(
                    strategy,
                    network,
                    history,
                    cell,
                    recipe,
                    settings.out_dir / cell.key,
                    run,
                    serve,
                    read_provenance(shards),
                )
    finally:
        if not chief:
            checkpoints.discard(writes)
    if outputs is None:
        return None
    if budget is None or not budget.exhausted:
        checkpoints.discard(work)
    return TrainOutputs(*outputs, resumed_from=None if resumed is None else resumed.epoch)


def _resumable(
    work: Path, fingerprint: str, settings: TrainSettings, strategy: tf.distribute.Strategy
) -> Resumed | None:
    """The checkpoint to resume from, or None, when every worker agrees; call it in the
    strategy's scope. Stale checkpoints of other settings are deleted (by the chief)."""
    resumed = checkpoints.latest(work, fingerprint) if settings.checkpoints else None
    if multi_worker.is_multi_worker(strategy):
        multi_worker.check_agreement(
            strategy,
            **{
                "training data and settings": int(fingerprint[:12], 16),
                "checkpoint to resume from": -1 if resumed is None else resumed.epoch,
            },
        )
    if resumed is None and multi_worker.is_chief(strategy):
        checkpoints.discard(work)
    return resumed


@contextmanager
def _tracked_run(
    client: mlflow.MlflowClient | None,
    resumed: Resumed | None,
    cell: ModelCell,
    settings: TrainSettings,
    augment: AugmentSettings,
    data: TrainingData,
    network: keras.Model,
    shards: Path,
) -> Iterator[str]:
    """The MLflow run the chief logs to, resumed along with its checkpoint; yields its id.

    A new run starts with the settings, the class counts, and the train and val records as
    its datasets (their digest is their content hash: the model card's).
    Without a client (a worker that is not the chief) nothing is logged and the id is empty.
    """
    if client is None:
        yield ""
        return
    run_id = resumed.run_id if resumed is not None and _run_exists(client, resumed.run_id) else None
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else cell.key) as run:
        if run_id is None:
            mlflow.log_params(_flat_params(cell, settings, augment))
            mlflow.log_params(
                {
                    "data.folder": str(data.folder),
                    "data.train_examples": int(data.counts.sum()),
                    "data.class_counts": dict(zip(cell.emotions, data.counts.tolist())),
                }
            )
            mlflow.log_text(_summary(network), "model_summary.txt")
            mlflow.set_tag(TRAINING_DATA_TAG, read_provenance(shards)["kind"])
            log_splits(data.folder, TRAINING_SPLITS)
        if resumed is not None:
            mlflow.set_tag("resumed_from_epoch", str(resumed.epoch))
        yield run.info.run_id


def _time_budget(settings: TrainSettings, strategy: tf.distribute.Strategy) -> TimeBudget | None:
    """The recipe's budget; in a cluster, a worker over it stops every worker."""
    if not settings.time_budget_minutes:
        return None
    if multi_worker.is_multi_worker(strategy):
        return TimeBudget(settings.time_budget_minutes, partial(multi_worker.any_worker, strategy))
    return TimeBudget(settings.time_budget_minutes)


def _finish(
    strategy: tf.distribute.Strategy, network: keras.Model, *outputs
) -> tuple[Path, Path, str, str] | None:
    """The chief writes the outputs (``_write_outputs(network, *outputs)``); another worker
    takes part in the chief's save of the network (saving reads variables every worker sums)
    into a folder it deletes, and returns None. In a cluster every worker returns once the
    outputs are written, and fails if the chief did."""
    if multi_worker.is_chief(strategy):
        written = _write_outputs(network, *outputs)
    else:
        written = None
        with tempfile.TemporaryDirectory(prefix="emoflow-worker-") as scratch:
            network.save(Path(scratch) / MODEL_FILE)
    if multi_worker.is_multi_worker(strategy):
        multi_worker.barrier(strategy)
    return written


def training_data(
    shards: Path, cell: ModelCell, settings: TrainSettings, augment: AugmentSettings
) -> TrainingData:
    """The cell's batches: faces of ``shards``, or windows of its sequence records."""
    emotions, size, frames = cell.emotions, settings.batch_size, settings.time_delay
    sequences = reads_sequences(cell.architecture)
    folder = records_folder(shards, cell.architecture)

    def examples(split: str) -> tf.data.Dataset:
        if sequences:
            return sequence_windows(folder, [split], emotions, frames)
        return read_examples(folder, [split], emotions).map(lambda x, y, _: (x, y))

    if sequences:
        train = training_sequence_batches(folder, emotions, frames, size, settings.seed, augment)
        val = scoring_sequence_batches(folder, ["val"], emotions, frames, size)
    else:
        train = training_batches(folder, emotions, size, settings.seed, augment)
        val = scoring_batches(folder, ["val"], emotions, size)
    counts = label_counts(examples("train"), len(emotions))
    if counts.sum() == 0:
        raise ValueError(f"{folder}: the train split holds no example of {', '.join(emotions)}")
    val_count = int(label_counts(examples("val"), len(emotions)).sum())
    if val_count == 0:
        raise ValueError(f"{folder}: the val split holds no example of {', '.join(emotions)}")
    weights = (
        None
        if settings.class_weight is None
        else balanced_class_weights(counts, WEIGHT_POWERS[settings.class_weight])
    )
    steps = math.ceil(counts.sum() / size)
    # val's length is told so that Keras need not run out of it to learn it. train's is not:
    # with a known length Keras opens each epoch's iterator at another moment, which draws
    # other shuffle and augmentation seeds, and seeded runs would no longer repeat earlier ones.
    val = val.apply(tf.data.experimental.assert_cardinality(math.ceil(val_count / size)))
    return TrainingData(
        folder=folder,
        # mixup draws from its own stream: with the augmentation's seed it would repeat its draws.
        train=fitting_batches(
            train, len(emotions), weights, settings.mixup_alpha, settings.seed + 1
        ),
        val=fitting_batches(val, len(emotions)),
        counts=counts,
        steps_per_epoch=steps,
    )


def learning_rate_schedule(
    kind: str, peak: float, total_steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """constant (and plateau, whose callback lowers the rate); cosine: from ``peak`` down to 0;
    one_cycle: a linear warm-up over the first 30 % of the steps from peak / 25 to ``peak``,
    then cosine down to 0 (Smith's one-cycle, with cosine annealing). Built-in schedules only,
    so a checkpoint reloads without custom code."""
    if kind in ("constant", "plateau"):
        return peak
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=max(1, total_steps))
    warmup = max(1, int(0.3 * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        peak / 25, decay_steps=max(1, total_steps - warmup), warmup_target=peak, warmup_steps=warmup
    )


def compile_network(
    network: keras.Model, settings: TrainSettings, learning_rate: float, total_steps: int
) -> None:
    """The recipe's optimizer; cross-entropy on one-hot labels with label smoothing.

    adam: Adam, or AdamW with ``weight_decay``; sgd: SGD with Nesterov momentum 0.9 and
    ``weight_decay``, which the best published from-scratch FER2013 recipe found 1.2 points
    better than Adam.
    """
    schedule = learning_rate_schedule(settings.lr_schedule, learning_rate, total_steps)
    decay = settings.weight_decay or None
    if settings.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=decay)
    elif decay:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=decay)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    network.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
        metrics=["accuracy"],
    )


class MlflowEpochs(keras.callbacks.Callback):
    """Each epoch's metrics and learning rate, at the epoch's step (continuing after a resume).

    Put it after the Checkpoint callback: an epoch is logged once its checkpoint is written,
    so an epoch trained again after a crash is never logged twice. An epoch checkpointed but
    not logged when the run died is logged from the checkpoint's history (``checkpointed``)
    as training resumes.
    """

    def __init__(self, checkpointed: dict[str, list[float]]):
        super().__init__()
        self._checkpointed = checkpointed
        self._rate = 0.0

    def on_train_begin(self, logs=None) -> None:
        run_id = mlflow.active_run().info.run_id
        logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "loss")}
        for step in range(len(self._checkpointed.get("loss", []))):
            if step not in logged:
                values = {k: v[step] for k, v in self._checkpointed.items() if step < len(v)}
                mlflow.log_metrics(values, step=step)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        # The epoch's own rate: the plateau callback may lower it at the epoch's end.
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        mlflow.log_metrics(
            {**{k: float(v) for k, v in (logs or {}).items()}, "learning_rate": self._rate},
            step=epoch,
        )


def _fit(
    network: keras.Model,
    cell: ModelCell,
    settings: TrainSettings,
    data: TrainingData,
    resumed: Resumed | None,
    checkpoint: Checkpoint,
    budget: TimeBudget | None,
    strategy: tf.distribute.Strategy,
) -> dict[str, list[float]]:
    """Run the architecture's phases; a resumed run skips what its checkpoint had finished.

    Inside the phase it was written in, a checkpoint's network comes compiled, with its
    optimizer state, so training goes on as if never stopped. Epoch numbers run on across
    phases; a phase cut short by early stopping ends with its best weights. A spent ``budget``
    ends the run after the epoch it ran out in.
    """
    done = resumed.epoch if resumed else 0
    end = 0
    for phase in architectures.phases(cell.architecture, settings):
        start, end = end, end + phase.epochs
        inside = resumed is not None and resumed.phase == phase.name and start < done
        carried = resumed if inside else None
        stopping = (
            ResumableEarlyStopping(settings.early_stopping_patience, carried)
            if settings.early_stopping_patience
            else None
        )
        plateau = (
            ResumablePlateau(settings.plateau_factor, settings.plateau_patience, carried)
            if settings.lr_schedule == "plateau"
            else None
        )
        finished = done >= end or (inside and (resumed.stopping or {}).get("stopped_epoch", 0) > 0)
        if finished:
            if inside and resumed.best_weights is not None:
                network.set_weights(resumed.best_weights)
            continue
        if not inside:
            phase.prepare(network)
            compile_network(
                network, settings, phase.learning_rate, phase.epochs * data.steps_per_epoch
            )
        checkpoint.phase, checkpoint.stopping, checkpoint.plateau = phase.name, stopping, plateau
        if multi_worker.is_multi_worker(strategy):
            multi_worker.adapt(network, strategy)
        # Logged (by the chief) after checkpointed: see MlflowEpochs.
        logged = MlflowEpochs(checkpoint.history) if multi_worker.is_chief(strategy) else None
        callbacks = [stopping, plateau, checkpoint, logged, budget]
        network.fit(
            data.train,
            validation_data=data.val,
            initial_epoch=max(done, start),
            epochs=end,
            callbacks=[c for c in callbacks if c is not None],
            verbose=2,
        )
        if budget is not None and budget.exhausted:
            break
    return checkpoint.history


def _write_outputs(
    network: keras.Model,
    history: dict,
    cell: ModelCell,
    settings: TrainSettings,
    out_dir: Path,
    run_id: str,
    serve: ServeSettings | None,
    data: dict,
) -> tuple[Path, Path, str, str]:
    with atomic_dir(out_dir) as tmp:
        network.save(tmp / MODEL_FILE)
        write_json(tmp / HISTORY_FILE, history)
        plots.training_curves(history, tmp / CURVES_FILE)
        mlflow.log_artifact(str(tmp / CURVES_FILE))

        def log_model() -> str:
            mlflow.start_run(run_id=run_id)  # this thread's active run: the training's
            if reads_sequences(cell.architecture):
                return log_sequence_model(
                    tmp / MODEL_FILE, cell.emotions, settings.time_delay, tmp, data
                )
            return log_registry_model(tmp / MODEL_FILE, cell.emotions, tmp, serve, data)

        model_uri = multi_worker.outside_strategy(log_model)
        write_json(tmp / RUN_FILE, {"run_id": run_id, "model_uri": model_uri, **cell.model_dump()})
    return out_dir, out_dir / MODEL_FILE, run_id, model_uri


def _fingerprint(
    cell: ModelCell, settings: TrainSettings, augment: AugmentSettings, folder: Path
) -> str:
    """What a checkpoint must share with a run to be resumed by it: cell, recipe, data.

    The time budget is left out: a run that spent its budget goes on under a new one. So are
    the output paths (the checkpoint's folder, the augmentation grid's file), which do not
    change what is trained and may be written relative or absolute for the same file (params
    read from another folder)."""
    shards = [(Path(p).name, Path(p).stat().st_size) for p in shard_paths(folder, ["train", "val"])]
    payload = {
        "cell": cell.model_dump(mode="json"),
        "train": settings.model_dump(
            mode="json", exclude=GRID_FIELDS | {"time_budget_minutes", "out_dir"}
        ),
        "augment": augment.model_dump(mode="json", exclude={"grid_png"}),
        "shards": shards,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _run_exists(client: mlflow.MlflowClient, run_id: str) -> bool:
    """A checkpoint's run may live in another store (a changed MLFLOW_TRACKING_URI)."""
    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


def _flat_params(
    cell: ModelCell, settings: TrainSettings, augment: AugmentSettings
) -> dict[str, object]:
    values = {f"model.{k}": v for k, v in cell.model_dump(mode="json").items()}
    shared = settings.model_dump(mode="json", exclude=GRID_FIELDS)
    values.update({f"train.{k}": v for k, v in shared.items()})
    values.update({f"augment.{k}": v for k, v in augment.model_dump(mode="json").items()})
    return values


def _summary(network: keras.Model) -> str:
    buffer = io.StringIO()
    network.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    return buffer.getvalue()
