"""From a gray image to the faces the network reads: detect, crop, normalise.

The network was trained on 48x48 grayscale face crops; consumers have photos and video
frames. EmoPy's predictor resized the whole frame to 48x48 and skipped the normalisation,
so it fed the network something it had never seen. Here every image goes through one path:
gray (``components.serving.image_input``) -> face boxes (OpenCV) -> square crops with a
margin -> 48x48 -> the training pipeline's own ``components.model_input.to_model_input``
(see :func:`model_input`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from components.manifest import IMAGE_SIZE
from components.settings import ServeSettings

if TYPE_CHECKING:
    import tensorflow as tf

HAAR_CASCADE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Faces:
    """The faces found in one image."""

    boxes: np.ndarray  # int64 [K, 4]: x, y, width, height in the image's pixels
    crops: np.ndarray  # uint8 [K, 48, 48]: what the network reads, before normalisation


# --- Detection -----------------------------------------------------------------------------


class HaarDetector:
    """OpenCV's Viola-Jones cascade: fast on a CPU, frontal faces only."""

    def __init__(self, cascade: Path, settings: ServeSettings):
        try:
            self._cascade = cv2.CascadeClassifier(str(cascade))
        except (cv2.error, SystemError) as err:  # a malformed XML raises inside OpenCV
            raise ValueError(f"{cascade}: not an OpenCV Haar cascade file ({err})") from None
        if self._cascade.empty():
            raise ValueError(f"{cascade}: not an OpenCV Haar cascade file")
        self._settings = settings
        self._lock = threading.Lock()  # the REST server predicts on worker threads

    def __call__(self, gray: np.ndarray, min_side: int, max_side: int | None = None) -> np.ndarray:
        s = self._settings
        with self._lock:
            boxes = self._cascade.detectMultiScale(
                gray,
                scaleFactor=s.scale_factor,
                minNeighbors=s.min_neighbors,
                minSize=(min_side, min_side),
                maxSize=(max_side, max_side) if max_side else (0, 0),  # (0, 0): no limit
            )
        return np.asarray(boxes, np.int64).reshape(-1, 4)


