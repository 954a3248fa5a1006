"""Cropping the face out of a full CK+ frame, as the CK+48 crops were made: 48x48 grey.

Detection and cropping are the serving code's (``components.serving.detection``), so a CK+ face used
for training and a face found in a webcam frame are cut out the same way. CK+ is filmed
frontally with the face filling about half the frame, so a detection smaller than a
quarter of the frame's short side is background texture, not the subject; the largest
detection is the face.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from emoflow.components.serving.detection import HAAR_CASCADE, HaarDetector, crop_faces
from emoflow.components.settings import ServeSettings

MIN_FACE_FRACTION = 0.25  # of the frame's short side

Box = tuple[int, int, int, int]  # x, y, width, height


@cache
def _detector() -> HaarDetector:
    return HaarDetector(HAAR_CASCADE, ServeSettings())


def find_face(gray: np.ndarray) -> Box | None:
    """The largest frontal face in a grey frame, or None when the cascade finds none."""
    faces = _detector()(gray, int(min(gray.shape) * MIN_FACE_FRACTION))[:, :4]  # no score
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda box: int(box[2]) * int(box[3]))
    return int(x), int(y), int(w), int(h)


def center_box(gray: np.ndarray) -> Box:
    """The largest centred square: the fallback when no face is found."""
    height, width = gray.shape
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side, side


def crop_48(gray: np.ndarray, box: Box) -> np.ndarray:
    """The box as a 48x48 face, with no margin: CK+48's crops are tight."""
    return crop_faces(gray, np.array([box], np.int64), margin=0.0)[0]
