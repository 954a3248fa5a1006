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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import RunInputs
from mlflow.models import Model
from mlflow.models.model import MLMODEL_FILE_NAME as MLMODEL_FILE
from mlflow.pyfunc import FLAVOR_NAME
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from emoflow.components import mlflow_store
from emoflow.components.artifacts import read_json, write_json, write_text
from emoflow.components.face_views import load_network
from emoflow.components.judging import registry
from emoflow.components.judging.evaluate import (
    SCORES_FILE,
    EvaluationError,
    run_cell,
    score_model,
    scored_splits,
)
from emoflow.components.judging.gate import Check, Verdict, judge
from emoflow.components.judging.model_card import (
    CARD_FILE,
    TrainingData,
    model_card,
    registered_model_description,
)
from emoflow.components.judging.promotion_lock import promotion_lock
from emoflow.components.model_files import MODEL_FILE, RUN_FILE
from emoflow.components.model_kinds import SEQUENCES_DIR
from emoflow.components.provenance import TRAINING_DATA_TAG, content_hash, read_provenance
from emoflow.components.records.run_inputs import TRAINING_SPLITS
from emoflow.components.records.tfrecords import shard_paths
from emoflow.components.settings import EvaluateSettings, MlflowSettings, ModelCell, PromoteSettings


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
    metrics = read_json(evaluate_settings.out_dir / model_dir.name / SCORES_FILE)
    client = mlflow_store.connect(mlflow_settings)
    retried = lambda action, what: mlflow_store.retried(action, what, mlflow_settings)  # noqa: E731
    trained = retried(lambda: mlflow.get_run(run["run_id"]), "reading the run")
    run_params = trained.data.params
    trained_on = training_data(run_params, trained.inputs)
    scored = list(scored_splits(cell, processed, sequence_dataset, evaluate_settings))
    version = None
    with promotion_lock(
        client, name, settings.lock_wait_seconds, settings.lock_lease_seconds, mlflow_settings
    ) as lock:
        # Read, compare and move in one turn: no other promotion of this name runs meanwhile.
        current = retried(lambda: registry.champion(client, name), f"reading {name}'s champion")
        champion_metrics = (
            _rescore(
                client, name, current.version, cell, processed, sequence_dataset, evaluate_settings
            )
            if current
            else None
        )
        verdict = judge(
            metrics, champion_metrics, settings.value_thresholds, settings.change_thresholds
        )
        if verdict.value_passed:
            tags = _version_tags(cell, run_params, scored, verdict)
            tags[TRAINING_DATA_TAG] = trained_on.kind
            version = retried(
                lambda: registry.register_once(client, name, run["run_id"], run["model_uri"], tags),
                f"registering {name}",
            )
            card = model_card(name, version, cell, run["run_id"], trained_on, metrics, verdict)
            retried(
                lambda: client.update_model_version(name, version, description=card),
                "writing the model card",
            )
            retried(
                lambda: client.update_registered_model(
                    name, description=registered_model_description(name, cell)
                ),
                "describing the registered model",
            )
            retried(
                lambda: client.set_registered_model_alias(name, registry.CHALLENGER, version),
                "setting the challenger alias",
            )
            if verdict.passed:
                lock.check_held()
                retried(
                    lambda: client.set_registered_model_alias(name, registry.CHAMPION, version),
                    "moving the champion alias",
                )
        after = retried(lambda: registry.champion(client, name), f"reading {name}'s champion")
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
        "champion_after": after.version if after else None,  # read back after the move
        "champion_metrics": champion_metrics,
    }
    write_json(report, blessing)

    def log_blessing() -> None:
        with mlflow.start_run(run_id=run["run_id"]):
            mlflow.log_dict(blessing, "promotion/blessing.json")
            mlflow.log_text(card, CARD_FILE)
            mlflow.set_tag(registry.BLESSING_TAG, "passed" if verdict.passed else "failed")

    retried(log_blessing, "logging the blessing")
    return Blessing(verdict.passed, verdict.value_passed, verdict.checks, name, version, report)


