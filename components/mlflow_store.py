"""MLflow connection: one place that decides which tracking store and registry are used.

Called by entry points and stage functions, never at import time, so importing a module
has no side effects on a user's MLflow configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from components.settings import MlflowSettings

SQLITE = "sqlite:///"


def tracking_uri(settings: MlflowSettings) -> str:
    """``MLFLOW_TRACKING_URI`` wins over params, so tests and servers can redirect a run.

    A relative sqlite path is made absolute against the working directory: MLflow caches
    stores by URI, and one relative URI must not mean two files in one process.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.tracking_uri
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + str(Path(uri.removeprefix(SQLITE)).resolve())
    return uri


def connect(settings: MlflowSettings) -> mlflow.MlflowClient:
    """Point tracking and registry at the same store, select the experiment, return a client."""
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(settings.experiment)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
