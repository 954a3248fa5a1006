"""Training: sequence data, fitting batches, recipes, and runs that survive being killed.

The slow tests share one tiny project (sample -> ingest -> preprocess); every architecture
trains one epoch there, is evaluated and is registered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from emoflow.components.manifest import Dataset, describe_pixels
from emoflow.components.model_kinds import SEQUENCE_ARCHITECTURES, SEQUENCES_DIR, records_folder
from emoflow.components.provenance import (
    SYNTHETIC,
    SYNTHETIC_WARNING,
    TRAINING_DATA_TAG,
    SyntheticSampleWarning,
    content_hash,
)
from emoflow.components.records.input_pipelines import balanced_class_weights, fitting_batches
from emoflow.components.records.run_inputs import TRAINING_SPLITS, dataset_name
from emoflow.components.records.sequences import frame_sequences, windows
from emoflow.components.records.tfrecords import read_sequences, shard_paths, write_sequences
from emoflow.components.settings import ParamsError, load_params
from emoflow.components.training import checkpoints
from emoflow.components.training.checkpoints import ResumableEarlyStopping, Resumed
from emoflow.flows import stages
from tests.conftest import ROOT, TINY_OVERRIDES, write_params
from tests.consumers import image_column

EMOTIONS = ["angry", "happy", "surprise"]
# One epoch of the smallest networks: each architecture's plumbing, not its accuracy.
TINY_TRAIN = {
    "emotion_sets": {"ahs": EMOTIONS},
    "epochs": 1,
    "batch_size": 32,
    "dense_units": 8,
    "sequence_filters": 2,
    "modern": {"widths": [4, 8], "convs_per_block": 1},
    "transfer": {"head_epochs": 1},
    # Merged into params.yaml's modern recipe: SGD, its schedule and the crops stay on.
    "overrides": {
        "modern": {
            "epochs": 1,
            "batch_size": 32,
            "dense_units": 8,
            "early_stopping_patience": 1,
            "modern": {"widths": [4, 8], "convs_per_block": 1, "crop": 40},
        }
    },
}


# --- sequences ---------------------------------------------------------------------------


def test_windows_are_every_run_of_consecutive_frames_and_short_sequences_are_padded():
    frames = tf.range(4)
    assert windows(frames, 3).numpy().tolist() == [[0, 1, 2], [1, 2, 3]]
    assert windows(frames, 4).numpy().tolist() == [[0, 1, 2, 3]]
    assert windows(tf.range(2), 3).numpy().tolist() == [[0, 0, 1]], (
        "padded in front with the first frame"
    )


def _frames_dataset() -> Dataset:
    """Two CK+ sequences (one listed out of frame order) and a FER2013-like still image."""
    manifest = pd.DataFrame(
        {
            "id": ["a3", "a1", "a2", "b1", "b2", "still"],
            "dataset": ["ckplus"] * 5 + ["fer2013"],
            "split": ["train", "train", "train", "test", "test", "train"],
            "label": ["happy", "neutral", "happy", "neutral", "fear", "sad"],
            "subject": ["S005", "S005", "S005", "S010", "S010", ""],
            "sequence": ["001", "001", "001", "002", "002", ""],
            "frame": [12, 1, 10, 1, 7, -1],
        }
    )
    pixels = np.stack([np.full((48, 48), value, np.uint8) for value in (12, 1, 10, 101, 107, 200)])
    return Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)


def test_a_sequence_is_its_frames_in_numeric_order_labelled_by_the_last():
    found = frame_sequences(_frames_dataset().manifest)
    assert [(s.id, s.split, s.label, s.rows.tolist()) for s in found] == [
        ("ckplus-S005_001", "train", "happy", [1, 2, 0]),
        ("ckplus-S010_002", "test", "fear", [3, 4]),
    ]


def test_a_sequence_across_splits_is_an_error():
    manifest = _frames_dataset().manifest.assign(
        split=["train", "val", "train", "test", "test", "train"]
    )
    with pytest.raises(
        ValueError,
        match=r"sequence ckplus-S005_001: its frames are in several splits \(train, val\)",
    ):
        frame_sequences(manifest)


def test_sequence_records_round_trip_the_frames_in_order(tmp_path):
    written = write_sequences(_frames_dataset(), tmp_path, examples_per_shard=10)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        f"{SEQUENCES_DIR}/test-00000-of-00001.tfrecord.gz",
        f"{SEQUENCES_DIR}/train-00000-of-00001.tfrecord.gz",
    ]
    read = list(
        read_sequences(
            tmp_path / SEQUENCES_DIR, ["train", "test"], ("fear", "happy")
        ).as_numpy_iterator()
    )
    assert [
        (ident.decode(), int(label), frames[:, 0, 0, 0].tolist()) for frames, label, ident in read
    ] == [
        ("ckplus-S010_002", 0, [101, 107]),
        ("ckplus-S005_001", 1, [1, 10, 12]),
    ]


# --- what fit reads ------------------------------------------------------------------------


def test_balanced_class_weights_follow_sklearn_and_ignore_absent_classes():
    np.testing.assert_allclose(balanced_class_weights(np.array([2, 6, 0])), [2.0, 2 / 3, 0.0])


def test_square_root_balancing_weighs_a_rare_class_less_than_balancing_but_still_more():
    counts = np.array([436, 7215, 4097])  # FER2013's disgust, happy and fear faces
    full, gentle = balanced_class_weights(counts), balanced_class_weights(counts, 0.5)
    np.testing.assert_allclose(gentle, np.sqrt(full), rtol=1e-6)
    assert 1 < gentle[0] < full[0] and full[1] < gentle[1] < 1


def _batches() -> tf.data.Dataset:
    x = np.arange(8, dtype=np.float32).reshape(8, 1)
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def test_fitting_batches_are_one_hot_and_carry_class_weights():
    weights = np.array([1.0, 2.0, 3.0], np.float32)
    _, onehot, w = next(iter(fitting_batches(_batches(), 3, weights)))
    np.testing.assert_array_equal(onehot.numpy(), np.eye(3)[[0, 0, 0, 1]])
    np.testing.assert_array_equal(w.numpy(), [1.0, 1.0, 1.0, 2.0])


def test_mixup_blends_each_batch_with_itself_reversed_reproducibly():
    def epoch(seed: int) -> list[np.ndarray]:
        return [
            np.concatenate([t.numpy().ravel() for t in b])
            for b in fitting_batches(_batches(), 3, None, 0.4, seed)
        ]

    first = next(iter(fitting_batches(_batches(), 3, None, 0.4, seed=5)))
    x, y = (t.numpy() for t in first)
    mix = x[3, 0] / 3.0  # x = mix * x + (1 - mix) * reversed x: the last is mix * 3 + (1 - mix) * 0
    assert 0.0 < mix < 1.0
    np.testing.assert_allclose(
        x[:, 0], mix * np.arange(4) + (1 - mix) * np.arange(4)[::-1], rtol=1e-5
    )
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y[0], mix * np.eye(3)[0] + (1 - mix) * np.eye(3)[1], rtol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(epoch(5), epoch(5)))
    assert not all(np.array_equal(a, b) for a, b in zip(epoch(5), epoch(6)))


# --- recipes ---------------------------------------------------------------------------------


def test_an_architecture_override_changes_only_that_architectures_recipe(tmp_path):
    path = write_params(
        tmp_path,
        {
            "train": {
                "architectures": ["convnn", "modern"],
                "overrides": {"modern": {"epochs": 7, "lr_schedule": "cosine"}},
            }
        },
    )
    settings = load_params(path).train
    assert (settings.recipe("modern").epochs, settings.recipe("modern").lr_schedule) == (
        7,
        "cosine",
    )
    assert settings.recipe("convnn") == settings and settings.recipe("convnn").epochs == 40
    assert (
        settings.dataset_for("convlstm") == "ckplus" and settings.dataset_for("modern") == "fer2013"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"modern": {"epochz": 3}}, r"overrides\.modern: epochz: Extra inputs"),
        (
            {"modern": {"emotion_sets": {}}},
            r"overrides\.modern: emotion_sets cannot differ by architecture",
        ),
        ({"resnet": {"epochs": 3}}, r"overrides\.resnet"),
    ],
)
def test_a_bad_override_is_named(tmp_path, override, message):
    with pytest.raises(ParamsError, match=message):
        load_params(write_params(tmp_path, {"train": {"overrides": override}}))


# --- surviving a restart ---------------------------------------------------------------------


def test_early_stopping_picks_up_its_count_and_best_weights_after_a_restart():
    network = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    best = [np.full(w.shape, 7.0, np.float32) for w in network.get_weights()]
    state = {"wait": 1, "best": 0.5, "best_epoch": 3, "stopped_epoch": 0}
    stopping = ResumableEarlyStopping(
        patience=2, resumed=Resumed(network, 5, "train", "run", {}, state, best)
    )
    stopping.set_model(network)
    stopping.on_train_begin()
    assert stopping.state() == state
    stopping.on_epoch_end(5, {"val_loss": 0.9})
    assert network.stop_training and stopping.state()["stopped_epoch"] == 5, (
        "two epochs without a better val_loss"
    )
    stopping.on_train_end()
    np.testing.assert_array_equal(network.get_weights()[0], best[0])


def test_an_unreadable_checkpoint_is_reported_and_training_starts_afresh(tmp_path, capsys):
    (tmp_path / "epoch-0003").mkdir()
    (tmp_path / "epoch-0003" / checkpoints.STATE_FILE).write_text("{not json")
    assert checkpoints.latest(tmp_path, "abc") is None
    assert "epoch-0003: cannot resume from it (JSONDecodeError" in capsys.readouterr().out


# --- every architecture, end to end on tiny data ---------------------------------------------


def _params(project: Path, **train):
    """The project's settings with these train settings, and its cell of the tiny emotion set."""
    params = load_params(
        write_params(project, {**TINY_OVERRIDES, "train": {**TINY_TRAIN, **train}})
    )
    architecture = params.train.architectures[0]
    return params, stages.select_cells(params, architecture, "ahs")[0]


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["convnn", "modern", "transfer", "convlstm", "timedelay"])
def test_every_architecture_trains_evaluates_and_registers(project, architecture, monkeypatch):
    from emoflow.components.judging.evaluate import evaluate
    from emoflow.components.judging.promote import promote
    from emoflow.components.training.train import train

    monkeypatch.chdir(project)
    params, cell = _params(project, architectures=[architecture], checkpoints=False)
    processed = params.preprocess.out_dir
    trained = train(
        processed / params.train.dataset_for(architecture),
        cell,
        params.train,
        params.augment,
        params.mlflow,
    )
    assert trained.model.exists() and len(
        json.loads((trained.folder / "history.json").read_text())["loss"]
    ) == (2 if architecture == "transfer" else 1), (
        "the transfer network trains its head for an epoch, then fine-tunes for one"
    )
    sequences = architecture in SEQUENCE_ARCHITECTURES
    scored = evaluate(trained.folder, processed, "ckplus", params.evaluate, params.mlflow)
    scores = json.loads(scored.scores.read_text())
    key = "ckplus_sequences" if sequences else "fer2013"
    assert 0.0 <= scores[key]["accuracy"] <= 1.0 and scores[key]["count"] > 0

    gate = params.promote.model_copy(
        update={
            "model_name": "t-{architecture}",
            "value_thresholds": {f"{key}.accuracy": 0.0},
            "change_thresholds": {},
        }
    )
    blessing = promote(trained.folder, processed, "ckplus", params.evaluate, gate, params.mlflow)
    assert blessing.passed and blessing.version == "1"
    version = mlflow.MlflowClient().get_model_version(f"t-{architecture}", "1")
    assert version.tags[TRAINING_DATA_TAG] == SYNTHETIC
    assert version.description.startswith(f"# Model card: t-{architecture} version 1")
    assert SYNTHETIC_WARNING in version.description
    model = mlflow.pyfunc.load_model(f"models:/t-{architecture}@champion")
    if sequences:
        faces = np.random.default_rng(0).integers(
            0, 256, (2, params.train.time_delay, 48, 48), dtype=np.uint8
        )
    else:  # the image model's input schema: a column of face crops
        faces = image_column(np.random.default_rng(0).integers(0, 256, (2, 48, 48), np.uint8))
    with pytest.warns(SyntheticSampleWarning, match="synthetic sample"):
        probabilities = model.predict(faces)
    assert list(probabilities.columns) == EMOTIONS
    np.testing.assert_allclose(probabilities.to_numpy().sum(axis=1), 1.0, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SyntheticSampleWarning)
        model.predict(faces)  # once per loaded model, not per call
    example = model.predict(model.input_example, params=None if sequences else {"mode": "faces"})
    assert len(example) == 1, "the logged input example scores as one face, or one window"

    # The run names the records it trained on, and those evaluate scored; the card gives the
    # training digests.
    folder = records_folder(processed / params.train.dataset_for(architecture), architecture)
    logged = mlflow.get_run(trained.run_id).inputs.dataset_inputs
    by_context: dict[str, dict[str, str]] = {}
    for entry in logged:
        context = {t.key: t.value for t in entry.tags}["mlflow.data.context"]
        by_context.setdefault(context, {})[entry.dataset.name] = entry.dataset.digest
    digests = {**by_context.pop("training"), **by_context.pop("validation")}
    assert digests == {
        dataset_name(folder, split): content_hash(shard_paths(folder, [split]))
        for split in TRAINING_SPLITS
    }
    assert list(by_context) == ["evaluation"]
    assert dataset_name(folder, params.evaluate.in_split) in by_context["evaluation"]
    assert all(f"`{name}` `{digest}`" in version.description for name, digest in digests.items())
    described = mlflow.MlflowClient().get_registered_model(f"t-{architecture}").description
    assert described.startswith(f"# t-{architecture}\n") and "model card" in described


