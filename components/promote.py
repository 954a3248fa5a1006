"""Promote: the gate's blessing, and on a pass a registered version with the champion alias.

The blessing is the artifact: it records every threshold's value, bound and verdict, and
only a passing blessing moves the alias (the TFX Evaluator -> Pusher contract).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow

from components import tracking
from components.artifacts import read_json, write_json
from components.evaluate import flatten_metrics
from components.settings import MlflowSettings, PromoteSettings
from components.train import RUN_FILE


@dataclass(frozen=True)
class Blessing:
    passed: bool
    checks: list[dict[str, object]]
    model_name: str
    version: str | None  # registered version, when passed


def judge(metrics: dict, thresholds: dict[str, float]) -> tuple[bool, list[dict[str, object]]]:
    """Compare flattened metrics with lower bounds; a missing metric fails its threshold.

    No thresholds means no blessing: an unguarded gate would promote anything.
    """
    flat = flatten_metrics(metrics)
    checks: list[dict[str, object]] = []
    for key, bound in sorted(thresholds.items()):
        value = flat.get(key)
        checks.append(
            {
                "metric": key,
                "value": value,
                "bound": bound,
                "passed": value is not None and value >= bound,
                "reason": "missing metric" if value is None else f"{value:.4f} {'>=' if value >= bound else '<'} {bound}",
            }
        )
    return bool(checks) and all(c["passed"] for c in checks), checks


def promote(
    model_dir: Path, metrics_path: Path, settings: PromoteSettings, mlflow_settings: MlflowSettings
) -> Blessing:
    """Judge the candidate; on a pass register it (once per run) and point the alias at it."""
    passed, checks = judge(read_json(metrics_path), settings.thresholds)
    run = read_json(model_dir / RUN_FILE)
    client = tracking.connect(mlflow_settings)
    version = None
    if passed:
        version = _register_once(client, settings.model_name, run["run_id"], run["model_uri"])
        client.set_registered_model_alias(settings.model_name, settings.alias, version)
        client.set_model_version_tag(settings.model_name, version, "blessing", "passed")
    blessing = Blessing(passed, checks, settings.model_name, version)
    write_json(
        settings.report,
        {
            "passed": passed,
            "model_name": settings.model_name,
            "alias": settings.alias,
            "version": version,
            "run_id": run["run_id"],
            "checks": checks,
        },
    )
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_dict(read_json(settings.report), "promotion/blessing.json")
        mlflow.set_tag("blessing", "passed" if passed else "failed")
    return blessing


def _register_once(client: mlflow.MlflowClient, name: str, run_id: str, model_uri: str) -> str:
    """Re-promoting the same run reuses its version instead of registering a duplicate."""
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return str(min(int(v.version) for v in existing))
    return str(mlflow.register_model(model_uri, name).version)
