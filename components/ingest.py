"""Ingest: raw dataset files as users download them -> the interim format (manifest + pixels).

This is the boundary where outside data enters the pipeline, so every check that can name
the offending file and row happens here; later stages trust what ingest wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from components import labels
from components.manifest import IMAGE_SIZE, Dataset, describe_pixels, write_dataset
from components.settings import IngestSettings

FER2013_COLUMNS = ("emotion", "pixels", "Usage")
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
CKPLUS48_NAME = re.compile(r"^S(\d{3})_(\d{3})_(\d{8})\.png$")


class IngestError(ValueError):
    """A raw input file is unreadable or malformed; the message names file and row or image."""


@dataclass(frozen=True)
class IngestOutputs:
    """The interim folder written for each dataset."""

    fer2013: Path
    ckplus: Path


def ingest(settings: IngestSettings) -> IngestOutputs:
    """Read both datasets, then write both: a bad file leaves earlier outputs untouched."""
    fer = read_fer2013_csv(settings.fer2013, settings)
    ckplus = read_ckplus48(settings.ckplus, settings)
    outputs = IngestOutputs(settings.out_dir / "fer2013", settings.out_dir / "ckplus")
    write_dataset(outputs.fer2013, fer)
    write_dataset(outputs.ckplus, ckplus)
    return outputs


# --- FER2013 -------------------------------------------------------------------------------


def read_fer2013_csv(path: Path, settings: IngestSettings) -> Dataset:
    """Parse the canonical Kaggle ``emotion,pixels,Usage`` csv (plain or .gz)."""
    table = _read_csv_table(path)
    usages = table["Usage"].to_numpy()
    unknown_usage = ~np.isin(usages, list(settings.usage_splits))
    if unknown_usage.any():
        row = int(np.flatnonzero(unknown_usage)[0])
        raise IngestError(
            f"{path}: row {row} (line {row + 2}): Usage {usages[row]!r} is not one of "
            f"{', '.join(settings.usage_splits)} (ingest.usage_splits)"
        )
    label_names = [_fer2013_label(path, row, code) for row, code in enumerate(table["emotion"])]
    pixels = np.stack(
        [
            _parse_pixels(path, row, text)
            for row, text in enumerate(tqdm(table["pixels"], desc=f"parse {path.name}", unit="img"))
        ]
    )
    splits = _fer2013_splits(usages, np.asarray(label_names), settings)
    manifest = pd.DataFrame(
        {
            "id": [f"fer2013-{row:05d}" for row in range(len(table))],
            "dataset": "fer2013",
            "split": splits,
            "label": label_names,
            "subject": "",
            "sequence": "",
            "frame": -1,
            "source": [f"{path.name}:row {row}" for row in range(len(table))],
        }
    )
    return Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)


def _read_csv_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise IngestError(f"{path}: file not found (ingest.fer2013 in params.yaml)") from None
    except pd.errors.EmptyDataError:
        raise IngestError(f"{path}: file is empty, expected a header {','.join(FER2013_COLUMNS)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as err:
        raise IngestError(f"{path}: not a readable csv: {err}") from None
    missing = [c for c in FER2013_COLUMNS if c not in table.columns]
    if missing:
        raise IngestError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"the header is {','.join(table.columns)}, expected {','.join(FER2013_COLUMNS)}"
        )
    if table.empty:
        raise IngestError(f"{path}: has a header but no rows")
    blank = (table.loc[:, list(FER2013_COLUMNS)] == "").any(axis=1).to_numpy()
    if blank.any():
        row = int(np.flatnonzero(blank)[0])
        empty = [c for c in FER2013_COLUMNS if table.at[row, c] == ""]
        raise IngestError(
            f"{path}: row {row} (line {row + 2}): empty {', '.join(empty)} (is the file truncated?)"
        )
    return table


def _fer2013_label(path: Path, row: int, code: str) -> str:
    try:
        return labels.FER2013_CODES[int(code)]
    except (ValueError, KeyError):
        raise IngestError(
            f"{path}: row {row} (line {row + 2}): emotion {code!r} is not a FER2013 code "
            f"0..{max(labels.FER2013_CODES)}"
        ) from None


def _parse_pixels(path: Path, row: int, text: str) -> np.ndarray:
    where = f"{path}: row {row} (line {row + 2})"
    tokens = text.split()
    if len(tokens) != PIXELS_PER_IMAGE:
        raise IngestError(f"{where}: {len(tokens)} pixels, expected {PIXELS_PER_IMAGE}")
    try:
        values = np.array(tokens, dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise IngestError(f"{where}: pixel {bad!r} is not an integer") from None
    if values.min() < 0 or values.max() > 255:
        raise IngestError(f"{where}: pixel values must be 0..255, found {values.min()}..{values.max()}")
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
    rng = np.random.default_rng(settings.seed)
    for label in np.unique(label_names):
        members = np.flatnonzero((splits == "train") & (label_names == label))
        take = int(round(len(members) * settings.val_fraction))
        splits[rng.permutation(members)[:take]] = "val"
    return splits


# --- CK+48 ---------------------------------------------------------------------------------


def read_ckplus48(root: Path, settings: IngestSettings) -> Dataset:
    """Read the CK+48 layout ``<class>/S<subject>_<sequence>_<frame>.png``.

    Each labelled sequence keeps its last ``ckplus_peak_frames`` frames with the sequence's
    emotion and, when the sequence is longer, its first frame as neutral (CK+ sequences start
    from a neutral face). Splits are drawn by subject: frames of one person are near-identical,
    so splitting by image would leak.
    """
    if not root.is_dir():
        raise IngestError(f"{root}: CK+48 folder not found (ingest.ckplus in params.yaml)")
    records = [_ckplus48_record(root, png) for png in sorted(root.glob("*/*.png"))]
    if not records:
        raise IngestError(f"{root}: no <class>/S<subject>_<sequence>_<frame>.png images found")
    frames = pd.DataFrame(records).sort_values(["subject", "sequence", "frame"], kind="stable")
    kept = pd.concat(
        [_label_sequence(seq, settings) for _, seq in frames.groupby(["subject", "sequence"], sort=True)]
    ).reset_index(drop=True)
    kept["split"] = _subject_splits(kept["subject"], settings)
    pixels = np.stack([_read_png(root / source) for source in kept["source"]])
    kept["id"] = "ckplus-" + kept["stem"]
    kept["dataset"] = "ckplus"
    kept = kept.drop(columns=["stem"])
    return Dataset(pd.concat([kept, describe_pixels(pixels)], axis=1), pixels)


def _ckplus48_record(root: Path, png: Path) -> dict[str, object]:
    folder = png.parent.name
    if folder not in labels.CKPLUS48_FOLDERS:
        raise IngestError(
            f"{png.parent}: class folder {folder!r} is not in the CK+48 label map "
            f"({', '.join(labels.CKPLUS48_FOLDERS)})"
        )
    match = CKPLUS48_NAME.match(png.name)
    if not match:
        raise IngestError(f"{png}: file name is not S<subject>_<sequence>_<frame>.png (e.g. S005_001_00000011.png)")
    subject, sequence, frame = match.groups()
    return {
        "stem": png.stem,
        "label": labels.CKPLUS48_FOLDERS[folder],
        "subject": f"S{subject}",
        "sequence": sequence,
        "frame": int(frame),
        "source": str(png.relative_to(root)),
    }


def _label_sequence(seq: pd.DataFrame, settings: IngestSettings) -> pd.DataFrame:
    peak = seq.tail(settings.ckplus_peak_frames)
    if settings.ckplus_first_frame_neutral and len(seq) > settings.ckplus_peak_frames:
        onset = seq.head(1).assign(label="neutral")
        return pd.concat([onset, peak])
    return peak


def _subject_splits(subjects: pd.Series, settings: IngestSettings) -> list[str]:
    unique = sorted(subjects.unique())
    order = np.random.default_rng(settings.seed).permutation(len(unique))
    counts = split_counts(len(unique), settings.ckplus_split_fractions)
    names = np.repeat(list(counts), list(counts.values()))
    split_of = {unique[i]: str(names[rank]) for rank, i in enumerate(order)}
    return [split_of[s] for s in subjects]


def split_counts(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """Share ``total`` groups by ``fractions`` (largest remainder), at least one per split.

    A small set (a test fixture, a subset of subjects) must still give every requested
    split a member, or validation rightly fails on an empty split.
    """
    wanted = {name: f for name, f in fractions.items() if f > 0}
    exact = {name: total * f / sum(wanted.values()) for name, f in wanted.items()}
    counts = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)[: total - sum(counts.values())]:
        counts[name] += 1
    for name in counts:
        while counts[name] == 0 and total >= len(counts):
            donor = max(counts, key=counts.get)
            counts[donor] -= 1
            counts[name] += 1
    return counts


def _read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise IngestError(f"{path}: cannot decode the image (corrupt or not a PNG)")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise IngestError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    if image.dtype != np.uint8:
        raise IngestError(f"{path}: image is {image.dtype}, expected 8-bit grayscale")
    return image
