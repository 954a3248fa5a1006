"""Registry operations: register once per run, tag, move aliases, list, roll back.

Everything goes through the MLflow client's own operations. Registration is idempotent
(a run has at most one version of a name); callers retry these operations while the store is
busy or away (``components.mlflow_store.retried``). A version is only created after every
check has passed, so a failure never leaves a version that claims a blessing it did not get.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

from emoflow.components.errors import EmoFlowError
from emoflow.components.mlflow_store import retried
from emoflow.components.settings import MlflowSettings

CHAMPION = "champion"
CHALLENGER = "challenger"
BLESSING_TAG = "blessing"


class RegistryError(EmoFlowError, RuntimeError):
    """The registry cannot be reached or does not hold what was asked for."""


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


def rollback(client: mlflow.MlflowClient, name: str, settings: MlflowSettings) -> tuple[str, str]:
    """Move champion to the newest blessed version older than the current champion.

    Each call is retried on its own while the store is busy: retrying the whole would, after
    a move that went through, roll back one version further.
    """
    current = retried(lambda: champion(client, name), f"reading {name}'s champion", settings)
    if current is None:
        raise RegistryError(f"{name}: has no champion to roll back")
    earlier = [
        v
        for v in retried(lambda: versions(client, name), f"listing {name}", settings)
        if int(v.version) < int(current.version) and v.tags.get(BLESSING_TAG) == "passed"
    ]
    if not earlier:
        raise RegistryError(f"{name}: no blessed version older than champion v{current.version}")
    target = earlier[-1].version
    retried(
        lambda: client.set_registered_model_alias(name, CHAMPION, target),
        "moving the champion alias",
        settings,
    )
    retried(
        lambda: client.set_model_version_tag(name, current.version, "rolled_back", "true"),
        "tagging the rolled-back version",
        settings,
    )
    return current.version, target


def _info(version) -> VersionInfo:
    return VersionInfo(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        aliases=tuple(getattr(version, "aliases", ()) or ()),
        tags=dict(version.tags or {}),
    )
