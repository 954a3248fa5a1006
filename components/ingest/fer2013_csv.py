"""FER2013 as Kaggle distributes it: the ``emotion,pixels,Usage`` csv, plain or gzipped.

Every row is checked where it enters, so a malformed one is named by file and row; FER+
votes (``components.ingest.ferplus``), aligned with the csv's rows, can relabel them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from emoflow.components import labels
from emoflow.components.ingest.bad_records import (
    BadRecord,
    IngestError,
    Quarantine,
    csv_row,
    read_csv_chunks,
)
from emoflow.components.ingest.ferplus import read_ferplus
from emoflow.components.ingest.pixel_stream import PixelWriter, keep_rows
from emoflow.components.ingest.splits import carve_validation
from emoflow.components.manifest import (
    IMAGE_SIZE,
    PIXELS,
    Dataset,
    describe_pixels,
    write_beside_pixels,
)
from emoflow.components.settings import IngestSettings

FER2013_COLUMNS = ("emotion", "pixels", "Usage")
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
# Rows parsed at a time. What ingest holds of the csv is one chunk of pixel text (~35 MB)
# plus the manifest's small columns, so its memory does not grow with the pixels.
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class _Scan:
    """What one pass over the csv keeps of every row: small columns, never pixel text."""

    usages: np.ndarray  # every row's Usage: FER+ votes are aligned with all rows
    labels: np.ndarray  # every row's canonical label, "" for a code that is not one
    parsed: np.ndarray  # the rows without a problem, whose pixels went to the sink in order
    described: list[pd.DataFrame]  # describe_pixels of the parsed rows, a frame per chunk


@dataclass(frozen=True)
class _Labelled:
    """The manifest of the rows that stay, and which of the parsed rows they are."""

    manifest: pd.DataFrame
    keep: np.ndarray  # bool per parsed row
    soft: np.ndarray | None


def read_fer2013_csv(
    path: Path,
    settings: IngestSettings,
    quarantine: Quarantine | None = None,
    chunk_rows: int | None = None,
) -> Dataset:
    """Parse the canonical Kaggle ``emotion,pixels,Usage`` csv (plain or .gz) into memory.

    With ``ingest.ferplus`` set, labels are the FER+ majority votes instead of the
    ``emotion`` column, and images without one are left out (``components.ingest.ferplus``).
    The ingest stage streams the csv to disk instead (:func:`write_fer2013_csv`); this is
    for callers that want the dataset itself (the TFDS builder, tests), and gives the same.
    Either parses ``chunk_rows`` rows at a time (default :data:`CHUNK_ROWS`).
    """
    if quarantine is None:
        quarantine = Quarantine(settings.on_bad_record)
    blocks: list[np.ndarray] = []
    scan = _scan(path, settings, quarantine, blocks.append, chunk_rows or CHUNK_ROWS)
    labelled = _labelled(path, scan, settings, quarantine)
    pixels = np.concatenate(blocks)[labelled.keep]
    return Dataset(labelled.manifest, pixels, labelled.soft)


def write_fer2013_csv(
    path: Path,
    settings: IngestSettings,
    folder: Path,
    provenance: dict,
    quarantine: Quarantine | None = None,
    chunk_rows: int | None = None,
) -> int:
    """Parse the csv into the interim files in ``folder`` (a fresh temporary folder).

    Pixels go to ``pixels.npy`` a chunk at a time, so memory stays flat from 30k to 1M
    images; rows that FER+ leaves out, known only once the votes are read, are dropped by
    one more streamed pass. Returns the number of images written.
    """
    if quarantine is None:
        quarantine = Quarantine(settings.on_bad_record)
    with PixelWriter(folder / PIXELS) as writer:
        scan = _scan(path, settings, quarantine, writer.append, chunk_rows or CHUNK_ROWS)
    labelled = _labelled(path, scan, settings, quarantine)
    if not labelled.keep.all():
        keep_rows(folder / PIXELS, labelled.keep)
    write_beside_pixels(folder, labelled.manifest, labelled.soft, provenance)
    return len(labelled.manifest)


def _scan(
    path: Path,
    settings: IngestSettings,
    quarantine: Quarantine,
    sink: Callable[[np.ndarray], None],
    chunk_rows: int,
) -> _Scan:
    """Check and parse the csv chunk by chunk; hand each chunk's good images to ``sink``.

    Bad rows go to ``quarantine`` chunk by chunk, so in ``error`` mode the first bad row
    stops ingest without reading the rest of the file.
    """
    usages: list[pd.Categorical] = []
    fer_labels: list[np.ndarray] = []
    parsed: list[np.ndarray] = []
    described: list[pd.DataFrame] = []
    chunks = read_csv_chunks(path, FER2013_COLUMNS, "ingest.fer2013", chunk_rows)
    with tqdm(desc=f"parse {path.name}", unit="img", mininterval=5) as progress:
        for table in chunks:
            first = int(table.index[0]) if len(table) else 0
            codes = np.array([_fer2013_label(code) for code in table["emotion"]], dtype=object)
            problems = _row_problems(path, table, first, codes, settings)
            pixels = _parse_chunk(path, table, first, problems)
            quarantine.set_aside(problems[row] for row in sorted(problems))
            good = np.ones(len(table), dtype=bool)
            good[list(problems)] = False
            if good.any():
                sink(pixels[good])
                described.append(describe_pixels(pixels[good]))
            usages.append(pd.Categorical(table["Usage"]))
            fer_labels.append(codes)
            parsed.append(first + np.flatnonzero(good))
            progress.update(len(table))
    if not sum(len(u) for u in usages):
        raise IngestError(f"{path}: has a header but no rows")
    return _Scan(
        usages=np.asarray(pd.api.types.union_categoricals(usages)),
        labels=np.concatenate(fer_labels),
        parsed=np.concatenate(parsed),
        described=described,
    )


def _parse_chunk(
    path: Path, table: pd.DataFrame, first: int, problems: dict[int, BadRecord]
) -> np.ndarray:
    """The chunk's images; a row that fails to parse gets its problem and stays zero."""
    pixels = np.zeros((len(table), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for position, text in enumerate(table["pixels"]):
        if position not in problems:
            try:
                pixels[position] = _parse_pixels(path, first + position, text)
            except BadRecord as err:
                problems[position] = err
    return pixels


def _labelled(
    path: Path, scan: _Scan, settings: IngestSettings, quarantine: Quarantine
) -> _Labelled:
    """Labels (the csv's or FER+'s), splits and ids of the parsed rows that stay."""
    good = np.zeros(len(scan.usages), dtype=bool)
    good[scan.parsed] = True
    soft = None
    if settings.ferplus is None:
        label_names = scan.labels
    else:
        votes = read_ferplus(settings.ferplus, np.where(good, scan.usages, ""), path, quarantine)
        label_names = votes.labels
        good &= label_names != ""
        soft = votes.soft if settings.ferplus_soft_labels else None
    rows = np.flatnonzero(good)
    if len(rows) == 0:
        raise IngestError(f"{path}: no usable rows are left")
    numbers = pd.Series(rows, dtype=str)
    manifest = pd.DataFrame(
        {
            "id": "fer2013-" + numbers.str.zfill(5),
            "dataset": "fer2013",
            "split": _fer2013_splits(scan.usages[rows], label_names[rows], settings),
            "label": label_names[rows],
            "subject": "",
            "sequence": "",
            "frame": -1,
            "source": f"{path.name}:row " + numbers,
        }
    )
    keep = good[scan.parsed]
    described = pd.concat(scan.described, ignore_index=True)[keep].reset_index(drop=True)
    return _Labelled(
        pd.concat([manifest, described], axis=1), keep, None if soft is None else soft[rows]
    )


def _row_problems(
    path: Path, table: pd.DataFrame, first: int, fer_labels: np.ndarray, settings: IngestSettings
) -> dict[int, BadRecord]:
    """The first problem of each row of a chunk that shows without parsing its pixels.

    Keyed by position in the chunk; ``first`` is the file row of the chunk's first row.
    """
    problems: dict[int, BadRecord] = {}
    blank = (table.loc[:, list(FER2013_COLUMNS)] == "").to_numpy()
    for row in np.flatnonzero(blank.any(axis=1)).tolist():
        empty = [column for column, is_blank in zip(FER2013_COLUMNS, blank[row]) if is_blank]
        problems[row] = BadRecord(
            path, f"empty {', '.join(empty)} (is the file truncated?)", csv_row(first + row)
        )
    for row, usage in enumerate(table["Usage"]):
        if usage not in settings.usage_splits:
            problems.setdefault(
                row,
                BadRecord(
                    path,
                    f"Usage {usage!r} is not one of {', '.join(settings.usage_splits)} "
                    "(ingest.usage_splits)",
                    csv_row(first + row),
                ),
            )
    for row in np.flatnonzero(fer_labels == "").tolist():
        problems.setdefault(
            row,
            BadRecord(
                path,
                f"emotion {table['emotion'].iloc[row]!r} is not a FER2013 code "
                f"0..{max(labels.FER2013_CODES)}",
                csv_row(first + row),
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
