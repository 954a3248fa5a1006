"""FER2013 as Kaggle distributes it: the ``emotion,pixels,Usage`` csv, plain or gzipped.

Every row is checked where it enters, so a malformed one is named by file and row; FER+
votes (``components.ingest.ferplus``), aligned with the csv's rows, can relabel them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from components import labels
from components.ingest.bad_records import (
    BadRecord,
    IngestError,
    Quarantine,
    csv_row,
    read_csv_strings,
)
from components.ingest.ferplus import read_ferplus
from components.ingest.splits import carve_validation
from components.manifest import IMAGE_SIZE, Dataset, describe_pixels
from components.settings import IngestSettings

FER2013_COLUMNS = ("emotion", "pixels", "Usage")
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE


def read_fer2013_csv(
    path: Path, settings: IngestSettings, quarantine: Quarantine | None = None
) -> Dataset:
    """Parse the canonical Kaggle ``emotion,pixels,Usage`` csv (plain or .gz).

    With ``ingest.ferplus`` set, labels are the FER+ majority votes instead of the
    ``emotion`` column, and images without one are left out (``components.ingest.ferplus``).
    """
    if quarantine is None:
        quarantine = Quarantine(settings.on_bad_record)
    table = _read_csv_table(path)
    usages = table["Usage"].to_numpy()
    fer_labels = np.array([_fer2013_label(code) for code in table["emotion"]], dtype=object)
    problems = _row_problems(path, table, fer_labels, settings)
    pixels = np.zeros((len(table), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for row, text in enumerate(tqdm(table["pixels"], desc=f"parse {path.name}", unit="img")):
        if row not in problems:
            try:
                pixels[row] = _parse_pixels(path, row, text)
            except BadRecord as err:
                problems[row] = err
    quarantine.set_aside(problems[row] for row in sorted(problems))
    good = np.ones(len(table), dtype=bool)
    good[list(problems)] = False
    soft = None
    if settings.ferplus is None:
        label_names = fer_labels
    else:
        votes = read_ferplus(settings.ferplus, np.where(good, usages, ""), path, quarantine)
        label_names = votes.labels
        good &= label_names != ""
        soft = votes.soft if settings.ferplus_soft_labels else None
    rows = np.flatnonzero(good)
    if len(rows) == 0:
        raise IngestError(f"{path}: no usable rows are left")
    manifest = pd.DataFrame(
        {
            "id": [f"fer2013-{row:05d}" for row in rows],
            "dataset": "fer2013",
            "split": _fer2013_splits(usages[rows], label_names[rows], settings),
            "label": label_names[rows],
            "subject": "",
            "sequence": "",
            "frame": -1,
            "source": [f"{path.name}:row {row}" for row in rows],
        }
    )
    kept = pixels[rows]
    return Dataset(
        pd.concat([manifest, describe_pixels(kept)], axis=1),
        kept,
        None if soft is None else soft[rows],
    )


def _read_csv_table(path: Path) -> pd.DataFrame:
    """The csv as strings; only problems of the whole file are raised here."""
    table = read_csv_strings(path, FER2013_COLUMNS, "ingest.fer2013")
    if table.empty:
        raise IngestError(f"{path}: has a header but no rows")
    return table


def _row_problems(
    path: Path, table: pd.DataFrame, fer_labels: np.ndarray, settings: IngestSettings
) -> dict[int, BadRecord]:
    """The first problem of each row that shows without parsing its pixels."""
    problems: dict[int, BadRecord] = {}
    blank = (table.loc[:, list(FER2013_COLUMNS)] == "").to_numpy()
    for row in np.flatnonzero(blank.any(axis=1)).tolist():
        empty = [column for column, is_blank in zip(FER2013_COLUMNS, blank[row]) if is_blank]
        problems[row] = BadRecord(
            path, f"empty {', '.join(empty)} (is the file truncated?)", csv_row(row)
        )
    for row, usage in enumerate(table["Usage"]):
        if usage not in settings.usage_splits:
            problems.setdefault(
                row,
                BadRecord(
                    path,
                    f"Usage {usage!r} is not one of {', '.join(settings.usage_splits)} "
                    "(ingest.usage_splits)",
                    csv_row(row),
                ),
            )
    for row in np.flatnonzero(fer_labels == "").tolist():
        problems.setdefault(
            row,
            BadRecord(
                path,
                f"emotion {table.at[row, 'emotion']!r} is not a FER2013 code "
                f"0..{max(labels.FER2013_CODES)}",
                csv_row(row),
            ),
        )
    return problems


def _fer2013_label(code: str) -> str:
    """The canonical name of a FER2013 code, "" for a code that is not one."""
    try:
        return labels.FER2013_CODES.get(int(code), "")
    except ValueError:
        return ""


def _parse_pixels(path: Path, row: int, text: str) -> np.ndarray:
    """2304 space-separated integers 0..255 -> a 48x48 image.

    ``np.fromstring`` parses in C (4x faster than splitting in Python, which dominated
    ingest); only a row it rejects is split again, to name the offending token.
    """
    try:
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:  # a token that is not a number
        values = None
    if values is None or len(values) != PIXELS_PER_IMAGE:
        tokens = text.split()
        if len(tokens) != PIXELS_PER_IMAGE:
            raise BadRecord(
                path, f"{len(tokens)} pixels, expected {PIXELS_PER_IMAGE}", csv_row(row)
            )
        bad = next((t for t in tokens if not t.lstrip("+-").isdigit()), text[:20])
        raise BadRecord(path, f"pixel {bad!r} is not an integer", csv_row(row))
    if values.min() < 0 or values.max() > 255:
        raise BadRecord(
            path, f"pixel values must be 0..255, found {values.min()}..{values.max()}", csv_row(row)
        )
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def _fer2013_splits(
    usages: np.ndarray, label_names: np.ndarray, settings: IngestSettings
) -> np.ndarray:
    """Map Usage to splits; without a test usage, PublicTest's role moves to test.

    The copies of FER2013 that circulate often lack PrivateTest. Then the usage mapped to
    ``val`` becomes ``test`` and ``val`` is a stratified, seeded carve of ``train``.
    """
    splits = np.array([settings.usage_splits[u] for u in usages], dtype=object)
    if "test" in splits:
        return splits
    splits[splits == "val"] = "test"
    return carve_validation(splits, label_names, settings.val_fraction, settings.seed)
