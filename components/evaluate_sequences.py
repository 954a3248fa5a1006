"""Evaluate a sequence network (ConvolutionalLstmNN, TimeDelayConvNN) on its sequence records.

The image evaluation (``components.evaluate``) scores single faces of FER2013 and CK+; a
sequence network reads windows of ``time_delay`` frames, which only the sequence records of
``train.sequence_dataset`` hold. It is scored on their ``evaluate.in_split`` windows, under
the key ``<dataset>_sequences`` (e.g. ``ckplus_sequences.accuracy``), and writes the same
files the image evaluation writes, so the gate and ``dvc metrics`` read both alike.

Scoring from probabilities and writing the files are ``components.evaluate``'s own.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from components.evaluate import EvaluateOutputs, EvaluationError, Scores, load_candidate, scores_from, write_evaluation
from components.inputs import scoring_sequence_batches
from components.sequences import SEQUENCES_DIR
from components.settings import EvaluateSettings, MlflowSettings


def evaluate_sequences(
    model_dir: Path, shards: Path, settings: EvaluateSettings, mlflow_settings: MlflowSettings
) -> EvaluateOutputs:
    """Score the sequence network in ``model_dir`` on the sequences of ``shards``
    (``data/processed/<train.sequence_dataset>``) and write its evaluation."""
    run, network = load_candidate(model_dir)
    emotions = tuple(run["emotions"])
    scores = {f"{shards.name}_sequences": score_sequences(network, emotions, shards, settings)}
    return write_evaluation(
        model_dir.name, run["run_id"], scores, emotions, settings, mlflow_settings
    )


def score_sequences(
    network: keras.Model, emotions: tuple[str, ...], shards: Path, settings: EvaluateSettings
) -> Scores:
    """Scores on the ``in_split`` windows; ``flip_tta`` averages in every window mirrored."""
    folder = shards / SEQUENCES_DIR
    time_delay = network.input_shape[1]
    batches = scoring_sequence_batches(
        folder, [settings.in_split], emotions, time_delay, settings.batch_size
    )
    pairs = [(x.numpy(), y.numpy()) for x, y in batches]
    if not pairs:
        raise EvaluationError(
            f"{folder}: no sequences of the model's classes ({', '.join(emotions)}) in split {settings.in_split}"
        )
    windows, truth = np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])
    probabilities = network.predict(windows, batch_size=settings.batch_size, verbose=0)
    if settings.flip_tta:
        mirrored = network.predict(windows[..., ::-1, :], batch_size=settings.batch_size, verbose=0)
        probabilities = (probabilities + mirrored) / 2
    return scores_from(probabilities, truth, emotions, settings)