def _rescore(
    client: mlflow.MlflowClient,
    name: str,
    version: str,
    cell: ModelCell,
    processed: Path,
    sequence_dataset: str,
    settings: EvaluateSettings,
) -> dict:
    """The champion's metrics on today's data, by the same scoring code as the candidate's.

    Only the champion's Keras file is loaded, in Keras' safe mode: loading the registry model
    itself would run its Python code (its code file, or the pickle of a model logged before
    models from code) in this process, so whoever could write to the registry could run code
    in the pipeline.
    """
    with tempfile.TemporaryDirectory(prefix="emoflow-champion-") as folder:
        network = load_network(_registered_keras_file(client, name, version, Path(folder)))
    scores = score_model(network, cell, processed, sequence_dataset, settings)
    return {dataset: s.metrics for dataset, s in scores.items()}


def _registered_keras_file(
    client: mlflow.MlflowClient, name: str, version: str, folder: Path
) -> Path:
    """Download a registered version's network alone: the ``.keras`` file among the artifacts
    its MLmodel file lists (image and sequence models both carry exactly one)."""
    source = client.get_model_version_download_uri(name, version)
    mlmodel = mlflow.artifacts.download_artifacts(f"{source}/{MLMODEL_FILE}", dst_path=folder)
    artifacts = Model.load(mlmodel).flavors[FLAVOR_NAME].get("artifacts", {})
    networks = [
        a["path"] for a in artifacts.values() if a["path"].endswith(Path(MODEL_FILE).suffix)
    ]
    if len(networks) != 1:
        raise EvaluationError(f"{name} v{version}: no single Keras network among its artifacts")
    return Path(mlflow.artifacts.download_artifacts(f"{source}/{networks[0]}", dst_path=folder))


def _version_tags(
    cell: ModelCell, run_params: dict[str, str], scored: list[Path], verdict: Verdict
) -> dict[str, str]:
    """What a consumer needs to trace a version back: code, data, settings and the verdict."""
    return {
        "git_commit": git_commit(),
        "data_hash": _data_hash(scored),
        "params_hash": _params_hash(run_params),
        "architecture": cell.architecture,
        "emotion_set": cell.emotion_set,
        "emotions": ",".join(cell.emotions),
        registry.BLESSING_TAG: "passed" if verdict.passed else "failed",
        "value_gate": "passed" if verdict.value_passed else "failed",
    }


def card_path(out_dir: Path, key: str) -> Path:
    """Where promote leaves a candidate's model card beside its blessing."""
    return out_dir / f"{key}.{CARD_FILE}"


def training_data(run_params: dict[str, str], inputs: RunInputs | None) -> TrainingData:
    """The training data of a run: the records folder its ``data.folder`` param names, and the
    datasets it logged reading them (their digests are the content hashes it trained on)."""
    folder = Path(run_params.get("data.folder", "unknown"))
    dataset = folder.parent if folder.name == SEQUENCES_DIR else folder
    record = read_provenance(dataset)
    return TrainingData(
        dataset=f"{dataset.name} ({folder.name})" if dataset != folder else dataset.name,
        source=record["source"],
        kind=record["kind"],
        records=_training_records(inputs),
        rows=record.get("rows", {}),
    )


def _training_records(inputs: RunInputs | None) -> dict[str, str]:
    """Name -> digest of the datasets a run logged in the contexts of training."""
    contexts = set(TRAINING_SPLITS.values())
    records = {}
    for logged in inputs.dataset_inputs if inputs else []:
        if {t.key: t.value for t in logged.tags}.get(MLFLOW_DATASET_CONTEXT) in contexts:
            records[logged.dataset.name] = logged.dataset.digest
    return records


def _params_hash(params: dict[str, str]) -> str:
    """Hash of the training run's logged settings: equal hashes, equal recipes."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _data_hash(folders: list[Path]) -> str:
    """Hash of the evaluation records, so two versions can be compared on the same data."""
    return content_hash(
        [shard for folder in folders for shard in shard_paths(folder, ["train", "val", "test"])]
    )


def git_commit() -> str:
    """HEAD, marked ``-dirty`` when tracked code differs from it (dvc.lock aside, which every
    run rewrites), so a tag never claims a commit the model's code was not."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if changed.stdout.strip() else "")
