"""Which MLflow tracking store a command uses, decided without importing MLflow.

Importing MLflow takes seconds, TensorFlow half a minute: commands check that a sqlite store
exists before they pay for either, so a wrong folder or setting is reported at once.
``components.mlflow_store`` connects to the store this module names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from emoflow.components.errors import EmoFlowError

if TYPE_CHECKING:
    from emoflow.components.settings import MlflowSettings

SQLITE = "sqlite:///"


class StoreError(EmoFlowError, RuntimeError):
    """The tracking store is missing, or stayed busy or unreachable for the whole retry time."""


def tracking_uri(settings: MlflowSettings) -> str:
    """``MLFLOW_TRACKING_URI`` wins over params, so tests and servers can redirect a run.

    A relative sqlite path in params.yaml is already relative to that file's folder
    (``load_params``); one left relative here (the environment's, or settings built in code)
    is made absolute against the working directory: MLflow caches stores by URI, and one
    relative URI must not mean two files in one process.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.tracking_uri
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + str(Path(uri.removeprefix(SQLITE)).resolve())
    return uri


def require_store(uri: str) -> None:
    """A sqlite store must exist: MLflow would create an empty one in the wrong folder and then
    fail to find the model in it. Server stores are checked by connecting to them."""
    if uri.startswith(SQLITE) and not Path(uri.removeprefix(SQLITE)).exists():
        raise StoreError(
            f"MLflow store {uri}: no such file. Run the pipeline first (train creates it), "
            "or point mlflow.tracking_uri (or MLFLOW_TRACKING_URI) at your store"
        )
