"""Evaluation metrics that the gate relies on: calibration, flip TTA, shared classes; the
files evaluate writes for DVC (headline metrics, plots) and for the gate (every score)."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from emoflow.components import mlflow_store
from emoflow.components.artifacts import read_json
from emoflow.components.judging.evaluate import write_evaluation
from emoflow.components.judging.gate import judge
from emoflow.components.judging.scores import EvaluationError, calibration, score_network
from emoflow.components.manifest import Dataset, describe_pixels
from emoflow.components.provenance import content_hash
from emoflow.components.records.tfrecords import shard_paths, write_split
from emoflow.components.settings import EvaluateSettings, MlflowSettings


def test_calibrated_predictions_have_zero_ece():
    confidence = np.array([0.8] * 10)
    correct = np.array([True] * 8 + [False] * 2)
    ece, curve = calibration(confidence, correct, bins=10)
    assert ece == pytest.approx(0.0)
    assert curve["count"][8] == 10 and curve["accuracy"][8] == pytest.approx(0.8)


def test_overconfidence_is_the_gap():
    ece, _ = calibration(
        np.array([0.95, 0.95, 0.55, 0.55]), np.array([True, False, True, False]), bins=10
    )
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def _left_vs_right() -> keras.Model:
    """Class 0 when the left half is brighter, class 1 when the right half is."""
    inputs = keras.Input((48, 48, 1))
    left = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, :24], axis=(1, 2, 3)))(inputs)
    right = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, 24:], axis=(1, 2, 3)))(inputs)
    logits = keras.layers.Lambda(lambda t: keras.ops.stack([t[0], t[1]], axis=1) * 50)(
        [left, right]
    )
    return keras.Model(inputs, keras.layers.Softmax()(logits))


@pytest.fixture
def processed(tmp_path):
    """fer2013 test split: left-bright faces labelled angry; ckplus: right-bright happy."""

    def make(name: str, label: str, bright_left: bool, split: str):
        pixels = np.zeros((4, 48, 48), np.uint8)
        pixels[:, :, slice(0, 24) if bright_left else slice(24, 48)] = 200
        manifest = pd.DataFrame(
            {"id": [f"{name}-{i}" for i in range(4)], "label": label, "split": split}
        )
        (tmp_path / name).mkdir()
        write_split(
            Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels),
            split,
            tmp_path / name,
            10,
        )

    make("fer2013", "angry", True, "test")
    make("ckplus", "happy", False, "train")
    return tmp_path


def test_scores_in_dataset_and_cross_dataset(processed):
    scores = score_network(
        _left_vs_right(), ("angry", "happy"), processed, EvaluateSettings(cross_splits=["train"])
    )
    assert scores["fer2013"].metrics["accuracy"] == 1.0
    assert scores["ckplus"].metrics["accuracy"] == 1.0
    assert list(scores["ckplus"].metrics["per_class"]) == ["happy"], (
        "only classes present are scored"
    )
    assert scores["fer2013"].matrix.tolist() == [[4, 0], [0, 0]]


def test_flip_tta_averages_a_face_with_its_mirror(processed):
    settings = EvaluateSettings(cross_splits=["train"], tta="flip")
    scores = score_network(_left_vs_right(), ("angry", "happy"), processed, settings)
    # The mirror of a left-bright face is right-bright: the average is a coin toss.
    curve = scores["fer2013"].reliability
    [filled] = [i for i, n in enumerate(curve["count"]) if n]
    assert curve["count"][filled] == 4 and curve["confidence"][filled] == pytest.approx(
        0.5, abs=1e-3
    )
    without = score_network(
        _left_vs_right(), ("angry", "happy"), processed, EvaluateSettings(cross_splits=["train"])
    )
    assert without["fer2013"].reliability["confidence"][9] == pytest.approx(1.0, abs=1e-3)


def test_no_shared_class_is_a_clear_error(processed):
    with pytest.raises(EvaluationError, match="shares no class with the emotion set"):
        score_network(
            _left_vs_right(), ("fear", "sad"), processed, EvaluateSettings(cross_splits=["train"])
        )


def test_metrics_hold_the_headline_and_scores_every_score_the_gate_reads(
    processed, tmp_path, mlflow_uri
):
    settings = EvaluateSettings(
        cross_splits=["train"],
        out_dir=tmp_path / "evaluation",
        predictions_dir=tmp_path / "predictions",
        figures_dir=tmp_path / "figures",
    )
    emotions = ("angry", "happy")
    scores = score_network(_left_vs_right(), emotions, processed, settings)
    history = {  # as Keras gives it: a list per metric, over the epochs
        "loss": [0.9, 0.5],
        "accuracy": [0.5, 0.8],
        "val_loss": [1.0, 0.7],
        "val_accuracy": [0.4, 0.6],
        "learning_rate": [0.001, 0.001],
    }
    mlflow_settings = MlflowSettings(tracking_uri=mlflow_uri)
    mlflow_store.connect(mlflow_settings, create=True)
    with mlflow.start_run() as run:
        pass

    scored = {processed / "fer2013": ["test"], processed / "ckplus": ["train"]}
    outputs = write_evaluation(
        "convnn-pair", run.info.run_id, scores, emotions, history, settings, mlflow_settings, scored
    )

    # dvc metrics show: accuracy, macro-F1 and calibration in-dataset, accuracy across.
    assert read_json(outputs.metrics) == {
        "fer2013": {"accuracy": 1.0, "macro_f1": 1.0, "ece": scores["fer2013"].metrics["ece"]},
        "ckplus": {"accuracy": 1.0},
    }
    every = read_json(outputs.scores)
    assert every["ckplus"]["per_class"]["happy"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 4,
    }
    verdict = judge(every, None, {"fer2013.per_class.*.recall": 0.9, "ckplus.macro_f1": 0.9}, {})
    assert verdict.passed and [c.metric for c in verdict.checks] == [
        "ckplus.macro_f1",
        "fer2013.per_class.angry.recall",
    ]
    logged = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert {
        (i.dataset.name, {t.key: t.value for t in i.tags}["mlflow.data.context"], i.dataset.digest)
        for i in logged
    } == {
        (f"{name}-{split}", "evaluation", content_hash(shard_paths(folder, [split])))
        for folder, [split] in scored.items()
        for name in [folder.name]
    }
    predictions = pd.read_csv(outputs.predictions)
    assert predictions.groupby("dataset").size().to_dict() == {"ckplus": 4, "fer2013": 4}
    assert set(predictions.columns) == {"dataset", "actual", "predicted"}
    curves = pd.read_csv(outputs.curves)
    assert curves.to_dict("list") == {
        "epoch": [1, 2, 1, 2],
        "split": ["train", "train", "val", "val"],
        "loss": [0.9, 0.5, 1.0, 0.7],
        "accuracy": [0.5, 0.8, 0.4, 0.6],
    }
