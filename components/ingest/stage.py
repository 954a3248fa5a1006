"""Ingest: raw dataset files as users download them -> the interim format (manifest + pixels).

This is the boundary where outside data enters the pipeline, so every check that can name
the offending file and row happens here; later stages trust what ingest wrote.

Which reader runs is told by what each configured path holds; each layout has its module:
``fer2013_csv`` (the Kaggle csv, with ``ferplus`` votes), ``fer2013_folders`` (Kaggle image
folders), ``ckplus48`` (the CK+48 crops) and ``ckplus_original`` (the original CK+
distribution). What happens to a malformed row or image is ``bad_records``' business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from emoflow.components.artifacts import staged_dir
from emoflow.components.ingest.bad_records import QUARANTINE_JSON, IngestError, Quarantine
from emoflow.components.ingest.ckplus48 import read_ckplus48
from emoflow.components.ingest.ckplus_original import is_original_layout, read_ckplus_original
from emoflow.components.ingest.fer2013_csv import read_fer2013_csv, write_fer2013_csv
from emoflow.components.ingest.fer2013_folders import read_fer2013_folders
from emoflow.components.manifest import Dataset, write_dataset
from emoflow.components.provenance import source_record
from emoflow.components.settings import IngestSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutputs:
    """The interim folder written for each dataset, and the quarantine report if any."""

    fer2013: Path
    ckplus: Path
    quarantine: Path | None = None


def ingest(settings: IngestSettings) -> IngestOutputs:
    """Read and write both datasets, then publish them together: all of them or none.

    Everything is built in a staging folder beside ``ingest.out_dir`` that replaces it only
    once both datasets (and the quarantine report) are complete, so a bad file or a kill
    leaves the previous outputs whole. The FER2013 csv is parsed straight into the staging
    folder, a chunk at a time (``fer2013_csv.write_fer2013_csv``).
    """
    quarantine = Quarantine(settings.on_bad_record)
    with staged_dir(settings.out_dir, owns=("fer2013", "ckplus", QUARANTINE_JSON)) as staging:
        _write_fer2013(settings.fer2013, settings, staging / "fer2013", quarantine)
        ckplus = read_ckplus(settings.ckplus, settings, quarantine)
        write_dataset(staging / "ckplus", ckplus, source_record(settings.ckplus))
        if quarantine.skip:
            quarantine.write(staging / QUARANTINE_JSON)
    report = settings.out_dir / QUARANTINE_JSON
    if quarantine.records:
        log.warning("%d bad records were left out; %s lists them", len(quarantine.records), report)
    return IngestOutputs(
        settings.out_dir / "fer2013",
        settings.out_dir / "ckplus",
        report if quarantine.skip else None,
    )


def _write_fer2013(
    path: Path, settings: IngestSettings, folder: Path, quarantine: Quarantine
) -> None:
    """Write FER2013's interim files into ``folder``; the csv streams, image folders do not."""
    if path.is_dir():
        write_dataset(folder, read_fer2013(path, settings, quarantine), source_record(path))
    else:
        folder.mkdir()
        write_fer2013_csv(path, settings, folder, source_record(path), quarantine)


def read_fer2013(
    path: Path, settings: IngestSettings, quarantine: Quarantine | None = None
) -> Dataset:
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


def read_ckplus(
    root: Path, settings: IngestSettings, quarantine: Quarantine | None = None
) -> Dataset:
    """CK+ from the original distribution (``cohn-kanade-images/``) or the CK+48 crops."""
    if quarantine is None:
        quarantine = Quarantine(settings.on_bad_record)
    if is_original_layout(root):
        return read_ckplus_original(root, settings, quarantine)
    return read_ckplus48(root, settings, quarantine)