@pytest.mark.slow
def test_a_crash_after_the_last_epoch_resumes_only_with_the_same_settings(project, monkeypatch):
    """Killed after its last checkpoint, before its outputs: a rerun writes them without training
    again; a rerun with other settings starts afresh instead."""
    from emoflow.components.training import train as training

    monkeypatch.chdir(project)
    params, cell = _params(project, epochs=2, out_dir="models_crash")
    shards = params.preprocess.out_dir / params.train.dataset
    folder = checkpoints.checkpoint_folder(params.train.out_dir, cell.key)

    def crash_before_the_outputs() -> None:
        with monkeypatch.context() as patch:
            patch.setattr(
                training,
                "_write_outputs",
                lambda *args: (_ for _ in ()).throw(OSError("disk full")),
            )
            with pytest.raises(OSError, match="disk full"):
                training.train(shards, cell, params.train, params.augment, params.mlflow)
        assert [p.name for p in folder.glob("epoch-*")] == ["epoch-0002"]

    crash_before_the_outputs()
    same = training.train(shards, cell, params.train, params.augment, params.mlflow)
    assert same.resumed_from == 2 and same.model.exists() and not folder.exists()
    assert len(json.loads((same.folder / "history.json").read_text())["loss"]) == 2

    crash_before_the_outputs()
    other, _ = _params(project, epochs=2, out_dir="models_crash", learning_rate=0.01)
    changed = training.train(shards, cell, other.train, other.augment, other.mlflow)
    assert changed.resumed_from is None and not folder.exists()


