"""One promotion at a time per registered model, for any MLflow store (sqlite or a server).

The gate reads the champion, compares, then moves the alias. Two promoters doing that side
by side can both compare against the same old champion, and the later move can then put a
worse model over a better one. MLflow has no compare-and-set, so the lock is a lease kept in
a tag of the registered model: write your token where the tag is free or expired, wait
``SETTLE_SECONDS``, read it back. Of promoters that wrote at nearly the same time, only the
last writer reads its own token. A thread renews the lease while the holder works, so a live
holder keeps it however long the champion's re-scoring takes, and a crashed one loses it
after ``lease_seconds``. The holder checks that the lease is still its own right before it
moves the alias (:meth:`PromotionLock.check_held`).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

from emoflow.components import mlflow_store
from emoflow.components.errors import EmoFlowError
from emoflow.components.settings import MlflowSettings

LOCK_TAG = "emoflow.promotion_lock"
SETTLE_SECONDS = 1.0  # longer than a promoter takes between reading the tag and writing it


class PromotionBusy(EmoFlowError, RuntimeError):
    """Another promotion of the same model held the lock for the whole wait, or took it over."""


@dataclass(frozen=True)
class Lease:
    token: str
    expires: float  # seconds since the epoch
    holder: str  # host:pid, for the messages

    def encode(self) -> str:
        return f"{self.token} {self.expires:.3f} {self.holder}"

    @staticmethod
    def decode(value: str) -> Lease | None:
        parts = value.split(" ", 2)
        try:
            return Lease(parts[0], float(parts[1]), parts[2])
        except (IndexError, ValueError):
            return None  # not ours to read: treated as free


class PromotionLock:
    """A held lease on ``name``'s promotion lock; renewed in the background until released."""

    def __init__(
        self,
        client: mlflow.MlflowClient,
        name: str,
        lease: Lease,
        settings: MlflowSettings,
        created: bool,
    ):
        self._client, self._name, self._lease, self._settings = client, name, lease, settings
        self._created = created  # the registered model was made for this lock
        self._lease_seconds = lease.expires - time.time()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()

    def check_held(self) -> None:
        """Raise :class:`PromotionBusy` when the lease is no longer this promoter's."""
        current = _read(self._client, self._name, self._settings)
        if current is None or current.token != self._lease.token:
            taker = current.holder if current else "nobody"
            raise PromotionBusy(
                f"{self._name}: the promotion lock was taken over by {taker} while this "
                f"promotion ({self._lease.holder}) held it; nothing was moved"
            )

    def release(self) -> None:
        """Drop the lease; a registered model made only to hold it, and still without versions
        (its first candidate was refused), goes with it, so a refusal registers nothing."""
        self._stop.set()
        self._renewer.join()
        current = _read(self._client, self._name, self._settings)
        if current is None or current.token != self._lease.token:
            return
        client, name = self._client, self._name
        empty = self._created and not mlflow_store.retried(
            lambda: client.search_model_versions(f"name = '{name}'"),
            f"listing the versions of {name}",
            self._settings,
        )
        mlflow_store.retried(
            (lambda: client.delete_registered_model(name))
            if empty
            else (lambda: client.delete_registered_model_tag(name, LOCK_TAG)),
            f"releasing the promotion lock of {name}",
            self._settings,
        )

    def _renew(self) -> None:
        """Push the lease's expiry on while held; a store that stays away ends the renewals
        (the holder's :meth:`check_held` then fails rather than move anything)."""
        while not self._stop.wait(self._lease_seconds / 3):
            try:
                current = _read(self._client, self._name, self._settings)
                if current is None or current.token != self._lease.token:
                    return
                expires = time.time() + self._lease_seconds
                renewed = Lease(self._lease.token, expires, self._lease.holder)
                if not _write(self._client, self._name, renewed, self._settings):
                    return
            except EmoFlowError:
                return


@contextmanager
def promotion_lock(
    client: mlflow.MlflowClient,
    name: str,
    wait_seconds: float,
    lease_seconds: float,
    settings: MlflowSettings,
) -> Iterator[PromotionLock]:
    """Hold ``name``'s promotion lock for the block; wait up to ``wait_seconds`` for it."""
    created = False
    holder = f"{socket.gethostname()}:{os.getpid()}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_seconds
    while True:
        current = _read(client, name, settings)
        if current is None or current.expires < time.time():
            created = _ensure_registered(client, name, settings) or created
            mine = Lease(token, time.time() + lease_seconds, holder)
            if _write(client, name, mine, settings):
                time.sleep(SETTLE_SECONDS)
                current = _read(client, name, settings)
                if current is not None and current.token == token:
                    break
        if time.monotonic() > deadline:
            raise PromotionBusy(
                f"{name}: another promotion ({current.holder if current else 'unknown'}) held "
                f"the promotion lock for the whole {wait_seconds:g} s wait "
                "(promote.lock_wait_seconds)"
            )
        time.sleep(random.uniform(0.2, 1.0))  # promoters that collided try again apart
    lock = PromotionLock(client, name, current, settings, created)
    try:
        yield lock
    finally:
        lock.release()


def _write(client: mlflow.MlflowClient, name: str, lease: Lease, settings: MlflowSettings) -> bool:
    """Write ``lease`` into the lock tag; False when another promoter's write of the tag
    collided with this one (the store refuses the second insert of the tag), which is a
    lost race for the lock, not a failure."""
    try:
        mlflow_store.retried(
            lambda: client.set_registered_model_tag(name, LOCK_TAG, lease.encode()),
            f"writing the promotion lock of {name}",
            settings,
        )
    except MlflowException as err:
        if "unique constraint" not in str(err).lower():
            raise
        return False
    return True


def _read(client: mlflow.MlflowClient, name: str, settings: MlflowSettings) -> Lease | None:
    """The lease on ``name``; None when free (or when no model of that name exists yet)."""
    try:
        model = mlflow_store.retried(
            lambda: client.get_registered_model(name), f"reading the lock of {name}", settings
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    value = model.tags.get(LOCK_TAG)
    return Lease.decode(value) if value else None


def _ensure_registered(client: mlflow.MlflowClient, name: str, settings: MlflowSettings) -> bool:
    """The lock lives on the registered model, so the first promoter of a name creates it
    (empty: versions come only from candidates that pass). True when this call created it."""
    try:
        mlflow_store.retried(
            lambda: client.create_registered_model(name), f"creating {name}", settings
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return False
    return True
