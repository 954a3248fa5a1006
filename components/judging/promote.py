"""Promote: judge a candidate against the thresholds and the current champion, then register.

The blessing is the artifact: it records every threshold's value, bound and verdict.
A candidate that passes the value thresholds is registered (once per run) with the
``challenger`` alias; ``champion`` moves to it only when the change thresholds pass too
(the TFX Evaluator -> Pusher contract). The champion is re-scored here, on the same data as
the candidate, so a change in the evaluation data never passes for a change in the model.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow

from components import mlflow_store
from components.artifacts import read_json, write_json, write_text
from components.judging import registry
from components.judging.evaluate import (
    METRICS_FILE,
    EvaluationError,
    run_cell,
    score_model,
    scored_folders,
)
from components.judging.gate import Check, Verdict, judge
from components.judging.model_card import CARD_FILE, TrainingData, model_card
from components.model_files import RUN_FILE
from components.model_kinds import SEQUENCES_DIR
from components.provenance import TRAINING_DATA_TAG, read_provenance
from components.records.tfrecords import shard_paths
from components.settings import EvaluateSettings, MlflowSettings, ModelCell, PromoteSettings


@dataclass(frozen=True)
class Blessing:
    passed: bool
    value_passed: bool
    checks: list[Check]
    model_name: str
    version: str | None  # the registered version, when the value thresholds passed
    report: Path


def promote(
    model_dir: Path,
    processed: Path,
    sequence_dataset: str,
    evaluate_settings: EvaluateSettings,
    settings: PromoteSettings,
    mlflow_settings: MlflowSettings,
) -> Blessing:
    """Gate the candidate in ``model_dir`` (scored in ``<evaluate.out_dir>/<model_dir.name>``);
    ``processed`` and ``sequence_dataset`` name the records it was scored on, as for evaluate."""
    if not (model_dir / RUN_FILE).exists():
        raise EvaluationError(
            f"{model_dir}: no trained candidate here (run the train stage for it first)"
        )
    run = read_json(model_dir / RUN_FILE)
    cell = run_cell(run)
    name = settings.registered_name(cell)
    metrics = read_json(evaluate_settings.out_dir / model_dir.name / METRICS_FILE)
    uri = mlflow_store.tracking_uri(mlflow_settings)
    retry = lambda action, what: registry.with_retries(action, what, uri, settings.retries)  # noqa: E731
    client = retry(lambda: mlflow_store.connect(mlflow_settings), "connecting")

    current = retry(lambda: registry.champion(client, name), f"reading the champion of {name}")
    champion_metrics = (
        _rescore(name, current.version, cell, processed, sequence_dataset, evaluate_settings)
        if current
        else None
    )
    verdict = judge(
        metrics, champion_metrics, settings.value_thresholds, settings.change_thresholds
    )
    version = None
    trained_on = training_data(run["run_id"])
    if verdict.value_passed:
        tags = _version_tags(
            cell, run, scored_folders(cell, processed, sequence_dataset, evaluate_settings), verdict
        )
        tags[TRAINING_DATA_TAG] = trained_on.kind
        version = retry(
            lambda: registry.register_once(client, name, run["run_id"], run["model_uri"], tags),
            f"registering {name}",
        )
        card = model_card(name, version, cell, run["run_id"], trained_on, metrics, verdict)
        retry(
            lambda: client.update_model_version(name, version, description=card),
            "writing the model card",
        )
        retry(
            lambda: client.set_registered_model_alias(name, registry.CHALLENGER, version),
            "setting the challenger alias",
        )
        if verdict.passed:
            retry(
                lambda: client.set_registered_model_alias(name, registry.CHAMPION, version),
                "moving the champion alias",
            )
    if version is None:  # refused: the card of the candidate, for the reports
        card = model_card(name, None, cell, run["run_id"], trained_on, metrics, verdict)
    write_text(card_path(settings.out_dir, model_dir.name), card)
    report = settings.out_dir / f"{model_dir.name}.json"
    blessing = {
        **verdict.as_dict(),
        "model_name": name,
        "version": version,
        "run_id": run["run_id"],
        "champion_before": current.version if current else None,
        "champion_metrics": champion_metrics,
    }
    write_json(report, blessing)
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_dict(blessing, "promotion/blessing.json")
        mlflow.log_text(card, CARD_FILE)
        mlflow.set_tag(registry.BLESSING_TAG, "passed" if verdict.passed else "failed")
    return Blessing(verdict.passed, verdict.value_passed, verdict.checks, name, version, report)


def _rescore(
    name: str,
    version: str,
    cell: ModelCell,
    processed: Path,
    sequence_dataset: str,
    settings: EvaluateSettings,
) -> dict:
    """The champion's metrics on today's data, by the same scoring code as the candidate's."""
    network = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model().network
    scores = score_model(network, cell, processed, sequence_dataset, settings)
    return {dataset: s.metrics for dataset, s in scores.items()}


def _version_tags(
    cell: ModelCell, run: dict, scored: list[Path], verdict: Verdict
) -> dict[str, str]:
    """What a consumer needs to trace a version back: code, data, settings and the verdict."""
    return {
        "git_commit": _git_commit(),
        "data_hash": _data_hash(scored),
        "params_hash": _params_hash(run["run_id"]),
        "architecture": cell.architecture,
        "emotion_set": cell.emotion_set,
        "emotions": ",".join(cell.emotions),
        registry.BLESSING_TAG: "passed" if verdict.passed else "failed",
        "value_gate": "passed" if verdict.value_passed else "failed",
    }


def card_path(out_dir: Path, key: str) -> Path:
    """Where promote leaves a candidate's model card beside its blessing."""
    return out_dir / f"{key}.{CARD_FILE}"


def training_data(run_id: str) -> TrainingData:
    """The training data of a run, from the records folder its ``data.folder`` param names."""
    folder = Path(mlflow.get_run(run_id).data.params.get("data.folder", "unknown"))
    dataset = folder.parent if folder.name == SEQUENCES_DIR else folder
    record = read_provenance(dataset)
    shards = shard_paths(folder, ["train", "val"]) if folder.is_dir() else []
    return TrainingData(
        dataset=f"{dataset.name} ({folder.name})" if dataset != folder else dataset.name,
        source=record["source"],
        kind=record["kind"],
        content_hash=_files_hash(shards) if shards else "unknown",
        rows=record.get("rows", {}),
    )


def _params_hash(run_id: str) -> str:
    """Hash of the training run's logged settings: equal hashes, equal recipes."""
    params = mlflow.get_run(run_id).data.params
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _data_hash(folders: list[Path]) -> str:
    """Hash of the evaluation records, so two versions can be compared on the same data."""
    return _files_hash(
        [shard for folder in folders for shard in shard_paths(folder, ["train", "val", "test"])]
    )


def _files_hash(paths: list) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"