@pytest.mark.slow
def test_a_spent_time_budget_ends_the_run_and_a_rerun_goes_on_for_another(project, monkeypatch):
    """The CPU recipe's parts together: random crops inside the network, SGD with Nesterov
    momentum, plateau decay that survives a restart, and a time budget that keeps the
    checkpoint so that running train again adds a budget."""
    from emoflow.components.training.train import train

    monkeypatch.chdir(project)
    recipe = {
        "epochs": 3,
        "optimizer": "sgd",
        "learning_rate": 0.01,
        "lr_schedule": "plateau",
        "plateau_patience": 1,
        "time_budget_minutes": 1e-4,  # spent by the first epoch
        "early_stopping_patience": None,
        "modern": {"widths": [4, 8], "convs_per_block": 1, "crop": 40},
    }

    def settings(**changes):
        return _params(
            project,
            architectures=["modern"],
            out_dir="models_budget",
            overrides={"modern": {**recipe, **changes}},
        )

    params, cell = settings()
    shards = params.preprocess.out_dir / params.train.dataset
    folder = checkpoints.checkpoint_folder(params.train.out_dir, cell.key)

    first = train(shards, cell, params.train, params.augment, params.mlflow)
    assert len(json.loads((first.folder / "history.json").read_text())["loss"]) == 1
    assert [p.name for p in folder.glob("epoch-*")] == ["epoch-0001"], "kept for a rerun"
    state = json.loads((folder / "epoch-0001" / checkpoints.STATE_FILE).read_text())
    assert set(state["plateau"]) == {"wait", "best", "cooldown_counter"}
    saved = keras.models.load_model(folder / "epoch-0001" / "model.keras")
    assert type(saved.optimizer).__name__ == "SGD" and saved.optimizer.nesterov
    assert saved.get_layer("crop").size == 40 and saved.input_shape == (None, 48, 48, 1)

    second = train(shards, cell, params.train, params.augment, params.mlflow)
    assert second.resumed_from == 1 and second.run_id == first.run_id
    assert [p.name for p in folder.glob("epoch-*")] == ["epoch-0002"]

    roomy, _ = settings(time_budget_minutes=60)
    last = train(shards, cell, roomy.train, roomy.augment, roomy.mlflow)
    assert last.resumed_from == 2, "the budget is not part of what a checkpoint must match"
    assert len(json.loads((last.folder / "history.json").read_text())["loss"]) == 3
    assert not folder.exists(), "a run that reached its last epoch leaves no checkpoint"