class YuNetDetector:
    """OpenCV's YuNet CNN (``cv2.FaceDetectorYN``): slower, but finds turned and small faces."""

    def __init__(self, model: Path, settings: ServeSettings):
        if not Path(model).is_file():
            raise FileNotFoundError(f"{model}: YuNet model file not found")
        self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), settings.score_threshold)
        self._settings = settings
        self._lock = threading.Lock()  # setInputSize changes the detector's state

    def __call__(self, gray: np.ndarray, min_side: int, max_side: int | None = None) -> np.ndarray:
        height, width = gray.shape
        with self._lock:
            self._net.setInputSize((width, height))
            _, found = self._net.detect(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
        if found is None:
            return np.zeros((0, 4), np.int64)
        boxes = np.rint(found[:, :4]).astype(np.int64)
        side = np.maximum(boxes[:, 2], boxes[:, 3])
        return boxes[(side >= min_side) & (side <= (max_side or side.max()))]


class FaceFinder:
    """Gray image -> face boxes and 48x48 crops, as the serve settings say."""

    def __init__(self, settings: ServeSettings, detector_file: Path | None = None):
        self.settings = settings
        if settings.detector == "yunet":
            self._detect = YuNetDetector(detector_file or settings.detector_model, settings)
        else:
            self._detect = HaarDetector(
                detector_file or settings.detector_model or HAAR_CASCADE, settings
            )

    def detect(self, gray: np.ndarray) -> Faces:
        """Every face in the image, left to right; none is an empty result, not an error."""
        return self.at(gray, self.boxes(gray))

    def at(self, gray: np.ndarray, boxes: np.ndarray) -> Faces:
        """The faces at known boxes, cropped with the margin."""
        return Faces(boxes, crop_faces(gray, boxes, self.settings.margin))

    def boxes(self, gray: np.ndarray) -> np.ndarray:
        """Detect on a copy shrunk to ``detect_max_side``: Haar's cost grows with the area."""
        scale = min(1.0, self.settings.detect_max_side / max(gray.shape))
        if scale < 1.0:
            small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            boxes = np.rint(self._detect(small, self.settings.min_face_px) / scale).astype(np.int64)
        else:
            boxes = self._detect(gray, self.settings.min_face_px)
        return _in_order(drop_nested(boxes))

    def boxes_near(
        self, gray: np.ndarray, known: np.ndarray, reach: float = 0.25, resize: float = 1.3
    ) -> np.ndarray:
        """Faces close to known ones (the last video frame's): the detector runs only on each
        known box grown by ``reach`` of its side, for sizes within ``resize`` times its own.

        Detection dominates a frame's cost, most of it for faces far smaller than the one
        already found; a face a few frames old has moved and changed size only a little.
        """
        found = [np.zeros((0, 4), np.int64)]
        height, width = gray.shape
        for x, y, w, h in known:
            side = max(w, h)
            grow = round(reach * side)
            left, top = max(0, x - grow), max(0, y - grow)
            region = gray[top : min(height, y + h + grow), left : min(width, x + w + grow)]
            low = max(self.settings.min_face_px, round(side / resize))
            if min(region.shape) >= low:
                found.append(self._detect(region, low, round(side * resize)) + [left, top, 0, 0])
        return _in_order(drop_nested(_distinct(np.concatenate(found))))

    @staticmethod
    def whole(gray: np.ndarray) -> Faces:
        """The image is one face (face-crop mode): no detection, the box is the whole image."""
        box = np.array([[0, 0, gray.shape[1], gray.shape[0]]], np.int64)
        return Faces(box, crop_faces(gray, box, margin=0.0))


def _in_order(boxes: np.ndarray) -> np.ndarray:
    """Left to right, then top to bottom: a stable order for tables and tests."""
    return boxes[np.lexsort((boxes[:, 1], boxes[:, 0]))]


def _distinct(boxes: np.ndarray, same: float = 0.5) -> np.ndarray:
    """One box per face where the neighbourhoods of two known faces found it twice."""
    kept: list[np.ndarray] = []
    for box in boxes:
        if all(iou(box, other) < same for other in kept):
            kept.append(box)
    return np.array(kept, np.int64).reshape(-1, 4)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    inter_w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def drop_nested(boxes: np.ndarray, inside: float = 0.5) -> np.ndarray:
    """Drop boxes lying mostly (``inside`` of their area) within a larger box.

    The cascade also fires on parts of a large face (an eye and brow, a mouth): a second,
    smaller "face" inside the first. Two people's faces do not nest like that.
    """
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    inter_w = np.clip(
        np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None
    )
    inter_h = np.clip(
        np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None
    )
    nested = (inter_w * inter_h >= inside * area[:, None]) & (area[None] > area[:, None])
    return boxes[~nested.any(axis=1)]


# --- Cropping and model input --------------------------------------------------------------


def crop_faces(gray: np.ndarray, boxes: np.ndarray, margin: float) -> np.ndarray:
    """Square crops around each box, grown by ``margin`` per side, resized to 48x48.

    Squares keep a face's proportions, as the datasets' crops do; parts outside the image
    repeat its edge pixels rather than stretch the face.
    """
    crops = [_square(gray, box, margin) for box in boxes]
    return np.stack(crops) if crops else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


def _square(gray: np.ndarray, box: Sequence[int], margin: float) -> np.ndarray:
    x, y, w, h = (int(v) for v in box)
    side = max(1, round(max(w, h) * (1.0 + 2.0 * margin)))
    left, top = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    pad = max(0, -left, -top, left + side - gray.shape[1], top + side - gray.shape[0])
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        left, top = left + pad, top + pad
    patch = gray[top : top + side, left : left + side]
    if side == IMAGE_SIZE:
        return np.ascontiguousarray(patch)  # already the training size: no resampling at all
    shrink = cv2.INTER_AREA if side > IMAGE_SIZE else cv2.INTER_LINEAR
    return cv2.resize(patch, (IMAGE_SIZE, IMAGE_SIZE), interpolation=shrink)


def model_input(crops: np.ndarray) -> tf.Tensor:
    """48x48 face crops -> the network's input, by the very function training uses.

    TensorFlow is imported here, not at the top: ingest crops CK+ frames with this module
    and never runs a network.
    """
    from components.model_input import to_model_input

    return to_model_input(crops)
