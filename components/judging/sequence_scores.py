"""Scores of a sequence network (ConvolutionalLstmNN, TimeDelayConvNN) on its sequence records.

Image networks are scored on single faces of FER2013 and CK+; a sequence network reads
windows of ``time_delay`` frames, which only the sequence records of ``train.sequence_dataset``
hold. It is scored on their ``evaluate.in_split`` windows, under the key
``<dataset>_sequences`` (e.g. ``ckplus_sequences.accuracy``). Scores from probabilities are
``components.judging.scores``'s own.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from emoflow.components.judging.scores import EvaluationError, Scores, scores_from
from emoflow.components.model_kinds import SEQUENCES_DIR
from emoflow.components.records.input_pipelines import scoring_sequence_batches
from emoflow.components.settings import EvaluateSettings


def score_sequences(
    network: keras.Model, emotions: tuple[str, ...], shards: Path, settings: EvaluateSettings
) -> Scores:
    """Scores on the ``in_split`` windows; any ``tta`` averages in every window mirrored
    (ten crops of each frame would cost ten passes of a network that sees whole windows)."""
    folder = shards / SEQUENCES_DIR
    time_delay = network.input_shape[1]
    batches = scoring_sequence_batches(
        folder, [settings.in_split], emotions, time_delay, settings.batch_size
    )
    pairs = [(x.numpy(), y.numpy()) for x, y in batches]
    if not pairs:
        raise EvaluationError(
            f"{folder}: no sequences of the model's classes ({', '.join(emotions)}) in split "
            f"{settings.in_split}"
        )
    windows, truth = np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])
    probabilities = network.predict(windows, batch_size=settings.batch_size, verbose=0)
    if settings.tta != "none":
        mirrored = network.predict(windows[..., ::-1, :], batch_size=settings.batch_size, verbose=0)
        probabilities = (probabilities + mirrored) / 2
    return scores_from(probabilities, truth, emotions, settings)
