"""CK+48: the aligned 48x48 crops of CK+, ``<class>/S<subject>_<sequence>_<frame>.png``."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from emoflow.components import labels
from emoflow.components.ingest.bad_records import BadRecord, IngestError, Quarantine
from emoflow.components.ingest.ckplus_sequences import FRAME_COLUMNS, ckplus_dataset, keep_frames
from emoflow.components.ingest.image_files import read_all, read_face_48
from emoflow.components.manifest import Dataset
from emoflow.components.settings import IngestSettings

CKPLUS48_NAME = re.compile(r"^S(\d{3})_(\d{3})_(\d{8})\.png$")


def read_ckplus48(
    root: Path, settings: IngestSettings, quarantine: Quarantine | None = None
) -> Dataset:
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
    read, pixels = read_all(
        list(kept["source"]), lambda source: read_face_48(root / source), quarantine
    )
    return ckplus_dataset(kept.iloc[read], pixels, settings, root)


def _ckplus48_record(root: Path, png: Path) -> dict[str, object]:
    match = CKPLUS48_NAME.match(png.name)
    if not match:
        raise BadRecord(
            png, "file name is not S<subject>_<sequence>_<frame>.png (e.g. S005_001_00000011.png)"
        )
    subject, sequence, frame = match.groups()
    return {
        "stem": png.stem,
        "label": labels.CKPLUS48_FOLDERS[png.parent.name],
        "subject": f"S{subject}",
        "sequence": sequence,
        "frame": int(frame),
        "source": str(png.relative_to(root)),
    }
