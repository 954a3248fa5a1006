"""From a gray image to the faces the network reads: detect, crop, normalise.

The network was trained on 48x48 grayscale face crops; consumers have photos and video
frames. EmoPy's predictor resized the whole frame to 48x48 and skipped the normalisation,
so it fed the network something it had never seen. Here every image goes through one path:
gray (``components.serving.image_input``) -> face boxes (OpenCV's Haar cascade or YuNet, or
MTCNN) -> square crops with a margin -> 48x48 -> the training pipeline's own
``components.model_input.to_model_input`` (see :func:`model_input`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from emoflow.components.manifest import IMAGE_SIZE
from emoflow.components.settings import ServeSettings

if TYPE_CHECKING:
    import tensorflow as tf

HAAR_CASCADE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Faces:
    """The faces found in one image."""

    boxes: np.ndarray  # int64 [K, 4]: x, y, width, height in the image's pixels
    crops: np.ndarray  # uint8 [K, 48, 48]: what the network reads, before normalisation
    # float64 [K]: the detector's confidence in each face, 0..1; NaN where it gives none
    # (Haar cascades, faces at known boxes, whole images in face-crop mode)
    scores: np.ndarray


# --- Detection -----------------------------------------------------------------------------
# A detector maps a gray image and the smallest (and largest) face side to float64 [K, 5]:
# x, y, width, height, score.


def _with_scores(boxes: np.ndarray, scores: np.ndarray | float = np.nan) -> np.ndarray:
    found = np.empty((len(boxes), 5), np.float64)
    found[:, :4] = np.asarray(boxes).reshape(-1, 4)
    found[:, 4] = scores
    return found


class HaarDetector:
    """OpenCV's Viola-Jones cascade: fast on a CPU, frontal faces only, no score per face
    (``min_neighbors`` is its threshold)."""

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
        return _with_scores(np.asarray(boxes, np.int64).reshape(-1, 4))


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
            return _with_scores(np.zeros((0, 4)))
        return _sized(_with_scores(np.rint(found[:, :4]), found[:, 14]), min_side, max_side)


class MtcnnDetector:
    """The ``mtcnn`` package's three CNNs (P-, R- and O-Net, Zhang et al. 2016) on TensorFlow,
    with the weights its wheel ships: slower than Haar, but it finds turned faces and scores
    each one (O-Net's confidence, kept from ``score_threshold`` up).

    Each stage is handed its weights' full path: given a bare name, mtcnn 1.0 first unpickles
    a file of that name from the working directory. Its networks are called eagerly, one op
    at a time; traced into one ``tf.function`` each they give the same boxes ~10x faster (a
    640x480 frame: ~0.7 s -> ~65 ms here). mtcnn 1.0's image pyramid breaks for a
    ``min_face_size`` above ~23 px (its scale count ignores it), so the image is shrunk until
    the smallest face wanted is 20 px instead, which is also faster.
    """

    PYRAMID_FACE_PX = 20
    SMALLEST_IMAGE_PX = 24  # below this P-Net's pyramid has no level to run

    def __init__(self, settings: ServeSettings):
        from importlib.resources import files

        import tensorflow as tf
        from mtcnn import MTCNN
        from mtcnn.stages import StageONet, StagePNet, StageRNet

        weights = files("mtcnn.assets.weights")
        self._net = MTCNN(
            stages=[
                stage(weights=str(weights / name))
                for stage, name in (
                    (StagePNet, "pnet.lz4"),
                    (StageRNet, "rnet.lz4"),
                    (StageONet, "onet.lz4"),
                )
            ]
        )
        for stage in self._net.stages:  # `_model`: what mtcnn 1.0 (pinned) calls in each stage
            stage._model = tf.function(stage.model, reduce_retracing=True)
        self._settings = settings
        self._lock = threading.Lock()  # one TensorFlow graph state per detector

    def __call__(self, gray: np.ndarray, min_side: int, max_side: int | None = None) -> np.ndarray:
        scale = min(1.0, self.PYRAMID_FACE_PX / min_side)
        small = (
            gray
            if scale == 1.0
            else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        if min(small.shape) < self.SMALLEST_IMAGE_PX:
            return _with_scores(np.zeros((0, 4)))
        with self._lock:
            found = self._net.detect_faces(
                cv2.cvtColor(small, cv2.COLOR_GRAY2RGB),
                min_face_size=round(min_side * scale),
                threshold_onet=self._settings.score_threshold,
            )
        boxes = np.rint(np.array([f["box"] for f in found], np.float64).reshape(-1, 4) / scale)
        scores = np.array([f["confidence"] for f in found], np.float64)
        return _sized(_with_scores(boxes, scores), min_side, max_side)


def _sized(found: np.ndarray, min_side: int, max_side: int | None) -> np.ndarray:
    """The detections whose larger side is within [min_side, max_side]."""
    side = np.maximum(found[:, 2], found[:, 3])
    return found[(side >= min_side) & (side <= (max_side or np.inf))]


def make_detector(settings: ServeSettings, detector_file: Path | None = None):
    """The detector the serve settings name; ``detector_file`` is the model's own copy."""
    if settings.detector == "yunet":
        return YuNetDetector(detector_file or settings.detector_model, settings)
    if settings.detector == "mtcnn":
        return MtcnnDetector(settings)
    return HaarDetector(detector_file or settings.detector_model or HAAR_CASCADE, settings)


class FaceFinder:
    """Gray image -> face boxes and 48x48 crops, as the serve settings say."""

    def __init__(self, settings: ServeSettings, detector_file: Path | None = None):
        self.settings = settings
        self._detect = make_detector(settings, detector_file)

    def detect(self, gray: np.ndarray) -> Faces:
        """Every face in the image, left to right; none is an empty result, not an error."""
        found = self._found(gray)
        return self.at(gray, _boxes(found), found[:, 4])

    def at(self, gray: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None = None) -> Faces:
        """The faces at known boxes, cropped with the margin."""
        scores = np.full(len(boxes), np.nan) if scores is None else np.asarray(scores, np.float64)
        return Faces(boxes, crop_faces(gray, boxes, self.settings.margin), scores)

    def boxes(self, gray: np.ndarray) -> np.ndarray:
        """int64 [K, 4]: the boxes of :meth:`detect`, without cropping."""
        return _boxes(self._found(gray))

    def _found(self, gray: np.ndarray) -> np.ndarray:
        """Detect on a copy shrunk to ``detect_max_side``: Haar's cost grows with the area.

        An image whose short side would be under the smallest face once shrunk holds no face
        to find: a 20000x1 image would shrink to no rows at all, which OpenCV refuses."""
        scale = min(1.0, self.settings.detect_max_side / max(gray.shape))
        if min(gray.shape) * scale < self.settings.min_face_px:
            return _with_scores(np.zeros((0, 4)))
        if scale < 1.0:
            small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            found = self._detect(small, self.settings.min_face_px)
            found[:, :4] = np.rint(found[:, :4] / scale)
        else:
            found = self._detect(gray, self.settings.min_face_px)
        return _in_order(drop_nested(found))

    def boxes_near(
        self, gray: np.ndarray, known: np.ndarray, reach: float = 0.25, resize: float = 1.3
    ) -> np.ndarray:
        """Faces close to known ones (the last video frame's): the detector runs only on each
        known box grown by ``reach`` of its side, for sizes within ``resize`` times its own.

        Detection dominates a frame's cost, most of it for faces far smaller than the one
        already found; a face a few frames old has moved and changed size only a little.
        """
        found = [_with_scores(np.zeros((0, 4)))]
        height, width = gray.shape
        for x, y, w, h in known:
            side = max(w, h)
            grow = round(reach * side)
            left, top = max(0, x - grow), max(0, y - grow)
            region = gray[top : min(height, y + h + grow), left : min(width, x + w + grow)]
            low = max(self.settings.min_face_px, round(side / resize))
            if min(region.shape) >= low:
                found.append(self._detect(region, low, round(side * resize)) + [left, top, 0, 0, 0])
        return _boxes(_in_order(drop_nested(_distinct(np.concatenate(found)))))

    @staticmethod
    def whole(gray: np.ndarray) -> Faces:
        """The image is one face (face-crop mode): no detection, the box is the whole image.

        It is shrunk to the crop's size before it is squared: squared first, a 40000x1 image
        would become 40000x40000 pixels of padding."""
        height, width = gray.shape
        shrink = IMAGE_SIZE / max(height, width)
        if shrink < 1.0:
            size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        crop = crop_faces(gray, np.array([[0, 0, gray.shape[1], gray.shape[0]]]), margin=0.0)
        return Faces(np.array([[0, 0, width, height]], np.int64), crop, np.full(1, np.nan))


def _boxes(found: np.ndarray) -> np.ndarray:
    return found[:, :4].astype(np.int64).reshape(-1, 4)


def _in_order(boxes: np.ndarray) -> np.ndarray:
    """Left to right, then top to bottom: a stable order for tables and tests."""
    return boxes[np.lexsort((boxes[:, 1], boxes[:, 0]))]


def _distinct(boxes: np.ndarray, same: float = 0.5) -> np.ndarray:
    """One box per face where the neighbourhoods of two known faces found it twice."""
    kept: list[np.ndarray] = []
    for box in boxes:
        if all(iou(box, other) < same for other in kept):
            kept.append(box)
    return np.array(kept, boxes.dtype).reshape(-1, boxes.shape[1])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    inter_w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def drop_nested(boxes: np.ndarray, inside: float = 0.5) -> np.ndarray:
    """Drop boxes (rows starting x, y, w, h) lying mostly (``inside`` of their area) within a
    larger box.

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
    from emoflow.components.model_input import to_model_input

    return to_model_input(crops)
