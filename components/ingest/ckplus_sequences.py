"""What both CK+ layouts share: which frames of a sequence to keep, how, and the splits.

The original distribution and the CK+48 crops differ only in where frames and labels come
from; the readers (``components.ingest.stage.read_ckplus48`` and
``components.ingest.ckplus_original``) turn their layout into a table of frames and hand it here,
so that both give the same images the same labels, splits and folds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from emoflow.components.ingest.bad_records import IngestError
from emoflow.components.ingest.splits import subject_folds, subject_splits
from emoflow.components.manifest import Dataset, describe_pixels
from emoflow.components.settings import IngestSettings

FRAME_COLUMNS = ("stem", "label", "subject", "sequence", "frame", "source")


def keep_frames(frames: pd.DataFrame, settings: IngestSettings) -> pd.DataFrame:
    """The labelled frames of each sequence, in (subject, sequence, frame) order.

    ``frames`` has one row per frame (``FRAME_COLUMNS``), ``label`` being the sequence's
    emotion. Each sequence keeps its last ``ckplus_peak_frames`` frames with that emotion
    and, when the sequence is longer, its first frame as neutral (CK+ sequences start from a
    neutral face).
    """
    ordered = frames.sort_values(["subject", "sequence", "frame"], kind="stable")
    kept = [
        _label_sequence(seq, settings)
        for _, seq in ordered.groupby(["subject", "sequence"], sort=True)
    ]
    return pd.concat(kept).reset_index(drop=True)


def _label_sequence(seq: pd.DataFrame, settings: IngestSettings) -> pd.DataFrame:
    peak = seq.tail(settings.ckplus_peak_frames)
    if settings.ckplus_first_frame_neutral and len(seq) > settings.ckplus_peak_frames:
        onset = seq.head(1).assign(label="neutral")
        return pd.concat([onset, peak])
    return peak


def ckplus_dataset(
    kept: pd.DataFrame, pixels: np.ndarray, settings: IngestSettings, root: Path
) -> Dataset:
    """The CK+ dataset from its kept frames and their 48x48 pixels (row-aligned).

    Splits and folds are drawn by subject here, after bad images were set aside, so that
    they cover exactly the subjects that made it in.
    """
    if kept.empty:
        raise IngestError(f"{root}: no usable CK+ images are left (see the quarantine report)")
    manifest = kept.assign(
        split=subject_splits(kept["subject"], settings.ckplus_split_fractions, settings.seed),
        fold=subject_folds(kept["subject"], settings.ckplus_folds, settings.seed),
        id="ckplus-" + kept["stem"],
        dataset="ckplus",
    ).drop(columns=["stem"])
    return Dataset(
        pd.concat([manifest.reset_index(drop=True), describe_pixels(pixels)], axis=1), pixels
    )
