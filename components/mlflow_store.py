"""MLflow connection: tracking and registry pointed at the store ``components.store_location``
names, and how long a busy or unreachable store is waited for.

Called by entry points and stage functions, never at import time, so importing a module
has no side effects on a user's MLflow configuration.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from emoflow.components.settings import MlflowSettings
from emoflow.components.store_location import SQLITE, StoreError, require_store, tracking_uri

# What a store says when it is busy or away, in the errors MLflow passes on: worth a retry.
UNAVAILABLE = (
    "database is locked",
    "unable to open database",
    "connection",
    "max retries",
    "timed out",
    "temporarily unavailable",
)
FIRST_WAIT_SECONDS = 0.5
LONGEST_WAIT_SECONDS = 8.0

T = TypeVar("T")


def connect(settings: MlflowSettings, create: bool = False) -> mlflow.MlflowClient:
    """Point tracking and registry at the same store, select the experiment, return a client.

    Only the stage that starts runs (train) may ``create`` a missing sqlite store: anywhere
    else a missing file means a wrong folder or setting, which MLflow would hide by creating
    an empty store and then failing to find the model in it.
    """
    uri = tracking_uri(settings)
    if not create:
        require_store(uri)
    _bound_http_calls(settings)
    with _environment_kept("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    with _one_creator(uri):
        retried(
            lambda: mlflow.set_experiment(settings.experiment),
            "selecting the experiment",
            settings,
        )
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def _environment_kept(*names: str) -> Iterator[None]:
    """The process environment's ``names`` as they were before the block. MLflow exports the
    URIs it is given to the environment, where :func:`tracking_uri` would take them for a
    user's choice and let one project's store win over the next one's params in the same
    process (a flow's threads, a test run)."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _one_creator(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a sqlite store's folder while the store is opened.

    Opening a sqlite store creates its tables and experiment when they are missing, and
    MLflow does that without a lock: trainings started side by side on a fresh store (the
    grid's cells on Dask workers, ``dvc exp run --jobs``) race and fail with "table ...
    already exists". Server stores serialise this themselves.
    """
    if not uri.startswith(SQLITE):
        yield
        return
    parent = Path(uri.removeprefix(SQLITE)).parent
    parent.mkdir(parents=True, exist_ok=True)  # sqlite makes the file, not its folder
    folder = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # closing drops the lock


def retried(action: Callable[[], T], what: str, settings: MlflowSettings) -> T:
    """``action``, tried again with doubling waits while the store is busy or unreachable, for
    ``settings.retry_seconds`` in all; then a :class:`StoreError` of one line naming the store.

    An answer from the store (a name it does not know, a bad request) is raised at once.
    """
    deadline = time.monotonic() + settings.retry_seconds
    wait = FIRST_WAIT_SECONDS
    tries = 0
    while True:
        tries += 1
        try:
            return action()
        except Exception as err:
            if not is_unavailable(err):
                raise
            if time.monotonic() + wait > deadline:
                raise StoreError(
                    f"MLflow store {tracking_uri(settings)}: {what} failed after {tries} "
                    f"tries in {settings.retry_seconds:g} s: {_first_line(err)}"
                ) from None
        time.sleep(wait)
        wait = min(2 * wait, LONGEST_WAIT_SECONDS)


def is_unavailable(error: BaseException) -> bool:
    """A store that is busy or away, not one that answered: connection and timeout errors,
    a locked or unopenable sqlite file, server errors (HTTP 5xx)."""
    if isinstance(error, MlflowException):
        return error.get_http_status_code() >= 500 or _says_unavailable(error)
    if isinstance(error, OSError):  # requests' connection errors and timeouts are OSErrors
        return True
    from sqlalchemy.exc import OperationalError  # MLflow's sqlite store lets it through

    return isinstance(error, OperationalError) and _says_unavailable(error)


def _says_unavailable(error: BaseException) -> bool:
    text = str(error).lower()
    return any(phrase in text for phrase in UNAVAILABLE)


def _first_line(error: BaseException) -> str:
    """The gist of an error (MLflow and SQLAlchemy messages run to many lines of SQL)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _bound_http_calls(settings: MlflowSettings) -> None:
    """Give MLflow's HTTP client this project's limits, unless the environment sets its own."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", f"{settings.request_timeout_seconds:g}")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
