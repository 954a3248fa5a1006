"""Train: TFRecord shards -> one Keras model for an (architecture, emotion set), tracked in MLflow."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import tensorflow as tf

from components import architectures, plots, tracking
from components.artifacts import atomic_dir, write_json
from components.inputs import scoring_batches, training_batches
from components.registry_model import log_registry_model
from components.settings import AugmentSettings, MlflowSettings, TrainSettings

MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"


@dataclass(frozen=True)
class TrainOutputs:
    folder: Path
    model: Path
    run_id: str
    model_uri: str


def train(
    shards: Path,
    settings: TrainSettings,
    augment: AugmentSettings,
    mlflow_settings: MlflowSettings,
) -> TrainOutputs:
    """Fit the network on the train split, watching val, and log everything to one MLflow run.

    ``shards`` is the folder of one dataset's TFRecords (e.g. ``data/processed/fer2013``).
    """
    seed_everything(settings.seed, settings.deterministic)
    train_data = training_batches(shards, settings.emotions, settings.batch_size, settings.seed, augment)
    val_data = scoring_batches(shards, ["val"], settings.emotions, settings.batch_size)
    network = architectures.build(settings.architecture, len(settings.emotions), settings.dense_units)
    network.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    tracking.connect(mlflow_settings)
    with mlflow.start_run(run_name=f"{settings.architecture}-{len(settings.emotions)}cls") as run:
        mlflow.log_params(_flat_params(settings, augment))
        mlflow.log_text(_summary(network), "model_summary.txt")
        history = network.fit(
            train_data,
            validation_data=val_data,
            epochs=settings.epochs,
            callbacks=[mlflow.keras.MlflowCallback(run)],
            verbose=2,
        ).history
        with atomic_dir(settings.out_dir) as tmp:
            network.save(tmp / MODEL_FILE)
            write_json(tmp / HISTORY_FILE, history)
            plots.training_curves(history, tmp / CURVES_FILE)
            mlflow.log_artifact(str(tmp / CURVES_FILE))
            model_uri = log_registry_model(tmp / MODEL_FILE, settings.emotions, tmp)
            write_json(
                tmp / RUN_FILE,
                {"run_id": run.info.run_id, "model_uri": model_uri, "emotions": list(settings.emotions)},
            )
    return TrainOutputs(settings.out_dir, settings.out_dir / MODEL_FILE, run.info.run_id, model_uri)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TF; with ``deterministic``, reruns give identical weights."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _flat_params(settings: TrainSettings, augment: AugmentSettings) -> dict[str, object]:
    values = {f"train.{k}": v for k, v in settings.model_dump(mode="json").items()}
    values.update({f"augment.{k}": v for k, v in augment.model_dump(mode="json").items()})
    return values


def _summary(network: keras.Model) -> str:
    buffer = io.StringIO()
    network.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    return buffer.getvalue()
