"""FER+: Microsoft's relabelling of FER2013 by ten crowd votes per image (Barsoum et al. 2016).

``fer2013new.csv`` describes row *i* of ``fer2013.csv`` in its row *i*: ``Usage``,
``Image name`` (empty where FER+ dropped the image), then vote counts for neutral,
happiness, surprise, sadness, anger, disgust, fear, contempt, unknown and NF (not a face).

The majority label follows the "majority" mode of the FER+ reference code
(microsoft/FERPlus, ``src/ferplus.py``, ``_process_data`` and ``load_folders``), the
labels behind the paper's majority-voting results:

1. an image with an empty ``Image name`` is left out (FER+ dropped it);
2. a class with a single vote has that vote discarded as an outlier (counts of 1 become 0);
3. the label is the class holding more than half of the remaining votes; an image with no
   such class is left out, so a tie at the top is always left out, and so is a plurality
   short of a majority (4 neutral, 3 anger, 2 disgust, 1 sadness: 4 of 9 votes, left out);
4. an image whose majority is ``unknown`` or ``NF`` is left out.

On the Training rows this gives the class counts the FER+ code prints (neutral 8740,
happiness 7287, surprise 3149, sadness 3014, anger 2100, fear 532, disgust 119,
contempt 119). The soft labels are the plain vote shares of the eight emotions (unknown
and NF not counted, no outlier removal), in ``labels.CANONICAL`` order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emoflow.components import labels
from emoflow.components.ingest.bad_records import (
    BadRecord,
    IngestError,
    Quarantine,
    csv_row,
    read_csv_strings,
)

EMOTION_COLUMNS = tuple(labels.FERPLUS_VOTES)
VOTE_COLUMNS = (*EMOTION_COLUMNS, "unknown", "NF")
COLUMNS = ("Usage", "Image name", *VOTE_COLUMNS)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FerPlusLabels:
    """Per row of the FER2013 csv: the majority label ("" = left out) and the vote shares."""

    labels: np.ndarray  # object array of canonical names or ""
    soft: np.ndarray  # float32, rows x len(labels.CANONICAL)


def read_ferplus(
    path: Path, usages: np.ndarray, csv_path: Path, quarantine: Quarantine
) -> FerPlusLabels:
    """FER+ labels for the rows of ``csv_path``, whose ``Usage`` column is ``usages``."""
    table = _aligned_rows(path, read_csv_strings(path, COLUMNS, "ingest.ferplus"), usages, csv_path)
    votes, valid = _vote_counts(path, table, quarantine)
    majority = majority_labels(votes)
    named = (table["Image name"] != "").to_numpy()
    kept = np.where(named & valid, majority, "")
    log.info(
        "FER+: %d of %d images keep a majority label (%d dropped by FER+, %d without a "
        "majority emotion)",
        np.count_nonzero(kept != ""),
        len(kept),
        np.count_nonzero(~named),
        np.count_nonzero(named & valid & (majority == "")),
    )
    return FerPlusLabels(labels=kept, soft=vote_shares(votes))


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """The canonical majority emotion of each row of ``votes`` (``VOTE_COLUMNS``), or ""."""
    counted = np.where(votes > 1, votes, 0)  # a lone vote is an outlier
    has_majority = 2 * counted.max(axis=1) > counted.sum(axis=1)
    names = np.array([*labels.FERPLUS_VOTES.values(), "", ""], dtype=object)  # unknown, NF
    return np.where(has_majority, names[counted.argmax(axis=1)], "")


def vote_shares(votes: np.ndarray) -> np.ndarray:
    """Each row's emotion votes as a distribution over ``labels.CANONICAL``."""
    names = list(labels.FERPLUS_VOTES.values())
    emotion_votes = votes[:, [names.index(name) for name in labels.CANONICAL]].astype(np.float32)
    totals = emotion_votes.sum(axis=1, keepdims=True)
    return emotion_votes / np.where(totals == 0, 1, totals)


def _aligned_rows(
    path: Path, table: pd.DataFrame, usages: np.ndarray, csv_path: Path
) -> pd.DataFrame:
    """The rows describing the csv's rows; the files must agree row by row on ``Usage``.

    FER+ describes all 35,887 rows of the full Kaggle file. A copy of the csv without its
    last usage (PrivateTest) is still aligned: the extra FER+ rows must then all be of
    usages the csv lacks. Any other difference in row count is an error.
    """
    rows = len(usages)
    extra = set(table["Usage"].iloc[rows:])
    if len(table) < rows or extra & set(usages):
        raise IngestError(
            f"{path}: {len(table)} rows, but {csv_path} has {rows}; FER+ votes describe the csv "
            "row by row (extra rows are allowed only for usages the csv lacks, e.g. PrivateTest)"
        )
    aligned = table.iloc[:rows].reset_index(drop=True)
    differ = np.flatnonzero(aligned["Usage"].to_numpy() != usages)
    if len(differ):
        row = int(differ[0])
        raise IngestError(
            f"{path}: {csv_row(row)}: Usage {aligned.at[row, 'Usage']!r}, but {csv_path} says "
            f"{usages[row]!r}; the files are not row-aligned"
        )
    return aligned


def _vote_counts(
    path: Path, table: pd.DataFrame, quarantine: Quarantine
) -> tuple[np.ndarray, np.ndarray]:
    """The votes as integers, and which rows have only valid counts (others are set aside)."""
    raw = table.loc[:, list(VOTE_COLUMNS)]
    numbers = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad_cells = ~np.isfinite(numbers) | (numbers < 0) | (numbers != np.round(numbers))
    bad = []
    for row in np.flatnonzero(bad_cells.any(axis=1)):
        column = int(np.argmax(bad_cells[row]))
        value = raw.iat[row, column]
        bad.append(
            BadRecord(
                path, f"{VOTE_COLUMNS[column]} vote {value!r} is not a count", csv_row(int(row))
            )
        )
    quarantine.set_aside(bad)
    return np.where(bad_cells, 0, numbers).astype(np.int64), ~bad_cells.any(axis=1)
