"""The interim dataset format that ingest writes and every later stage reads.

One folder per dataset holding ``manifest.parquet`` (one row per image, in the order of
``pixels.npy``) and ``pixels.npy`` (uint8, N x 48 x 48). Keeping pixels in one array rather
than in the table makes later stages memory-map them instead of parsing strings again.
A dataset with label distributions (FER+ votes) also holds ``soft_labels.npy`` (float32,
N x 8, columns in ``labels.CANONICAL`` order, rows summing to 1), row-aligned the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emoflow.components import labels
from emoflow.components.artifacts import atomic_dir
from emoflow.components.provenance import write_provenance

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
    "fold",  # CK+ cross-validation fold, grouped by subject; -1 where a dataset has none
    "sha256",  # hash of the 48x48 pixels, for duplicate detection
    "pixel_mean",
    "pixel_std",
)
# Filled in when a dataset leaves them out: only CK+ has cross-validation folds.
DEFAULTS: dict[str, object] = {"fold": -1}
MANIFEST = "manifest.parquet"
STATS_CHUNK = 4096  # images per block when computing pixel statistics
PIXELS = "pixels.npy"
SOFT_LABELS = "soft_labels.npy"


@dataclass(frozen=True)
class Dataset:
    """An ingested dataset: its manifest, its pixels and, optionally, soft labels, row-aligned."""

    manifest: pd.DataFrame
    pixels: np.ndarray
    soft_labels: np.ndarray | None = None


def describe_pixels(pixels: np.ndarray) -> pd.DataFrame:
    """Per-image content hash and statistics, used for validation and duplicates."""
    import hashlib

    flat = pixels.reshape(len(pixels), -1)
    # Statistics in chunks: one float64 copy of all FER2013 pixels would add ~600 MB.
    chunks = [
        flat[start : start + STATS_CHUNK].astype(np.float64)
        for start in range(0, len(flat), STATS_CHUNK)
    ]
    return pd.DataFrame(
        {
            "sha256": [hashlib.sha256(row.tobytes()).hexdigest() for row in flat],
            "pixel_mean": np.concatenate([c.mean(axis=1) for c in chunks] or [np.zeros(0)]),
            "pixel_std": np.concatenate([c.std(axis=1) for c in chunks] or [np.zeros(0)]),
        }
    )


def write_dataset(folder: Path | str, dataset: Dataset, provenance: dict | None = None) -> None:
    """Write manifest, pixels, soft labels and the provenance record together, atomically."""
    manifest = _checked_manifest(dataset.manifest, len(dataset.pixels), dataset.soft_labels)
    with atomic_dir(folder) as tmp:
        np.save(tmp / PIXELS, np.ascontiguousarray(dataset.pixels, dtype=np.uint8))
        _write_beside_pixels(tmp, manifest, dataset.soft_labels, provenance)


def write_beside_pixels(
    folder: Path,
    manifest: pd.DataFrame,
    soft_labels: np.ndarray | None,
    provenance: dict | None,
) -> None:
    """Complete a dataset folder whose ``pixels.npy`` was streamed in already: the manifest,
    soft labels and provenance record, checked against the pixels as write_dataset checks."""
    images = np.load(folder / PIXELS, mmap_mode="r").shape[0]  # the header only
    checked = _checked_manifest(manifest, images, soft_labels)
    _write_beside_pixels(folder, checked, soft_labels, provenance)


def _checked_manifest(manifest: pd.DataFrame, images: int, soft: np.ndarray | None) -> pd.DataFrame:
    """The manifest with default columns filled in, in column order, or a clear error when it
    does not describe ``images`` images (and their soft labels)."""
    manifest = manifest.assign(
        **{column: value for column, value in DEFAULTS.items() if column not in manifest}
    )
    missing = set(COLUMNS) - set(manifest.columns)
    if missing:
        raise ValueError(f"manifest lacks columns: {', '.join(sorted(missing))}")
    if len(manifest) != images:
        raise ValueError(f"manifest has {len(manifest)} rows but there are {images} images")
    if soft is not None and soft.shape != (len(manifest), len(labels.CANONICAL)):
        raise ValueError(
            f"soft labels have shape {soft.shape}, expected ({len(manifest)}, "
            f"{len(labels.CANONICAL)})"
        )
    return manifest.loc[:, list(COLUMNS)].reset_index(drop=True)


def _write_beside_pixels(
    folder: Path, manifest: pd.DataFrame, soft: np.ndarray | None, provenance: dict | None
) -> None:
    manifest.to_parquet(folder / MANIFEST, index=False)
    if soft is not None:
        np.save(folder / SOFT_LABELS, np.ascontiguousarray(soft, dtype=np.float32))
    if provenance is not None:
        write_provenance(folder, provenance)


def read_dataset(folder: Path | str, mmap: bool = True) -> Dataset:
    """Read an ingested dataset; arrays are memory-mapped unless ``mmap`` is false."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():  # validate, preprocess and reference all land here
        raise FileNotFoundError(
            f"{folder / MANIFEST}: no ingested dataset here; run emoflow ingest first"
        )
    mode = "r" if mmap else None
    manifest = pd.read_parquet(folder / MANIFEST)
    pixels = np.load(folder / PIXELS, mmap_mode=mode)
    soft = (
        np.load(folder / SOFT_LABELS, mmap_mode=mode) if (folder / SOFT_LABELS).is_file() else None
    )
    return Dataset(manifest=manifest, pixels=pixels, soft_labels=soft)
