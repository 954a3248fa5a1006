"""Registry operations: register once per run, tag, move aliases, list, roll back.

Everything goes through the MLflow client's own operations. Registration is idempotent
(a run has at most one version of a name) and retried when the store is briefly away;
a version is only created after every check has passed, so a failure never leaves a
version that claims a blessing it did not get.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from components.errors import EmoFlowError

CHAMPION = "champion"
CHALLENGER = "challenger"
BLESSING_TAG = "blessing"

T = TypeVar("T")


class RegistryError(EmoFlowError, RuntimeError):
    """The registry cannot be reached or does not hold what was asked for."""


def with_retries(
    action: Callable[[], T], what: str, uri: str, retries: int, delay: float = 1.0
) -> T:
    """Run ``action``; on connection-type failures retry with backoff, then fail clearly."""
    for attempt in range(retries + 1):
        try:
            return action()
        except MlflowException as err:
            if err.get_http_status_code() < 500 and not _looks_unreachable(err):
                raise  # a real answer from the store (bad name, ...): retrying cannot help
            last = err
        except OSError as err:  # connection refused, unreadable sqlite file, ...
            last = err
        if attempt < retries:
            time.sleep(delay * 2**attempt)
    raise RegistryError(
        f"MLflow store {uri}: {what} failed after {retries + 1} tries: {last}"
    ) from None


def _looks_unreachable(err: MlflowException) -> bool:
    text = str(err).lower()
    return any(
        s in text
        for s in (
            "connection",
            "unable to open database",
            "database is locked",
            "max retries",
            "timed out",
        )
    )


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    tags: dict[str, str]


def champion(client: mlflow.MlflowClient, name: str) -> VersionInfo | None:
    """The version under the champion alias, or None for a name with no champion yet."""
    try:
        return _info(client.get_model_version_by_alias(name, CHAMPION))
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "not found" in str(err).lower():
            return None
        raise


def register_once(
    client: mlflow.MlflowClient, name: str, run_id: str, model_uri: str, tags: dict[str, str]
) -> str:
    """The version of ``name`` made from ``run_id``, registering it only the first time.

    Two processes racing on the same run may both register; the later one sees two
    versions of one run, keeps the oldest and deletes its own, so both end on one version.
    """
    existing = _versions_of_run(client, name, run_id)
    if not existing:
        created = mlflow.register_model(model_uri, name, tags=tags)
        existing = _versions_of_run(client, name, run_id)
        for duplicate in existing[1:]:
            if duplicate == str(created.version):
                client.delete_model_version(name, duplicate)
    version = existing[0]
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return version


def _versions_of_run(client: mlflow.MlflowClient, name: str, run_id: str) -> list[str]:
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return sorted((str(v.version) for v in found), key=int)


def versions(client: mlflow.MlflowClient, name: str) -> list[VersionInfo]:
    """All versions of a registered model, oldest first, with aliases and tags.

    Aliases come from the registered model: version searches leave them out.
    """
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    found = client.search_model_versions(f"name = '{name}'")
    infos = [_info(v) for v in found]
    return sorted(
        (
            VersionInfo(
                v.name, v.version, v.run_id, tuple(sorted(aliases.get(v.version, []))), v.tags
            )
            for v in infos
        ),
        key=lambda v: int(v.version),
    )


def model_names(client: mlflow.MlflowClient) -> list[str]:
    return sorted(m.name for m in client.search_registered_models())


def rollback(client: mlflow.MlflowClient, name: str) -> tuple[str, str]:
    """Move champion to the newest blessed version older than the current champion."""
    current = champion(client, name)
    if current is None:
        raise RegistryError(f"{name}: has no champion to roll back")
    earlier = [
        v
        for v in versions(client, name)
        if int(v.version) < int(current.version) and v.tags.get(BLESSING_TAG) == "passed"
    ]
    if not earlier:
        raise RegistryError(f"{name}: no blessed version older than champion v{current.version}")
    target = earlier[-1].version
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_model_version_tag(name, current.version, "rolled_back", "true")
    return current.version, target


def _info(version) -> VersionInfo:
    return VersionInfo(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        aliases=tuple(getattr(version, "aliases", ()) or ()),
        tags=dict(version.tags or {}),
    )
