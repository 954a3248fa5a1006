"""The interim dataset format that ingest writes and every later stage reads.

One folder per dataset holding ``manifest.parquet`` (one row per image, in the order of
``pixels.npy``) and ``pixels.npy`` (uint8, N x 48 x 48). Keeping pixels in one array rather
than in the table makes later stages memory-map them instead of parsing strings again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.artifacts import atomic_dir

IMAGE_SIZE = 48
COLUMNS: tuple[str, ...] = (
    "id",  # unique within the dataset, stable across runs
    "dataset",
    "split",  # train | val | test
    "label",  # canonical emotion name (components.labels.CANONICAL)
    "subject",  # CK+ subject, empty for FER2013
    "sequence",  # CK+ sequence, empty for FER2013
    "frame",  # frame number inside the sequence, -1 for FER2013
    "source",  # where the image came from: "file:row N" or a file path
    "sha256",  # hash of the 48x48 pixels, for duplicate detection
    "pixel_mean",
    "pixel_std",
)
MANIFEST = "manifest.parquet"
PIXELS = "pixels.npy"


@dataclass(frozen=True)
class Dataset:
    """An ingested dataset: its manifest and its pixels, row-aligned."""

    manifest: pd.DataFrame
    pixels: np.ndarray


def describe_pixels(pixels: np.ndarray) -> pd.DataFrame:
    """Per-image content hash and statistics, used for validation and duplicates."""
    import hashlib

    flat = pixels.reshape(len(pixels), -1)
    return pd.DataFrame(
        {
            "sha256": [hashlib.sha256(row.tobytes()).hexdigest() for row in flat],
            "pixel_mean": flat.mean(axis=1).astype("float64"),
            "pixel_std": flat.std(axis=1).astype("float64"),
        }
    )


def write_dataset(folder: Path | str, dataset: Dataset) -> None:
    """Write manifest and pixels together, atomically (both or neither)."""
    missing = set(COLUMNS) - set(dataset.manifest.columns)
    if missing:
        raise ValueError(f"manifest lacks columns: {', '.join(sorted(missing))}")
    if len(dataset.manifest) != len(dataset.pixels):
        raise ValueError(
            f"manifest has {len(dataset.manifest)} rows but there are {len(dataset.pixels)} images"
        )
    with atomic_dir(folder) as tmp:
        dataset.manifest.loc[:, list(COLUMNS)].reset_index(drop=True).to_parquet(
            tmp / MANIFEST, index=False
        )
        np.save(tmp / PIXELS, np.ascontiguousarray(dataset.pixels, dtype=np.uint8))


def read_dataset(folder: Path | str, mmap: bool = True) -> Dataset:
    """Read an ingested dataset; pixels are memory-mapped unless ``mmap`` is false."""
    folder = Path(folder)
    manifest = pd.read_parquet(folder / MANIFEST)
    pixels = np.load(folder / PIXELS, mmap_mode="r" if mmap else None)
    return Dataset(manifest=manifest, pixels=pixels)
