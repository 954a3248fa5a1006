"""Reader of the original CK+ distribution: full video frames, emotion codes in text files.

```
<ckplus>/cohn-kanade-images/S005/001/S005_001_00000001.png ... S005_001_00000011.png
<ckplus>/Emotion/S005/001/S005_001_00000011_emotion.txt      holding "   3.0000000e+00"
```

Only 327 of CK+'s 593 sequences have an emotion file; the others are left out, as every
CK+ benchmark does. Frames are cropped to the face with OpenCV (``components.ingest.ckplus_crop``),
which is how the CK+48 crops were made, so both layouts feed the same kind of image on.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from emoflow.components import labels
from emoflow.components.ingest.bad_records import BadRecord, IngestError, Quarantine
from emoflow.components.ingest.ckplus_crop import center_box, crop_48, find_face
from emoflow.components.ingest.ckplus_sequences import FRAME_COLUMNS, ckplus_dataset, keep_frames
from emoflow.components.ingest.image_files import read_all, read_gray
from emoflow.components.manifest import Dataset
from emoflow.components.settings import IngestSettings

IMAGES = "cohn-kanade-images"
EMOTION = "Emotion"
EMOTION_FILE = "*_emotion.txt"


def is_original_layout(root: Path) -> bool:
    """The original distribution holds its frames under ``cohn-kanade-images/``."""
    return (root / IMAGES).is_dir()


def read_ckplus_original(root: Path, settings: IngestSettings, quarantine: Quarantine) -> Dataset:
    """Labelled sequences, frames kept and labelled as for CK+48, each cropped to the face."""
    emotion_root = root / EMOTION
    if not emotion_root.is_dir():
        raise IngestError(
            f"{root}: holds {IMAGES}/ but no {EMOTION}/ folder; CK+ labels are "
            f"{EMOTION}/S<subject>/<sequence>/S<subject>_<sequence>_<frame>_emotion.txt"
        )
    frames: list[dict[str, object]] = []
    bad: list[BadRecord] = []
    for labels_dir in sorted(p for p in emotion_root.glob("*/*") if p.is_dir()):
        label_files = sorted(labels_dir.glob(EMOTION_FILE))
        if not label_files:
            continue  # an unlabelled sequence
        try:
            frames.extend(_sequence_frames(root, labels_dir, label_files))
        except BadRecord as err:
            bad.append(err)
    quarantine.set_aside(bad)
    if not frames:
        raise IngestError(f"{root}: no labelled sequence found ({EMOTION}/S*/*/{EMOTION_FILE})")
    kept = keep_frames(pd.DataFrame(frames, columns=list(FRAME_COLUMNS)), settings)
    sources = tqdm(list(kept["source"]), desc="crop CK+ faces", unit="img")
    read, pixels = read_all(sources, lambda source: _face_48(root / source, settings), quarantine)
    return ckplus_dataset(kept.iloc[read], pixels, settings, root)


def _sequence_frames(
    root: Path, labels_dir: Path, label_files: list[Path]
) -> list[dict[str, object]]:
    """One record per frame of a labelled sequence; a bad sequence is one bad record."""
    subject, sequence = labels_dir.parent.name, labels_dir.name
    if len(label_files) > 1:
        names = ", ".join(f.name for f in label_files)
        raise BadRecord(
            labels_dir, f"{len(label_files)} emotion files ({names}), expected one per sequence"
        )
    label = read_emotion(label_files[0])
    frames_dir = root / IMAGES / subject / sequence
    pngs = sorted(frames_dir.glob("*.png"))
    if not pngs:
        raise BadRecord(
            frames_dir, f"sequence has no frames (*.png), yet {label_files[0].name} labels it"
        )
    name = re.compile(rf"^{re.escape(subject)}_{re.escape(sequence)}_(\d{{8}})\.png$")
    records = []
    for png in pngs:
        match = name.match(png.name)
        if not match:
            raise BadRecord(png, f"file name is not {subject}_{sequence}_<8-digit frame>.png")
        records.append(
            {
                "stem": png.stem,
                "label": label,
                "subject": subject,
                "sequence": sequence,
                "frame": int(match[1]),
                "source": png.relative_to(root).as_posix(),
            }
        )
    return records


def read_emotion(path: Path) -> str:
    """The canonical emotion of a CK+ emotion file, which holds one code as a float."""
    text = path.read_text(errors="replace").strip()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer() or int(value) not in labels.CKPLUS_CODES:
        codes = ", ".join(f"{code} {name}" for code, name in labels.CKPLUS_CODES.items())
        raise BadRecord(path, f"emotion code {text!r} is not a CK+ code ({codes})")
    return labels.CKPLUS_CODES[int(value)]


def _face_48(path: Path, settings: IngestSettings) -> np.ndarray:
    gray = read_gray(path)
    box = find_face(gray)
    if box is None:
        if settings.ckplus_no_face == "error":
            raise BadRecord(
                path,
                "no face found by OpenCV's frontal-face Haar cascade "
                "(ingest.ckplus_no_face: center_crop crops a centred square instead)",
            )
        box = center_box(gray)
    return crop_48(gray, box)
