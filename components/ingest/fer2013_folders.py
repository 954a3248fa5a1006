"""Reader of FER2013 in the image-folder layout it is mostly downloaded in from Kaggle.

```
<fer2013>/train/<class>/*.png|jpg     class: angry disgust fear happy neutral sad surprise
<fer2013>/test/<class>/*.png|jpg
```

This layout has no Usage column and no row order: ``train`` becomes train with a
stratified, seeded validation carve (``ingest.val_fraction``), ``test`` becomes test. FER+
votes cannot be joined to it (they are aligned with the csv's rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from emoflow.components import labels
from emoflow.components.ingest.bad_records import BadRecord, IngestError, Quarantine
from emoflow.components.ingest.image_files import read_all, read_face_48
from emoflow.components.ingest.splits import carve_validation
from emoflow.components.manifest import Dataset, describe_pixels
from emoflow.components.settings import IngestSettings

SPLIT_FOLDERS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_fer2013_folders(root: Path, settings: IngestSettings, quarantine: Quarantine) -> Dataset:
    """Every image of ``train/`` and ``test/``, labelled by its class folder."""
    _check_layout(root)
    images: list[Path] = []
    bad: list[BadRecord] = []
    for split in SPLIT_FOLDERS:
        for class_dir in sorted(
            p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if class_dir.name in labels.FER2013_FOLDERS:
                images.extend(found)
            else:
                bad.append(
                    BadRecord(
                        class_dir,
                        f"class folder {class_dir.name!r} is not in the FER2013 label map "
                        f"({', '.join(labels.FER2013_FOLDERS)}); it holds {len(found)} images",
                    )
                )
    quarantine.set_aside(bad)
    if not images:
        raise IngestError(f"{root}: no images in train/<class>/ or test/<class>/ (*.png, *.jpg)")
    read, pixels = read_all(
        tqdm(images, desc=f"read {root.name}", unit="img"), read_face_48, quarantine
    )
    relative = [images[i].relative_to(root) for i in read]
    split_of = np.array([path.parts[0] for path in relative], dtype=object)
    label_of = np.array([labels.FER2013_FOLDERS[path.parts[1]] for path in relative], dtype=object)
    manifest = pd.DataFrame(
        {
            "id": [f"fer2013-{path.with_suffix('').as_posix()}" for path in relative],
            "dataset": "fer2013",
            "split": carve_validation(split_of, label_of, settings.val_fraction, settings.seed),
            "label": label_of,
            "subject": "",
            "sequence": "",
            "frame": -1,
            "source": [path.as_posix() for path in relative],
        }
    )
    return Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)


def _check_layout(root: Path) -> None:
    folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if missing := [name for name in SPLIT_FOLDERS if name not in folders]:
        raise IngestError(
            f"{root}: no {' or '.join(missing)} folder; the FER2013 image-folder layout is "
            "train/<class>/*.png|jpg and test/<class>/*.png|jpg"
        )
    if unexpected := sorted(folders - set(SPLIT_FOLDERS)):
        raise IngestError(
            f"{root}: unexpected folder(s) {', '.join(unexpected)}; expected only train/ and test/"
        )