STALLING_RUN = """
import sys, time
from emoflow.components.training import checkpoints
from emoflow.components.settings import load_params
from emoflow.components.training.train import train
from emoflow.flows.stages import select_cells

save = checkpoints.Checkpoint._save
stall, stalled = sys.argv[2], sys.argv[3]
def stalling_save(self, epochs_done):  # stall at the 2nd checkpoint: the test kills it there
    if epochs_done == 2 and stall == "before":
        open(stalled, "w").close()
        time.sleep(600)
    save(self, epochs_done)
    if epochs_done == 2:
        open(stalled, "w").close()
        time.sleep(600)
checkpoints.Checkpoint._save = stalling_save
params = load_params(sys.argv[1])
[cell] = select_cells(params, "convnn", "ahs")
shards = params.preprocess.out_dir / params.train.dataset
train(shards, cell, params.train, params.augment, params.mlflow)
"""


@pytest.mark.slow
@pytest.mark.parametrize("stall", ["after", "before"])
def test_a_killed_training_run_resumes_from_its_last_checkpoint(
    project, tmp_path, monkeypatch, capfd, stall
):
    """Killed once its 2nd epoch is trained, just ``before`` or ``after`` that epoch's
    checkpoint is written: the rerun goes on from the last checkpoint in the same MLflow run,
    which ends with each epoch logged once."""
    from emoflow.components.training.train import train

    monkeypatch.chdir(project)
    params, cell = _params(project, epochs=4, out_dir=f"models_killed_{stall}")
    script = tmp_path / "stalling_run.py"
    script.write_text(STALLING_RUN)
    folder = checkpoints.checkpoint_folder(params.train.out_dir, cell.key)
    stalled = tmp_path / "stalled"

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.Popen(
        [sys.executable, str(script), "params.yaml", stall, str(stalled)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not stalled.exists():
        assert killed.poll() is None, (
            f"the run ended before its 2nd checkpoint:\n{killed.communicate()[0][-3000:]}"
        )
        assert time.monotonic() < deadline, "no 2nd checkpoint in time"
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    done = 2 if stall == "after" else 1
    state = json.loads((folder / f"epoch-{done:04d}" / checkpoints.STATE_FILE).read_text())
    assert not (params.train.out_dir / cell.key).exists(), "a killed run writes no model"

    capfd.readouterr()
    resumed = train(
        params.preprocess.out_dir / params.train.dataset,
        cell,
        params.train,
        params.augment,
        params.mlflow,
    )
    printed = capfd.readouterr().out
    assert resumed.resumed_from == done and resumed.run_id == state["run_id"], (
        "from the epoch after the checkpoint, in the same MLflow run"
    )
    assert "Epoch 1/4" not in printed and f"Epoch {done + 1}/4" in printed
    assert resumed.model.exists() and not folder.exists()
    history = json.loads((resumed.folder / "history.json").read_text())
    assert len(history["loss"]) == 4 and history["loss"][:done] == state["history"]["loss"]
    client = mlflow.MlflowClient()
    assert sorted(m.step for m in client.get_metric_history(state["run_id"], "loss")) == [
        0,
        1,
        2,
        3,
    ]
    assert client.get_run(state["run_id"]).info.status == "FINISHED"
