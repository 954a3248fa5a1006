"""A registered model as ``make run`` leaves one: trained on the synthetic sample, tagged so,
with a model card; for the demo page's tests."""

from __future__ import annotations

from pathlib import Path

import mlflow

from emoflow.components.provenance import SYNTHETIC, TRAINING_DATA_TAG
from emoflow.components.serving.image_model import log_registry_model
from emoflow.components.settings import ServeSettings
from tests.consumers import EMOTIONS, tiny_keras_model, tracking

NAME = "emoflow-demo"
CARD = "# Model card: emoflow-demo v1\n\nTrained on the synthetic sample."


def register_sample_trained(folder: Path, tracking_uri: str) -> str:
    """Register the tiny model as sample-trained (record, tag, card); alias it champion."""
    with tracking(tracking_uri):
        client = mlflow.MlflowClient()
        with mlflow.start_run(experiment_id=client.create_experiment("demo")):
            model_uri = log_registry_model(
                tiny_keras_model(folder),
                EMOTIONS,
                folder,
                ServeSettings(),
                data={"source": "data/sample/fer2013.csv", "kind": SYNTHETIC},
            )
        version = mlflow.register_model(model_uri, NAME).version
        client.set_model_version_tag(NAME, version, TRAINING_DATA_TAG, SYNTHETIC)
        client.update_model_version(NAME, version, description=CARD)
        client.set_registered_model_alias(NAME, "champion", version)
    return f"models:/{NAME}@champion"
