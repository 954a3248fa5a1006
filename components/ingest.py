"""Ingest: raw dataset files as users download them -> the interim format (manifest + pixels).

This is the boundary where outside data enters the pipeline, so every check that can name
the offending file and row happens here; later stages trust what ingest wrote.

Which reader runs is told by what each configured path holds. This module reads the
FER2013 csv and the CK+48 crops and hands the other layouts to their modules:
``fer2013_folders`` (Kaggle image folders), ``ferplus`` (FER+ votes for the csv) and
``ckplus_original`` (the original CK+ distribution). What happens to a malformed row or
image is ``bad_records``' business.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from components import labels
from components.bad_records import QUARANTINE_JSON, BadRecord, IngestError, Quarantine, csv_row, read_csv_strings
from components.ckplus_original import is_original_layout, read_ckplus_original
from components.ckplus_sequences import FRAME_COLUMNS, ckplus_dataset, keep_frames
from components.fer2013_folders import read_fer2013_folders
from components.ferplus import read_ferplus
from components.image_files import read_all, read_face_48
from components.manifest import IMAGE_SIZE, Dataset, describe_pixels, write_dataset
from components.settings import IngestSettings
from components.splits import carve_validation, split_counts

__all__ = [
    "IngestError",
    "IngestOutputs",
    "ingest",
    "read_ckplus",
    "read_ckplus48",
    "read_fer2013",
    "read_fer2013_csv",
    "split_counts",
]

FER2013_COLUMNS = ("emotion", "pixels", "Usage")
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
CKPLUS48_NAME = re.compile(r"^S(\d{3})_(\d{3})_(\d{8})\.png$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutputs:
    """The interim folder written for each dataset, and the quarantine report if any."""

    fer2013: Path
    ckplus: Path
    quarantine: Path | None = None


def ingest(settings: IngestSettings) -> IngestOutputs:
    """Read both datasets, then write both: a bad file leaves earlier outputs untouched."""
    quarantine = Quarantine(settings.on_bad_record)
    fer = read_fer2013(settings.fer2013, settings, quarantine)
    ckplus = read_ckplus(settings.ckplus, settings, quarantine)
    report = settings.out_dir / QUARANTINE_JSON
    outputs = IngestOutputs(
        settings.out_dir / "fer2013", settings.out_dir / "ckplus", report if quarantine.skip else None
    )
    write_dataset(outputs.fer2013, fer)
    write_dataset(outputs.ckplus, ckplus)
    if quarantine.skip:
        quarantine.write(report)
        if quarantine.records:
            log.warning("%d bad records were left out; %s lists them", len(quarantine.records), report)
    else:
        report.unlink(missing_ok=True)  # it described an earlier run that skipped records
    return outputs


def read_fer2013(path: Path, settings: IngestSettings, quarantine: Quarantine | None = None) -> Dataset:
    """FER2013 from the Kaggle csv (.csv or .csv.gz) or the Kaggle image-folder layout."""
    if quarantine is None:
        quarantine = Quarantine(settings.on_bad_record)
    if not path.is_dir():
        return read_fer2013_csv(path, settings, quarantine)
    if settings.ferplus is not None:
        raise IngestError(
            f"{settings.ferplus}: FER+ votes are aligned with the rows of fer2013.csv, but "
            f"ingest.fer2013 ({path}) is an image folder, which has no rows"
        )
    return read_fer2013_folders(path, settings, quarantine)


def read_ckplus(root: Path, settings: IngestSettings, quarantine: Quarantine | None = None) -> Dataset:
    """CK+ from the original distribution (``cohn-kanade-images/``) or the CK+48 crops."""
    if quarantine is None:
        quarantine = Quarantine(settings.on_bad_record)
    if is_original_layout(root):
        return read_ckplus_original(root, settings, quarantine)
    return read_ckplus48(root, settings, quarantine)


# --- FER2013 csv ---------------------------------------------------------------------------


def read_fer2013_csv(path: Path, settings: IngestSettings, quarantine: Quarantine | None = None) -> Dataset:
    """Parse the canonical Kaggle ``emotion,pixels,Usage`` csv (plain or .gz).

    With ``ingest.ferplus`` set, labels are the FER+ majority votes instead of the
    ``emotion`` column, and images without one are left out (``components.ferplus``).
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
        pd.concat([manifest, describe_pixels(kept)], axis=1), kept, None if soft is None else soft[rows]
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
        problems[row] = BadRecord(path, f"empty {', '.join(empty)} (is the file truncated?)", csv_row(row))
    for row, usage in enumerate(table["Usage"]):
        if usage not in settings.usage_splits:
            problems.setdefault(
                row,
                BadRecord(
                    path,
                    f"Usage {usage!r} is not one of {', '.join(settings.usage_splits)} (ingest.usage_splits)",
                    csv_row(row),
                ),
            )
    for row in np.flatnonzero(fer_labels == "").tolist():
        problems.setdefault(
            row,
            BadRecord(
                path,
                f"emotion {table.at[row, 'emotion']!r} is not a FER2013 code 0..{max(labels.FER2013_CODES)}",
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
            raise BadRecord(path, f"{len(tokens)} pixels, expected {PIXELS_PER_IMAGE}", csv_row(row))
        bad = next((t for t in tokens if not t.lstrip("+-").isdigit()), text[:20])
        raise BadRecord(path, f"pixel {bad!r} is not an integer", csv_row(row))
    if values.min() < 0 or values.max() > 255:
        raise BadRecord(
            path, f"pixel values must be 0..255, found {values.min()}..{values.max()}", csv_row(row)
        )
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def _fer2013_splits(usages: np.ndarray, label_names: np.ndarray, settings: IngestSettings) -> np.ndarray:
    """Map Usage to splits; without a test usage, PublicTest's role moves to test.

    The copies of FER2013 that circulate often lack PrivateTest. Then the usage mapped to
    ``val`` becomes ``test`` and ``val`` is a stratified, seeded carve of ``train``.
    """
    splits = np.array([settings.usage_splits[u] for u in usages], dtype=object)
    if "test" in splits:
        return splits
    splits[splits == "val"] = "test"
    return carve_validation(splits, label_names, settings.val_fraction, settings.seed)


# --- CK+48 ---------------------------------------------------------------------------------


def read_ckplus48(root: Path, settings: IngestSettings, quarantine: Quarantine | None = None) -> Dataset:
    """Read the CK+48 layout ``<class>/S<subject>_<sequence>_<frame>.png``.

    Frames are kept and labelled as for every CK+ layout (``ckplus_sequences.keep_frames``):
    the last ``ckplus_peak_frames`` of a sequence with its emotion, the first as neutral.
    Splits are drawn by subject: frames of one person are near-identical, so splitting by
    image would leak.
    """
    if quarantine is None:
        quarantine = Quarantine(settings.on_bad_record)
    if not root.is_dir():
        raise IngestError(f"{root}: CK+ folder not found (ingest.ckplus in params.yaml)")
    records: list[dict[str, object]] = []
    bad: list[BadRecord] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        pngs = sorted(class_dir.glob("*.png"))
        if pngs and class_dir.name not in labels.CKPLUS48_FOLDERS:
            bad.append(
                BadRecord(
                    class_dir,
                    f"class folder {class_dir.name!r} is not in the CK+48 label map "
                    f"({', '.join(labels.CKPLUS48_FOLDERS)}); it holds {len(pngs)} images",
                )
            )
            continue
        for png in pngs:
            try:
                records.append(_ckplus48_record(root, png))
            except BadRecord as err:
                bad.append(err)
    quarantine.set_aside(bad)
    if not records:
        raise IngestError(f"{root}: no <class>/S<subject>_<sequence>_<frame>.png images found")
    kept = keep_frames(pd.DataFrame(records, columns=list(FRAME_COLUMNS)), settings)
    read, pixels = read_all(list(kept["source"]), lambda source: read_face_48(root / source), quarantine)
    return ckplus_dataset(kept.iloc[read], pixels, settings, root)


def _ckplus48_record(root: Path, png: Path) -> dict[str, object]:
    match = CKPLUS48_NAME.match(png.name)
    if not match:
        raise BadRecord(png, "file name is not S<subject>_<sequence>_<frame>.png (e.g. S005_001_00000011.png)")
    subject, sequence, frame = match.groups()
    return {
        "stem": png.stem,
        "label": labels.CKPLUS48_FOLDERS[png.parent.name],
        "subject": f"S{subject}",
        "sequence": sequence,
        "frame": int(frame),
        "source": str(png.relative_to(root)),
    }
