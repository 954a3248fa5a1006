"""The record splits a training run reads are logged on it as datasets (name, source, digest),
and the model card gives the digests the run logged."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from emoflow.components.manifest import Dataset, describe_pixels
from emoflow.components.model_kinds import SEQUENCES_DIR
from emoflow.components.provenance import content_hash
from emoflow.components.records.run_inputs import TRAINING_SPLITS, dataset_name, log_splits
from emoflow.components.records.tfrecords import shard_paths, write_split
from tests.consumers import tracking


def _faces(shade: int) -> Dataset:
    """Three training faces and one validation face, ``shade`` the first face's grey."""
    splits = ["train", "train", "train", "val"]
    manifest = pd.DataFrame(
        {
            "id": [f"f{i}" for i in range(4)],
            "dataset": "fer2013",
            "split": splits,
            "label": ["happy", "sad", "fear", "happy"],
            "subject": "",
            "sequence": "",
            "frame": -1,
            "source": "fer2013.csv",
        }
    )
    pixels = np.stack([np.full((48, 48), value, np.uint8) for value in (shade, 40, 80, 120)])
    return Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)


def _write(dataset: Dataset, folder: Path) -> None:
    for split in TRAINING_SPLITS:
        write_split(dataset, split, folder, examples_per_shard=2)


def _run(folder: Path, uri: str) -> Run:
    """A run of the store at ``uri`` that logged the training splits of ``folder``."""
    with tracking(uri):
        client = mlflow.MlflowClient()
        # an experiment of this store: the active one may be another test's
        experiment = client.get_experiment_by_name("inputs")
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment("inputs")
        )
        with mlflow.start_run(experiment_id=experiment_id) as run:
            log_splits(folder, TRAINING_SPLITS)
        return client.get_run(run.info.run_id)


def _logged(folder: Path, uri: str) -> dict:
    return {logged.dataset.name: logged for logged in _run(folder, uri).inputs.dataset_inputs}


def test_a_run_logs_the_splits_it_reads_with_their_content_hash_as_digest(tmp_path, mlflow_uri):
    folder = tmp_path / "fer2013"
    _write(_faces(shade=0), folder)
    logged = _logged(folder, mlflow_uri)
    assert set(logged) == {"fer2013-train", "fer2013-val"}
    for split, context in TRAINING_SPLITS.items():
        entry = logged[f"fer2013-{split}"]
        assert entry.dataset.digest == content_hash(shard_paths(folder, [split]))
        assert {t.key: t.value for t in entry.tags}[MLFLOW_DATASET_CONTEXT] == context
        assert entry.dataset.source_type == "local"
        assert json.loads(entry.dataset.source) == {"uri": str(folder.resolve())}
        columns = json.loads(entry.dataset.schema)["mlflow_colspec"]
        assert {c["name"]: c["type"] for c in columns} == {
            "image": "binary",
            "label": "long",
            "id": "binary",
        }
    assert logged["fer2013-train"].dataset.digest != logged["fer2013-val"].dataset.digest
    assert len(shard_paths(folder, ["train"])) == 2, "the digest covers every shard of a split"


def test_other_faces_in_a_split_give_it_another_digest(tmp_path, mlflow_uri):
    first, second = tmp_path / "a" / "fer2013", tmp_path / "b" / "fer2013"
    _write(_faces(shade=0), first)
    _write(_faces(shade=1), second)
    before, after = _logged(first, mlflow_uri), _logged(second, mlflow_uri)
    assert before["fer2013-train"].dataset.digest != after["fer2013-train"].dataset.digest
    assert before["fer2013-val"].dataset.digest == after["fer2013-val"].dataset.digest


def test_the_model_card_gives_the_digests_the_training_run_logged(tmp_path, mlflow_uri):
    from emoflow.components.judging.promote import training_data

    folder = tmp_path / "fer2013"
    _write(_faces(shade=0), folder)
    run = _run(folder, mlflow_uri)
    card_data = training_data({"data.folder": str(folder)}, run.inputs)
    assert card_data.records == {
        f"fer2013-{split}": content_hash(shard_paths(folder, [split])) for split in TRAINING_SPLITS
    }
    assert training_data({"data.folder": str(folder)}, None).records == {}, "an older run"


def test_sequence_records_are_named_for_their_dataset_and_kind():
    assert dataset_name(Path("data/processed/ckplus") / SEQUENCES_DIR, "val") == (
        "ckplus-sequences-val"
    )
    assert dataset_name(Path("data/processed/fer2013"), "train") == "fer2013-train"
