"""Reading the image files of the folder layouts (CK+48, CK+ original, FER2013 on Kaggle).

Pillow decodes them because it notices truncated files (OpenCV decodes a cut-off JPEG
into a grey-filled image with only a warning on stderr), and every failure becomes a
:class:`BadRecord` naming the image, so ``ingest.on_bad_record`` decides what happens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from emoflow.components.ingest.bad_records import BadRecord, Quarantine
from emoflow.components.manifest import IMAGE_SIZE

T = TypeVar("T")


def read_gray(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode any still image into 8-bit grayscale (16-bit images keep their top 8 bits).

    With ``size`` (width, height), an image of another size is refused from its header,
    before decoding: a 12000x12000 PNG among 48x48 crops would otherwise cost 144 MB and
    seconds to decode, only to be refused.
    """
    try:
        with Image.open(path) as image:
            if size is not None and image.size != size:
                raise BadRecord(
                    path, f"image is {image.width}x{image.height}, expected {size[0]}x{size[1]}"
                )
            image.load()
            if image.mode.startswith("I;16"):
                return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
            return np.asarray(image.convert("L"))
    except BadRecord:  # a ValueError too, but already names what is wrong
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise BadRecord(path, f"cannot decode the image ({err})") from None


def read_face_48(path: Path) -> np.ndarray:
    """An already cropped face (CK+48, FER2013 folders): must be 48x48 as distributed."""
    return read_gray(path, (IMAGE_SIZE, IMAGE_SIZE))


def read_all(
    items: Iterable[T], read: Callable[[T], np.ndarray], quarantine: Quarantine
) -> tuple[list[int], np.ndarray]:
    """Read every item; return the positions that were read and their 48x48 pixels.

    Bad images go to ``quarantine`` (which raises the first one unless they are skipped).
    """
    kept: list[int] = []
    images: list[np.ndarray] = []
    bad: list[BadRecord] = []
    for position, item in enumerate(items):
        try:
            images.append(read(item))
            kept.append(position)
        except BadRecord as err:
            bad.append(err)
    quarantine.set_aside(bad)
    pixels = np.stack(images) if images else np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return kept, pixels
