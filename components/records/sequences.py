"""Frame sequences for the time-series networks (ConvolutionalLstmNN, TimeDelayConvNN).

A CK+ sequence runs from a neutral face to the peak of one emotion. Ingest keeps only some
of its frames (the first as neutral and the last ``ckplus_peak_frames``); a sequence here is
what the manifest holds of it, frames in numeric order, labelled with the emotion of its last
frame, the sequence's emotion. Preprocess writes one record per sequence
(``components.records.tfrecords``) and the input pipeline cuts it into windows of ``time_delay``
frames (:func:`windows`), so changing ``time_delay`` needs no new records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf


@dataclass(frozen=True)
class FrameSequence:
    id: str  # <dataset>-<subject>_<sequence>
    split: str
    label: str  # canonical emotion of the last frame
    rows: np.ndarray  # manifest rows of its frames, in frame order


def frame_sequences(manifest: pd.DataFrame) -> list[FrameSequence]:
    """The sequences of a dataset, in (subject, sequence) order; none for still-image datasets.

    A sequence whose frames fall in more than one split is an error: splits are drawn by
    subject, so that would mean frames of one person on both sides of an evaluation.
    """
    framed = manifest[(manifest["sequence"].astype(str) != "") & (manifest["frame"] >= 0)]
    sequences = []
    for (subject, sequence), group in framed.groupby(["subject", "sequence"], sort=True):
        group = group.sort_values("frame", kind="stable")
        name = f"{group['dataset'].iloc[0]}-{subject}_{sequence}"
        splits = sorted(group["split"].unique())
        if len(splits) != 1:
            raise ValueError(
                f"sequence {name}: its frames are in several splits ({', '.join(splits)})"
            )
        sequences.append(
            FrameSequence(
                id=name,
                split=splits[0],
                label=str(group["label"].iloc[-1]),
                rows=group.index.to_numpy(),
            )
        )
    return sequences


def windows(frames: tf.Tensor, time_delay: int) -> tf.Tensor:
    """``[n, ...]`` frames -> ``[max(n - time_delay + 1, 1), time_delay, ...]`` windows.

    Every run of ``time_delay`` consecutive frames, in order; a sequence shorter than that
    is padded in front with copies of its first frame, so it still yields one window.
    """
    n = tf.shape(frames)[0]
    padded_length = tf.maximum(n, time_delay)
    padded = tf.gather(frames, tf.maximum(tf.range(padded_length) - (padded_length - n), 0))
    starts = tf.range(padded_length - time_delay + 1)
    return tf.gather(padded, starts[:, tf.newaxis] + tf.range(time_delay)[tf.newaxis, :])
