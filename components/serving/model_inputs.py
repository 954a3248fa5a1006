"""What the registry model takes, and how it tells one form of input from another.

Consumers arrive with the peers' habits (fer's ``FER().detect_emotions(img)``, DeepFace's
``analyze(img)``): a file path, one array straight from ``cv2.imread``, a list of them,
encoded bytes, base64 text. Shapes and strings are ambiguous ([600, 512, 3] is one colour
photo, or 600 images 3 pixels wide), so the rules are fixed here, in this order, and each is
tested (``tests/serving/test_model_inputs.py``).

Arrays (numpy):

1. Face crops, classified as they are (modes ``auto`` and ``faces``): [N, 48, 48],
   [N, 48, 48, 1], N flat rows [N, 2304] (also a DataFrame of 2304 columns, or an ``image``
   column whose every cell is a [48, 48] array: the form MLflow's input schema lets through),
   and one crop [48, 48] or [48, 48, 1]. So a 48x48 gray photo is taken as a face (``mode=detect``
   searches it instead), and a 2304-pixel-wide gray photo with N rows as N crops.
2. A last axis of 1, 3 or 4 is channels: [H, W, C] is one image, [N, H, W, C] N images.
3. [H, W] is one gray image; [N, H, W] (a last axis other than 1, 3 or 4) N gray images.

Anything else is a sequence of images, one per item: a list, tuple or Series, a DataFrame's
``image`` column (a cell holding a list of strings or bytes is that many images), a dict's
``image`` key (REST ``inputs``), or one bytes or string value.
An item is an array (rules 2 and 3 for one image), encoded bytes (PNG, JPEG, BMP, WebP,
TIFF), a path, or a string:

- a ``pathlib.Path`` is a file;
- a ``str`` starting ``data:`` is a base64 data URL;
- a ``str`` of at most 4,096 characters naming an existing regular file is that file (base64
  text of an image, a PNG's starting ``iVBOR``, a JPEG's ``/9j/``, names no file);
- any other ``str`` is base64 text of an encoded image.

Files are read in-process only. MLflow's scoring server passes on its clients' strings, and a
path there would let any client make the server read its own files: in the process MLflow
marks as its serving environment, and in a model loaded with
``model_config={"read_files": False}`` (for an application that forwards its users' strings),
a string is only ever base64 and a ``Path`` is refused.

Limits hold per call (one REST request), face crops included, and are checked before any
image is decoded: the number of images (``serve.max_images``), their encoded bytes together
(``max_request_bytes``) and their pixels together (``max_request_pixels``, from each image's
header), besides each image's own bytes and pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from emoflow.components.manifest import IMAGE_SIZE
from emoflow.components.serving.image_input import (
    CHANNELS,
    ImageError,
    NotBase64Error,
    PendingImage,
    array_image,
    as_uint8,
    encoded_image,
    file_image,
)
from emoflow.components.settings import ServeSettings

IMAGE_COLUMN = "image"
READ_FILES = "read_files"  # the model_config key that can turn file reading off
MAX_PATH_CHARS = 4096  # Linux's PATH_MAX: a longer string names no file
_BYTES_LIKE = (bytes, bytearray, memoryview)
CROP_SHAPES = ((IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE, 1))


def files_allowed(model_config: dict | None) -> bool:
    """Whether strings may name files: not in MLflow's scoring server, nor where the model
    was loaded with ``read_files: false``. Asked at each call: MLflow marks its serving
    process after the model is loaded."""
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT as SERVING

    return not SERVING.get() and bool((model_config or {}).get(READ_FILES, True))


def face_array(model_input, settings: ServeSettings) -> np.ndarray | None:
    """Rule 1: face crops as uint8 [N, 48, 48]; None for every other input. They count
    toward ``max_images``, checked before they are converted."""
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN in model_input.columns:
            return _crop_column(model_input[IMAGE_COLUMN], settings)
        if model_input.shape[1] != IMAGE_SIZE * IMAGE_SIZE:
            return None
        model_input = model_input.to_numpy()
    if not isinstance(model_input, np.ndarray) or model_input.dtype.kind not in "uif":
        return None
    shape, crop = model_input.shape, (IMAGE_SIZE, IMAGE_SIZE)
    flat = len(shape) == 2 and shape[1] == IMAGE_SIZE * IMAGE_SIZE
    crops = shape[1:] in CROP_SHAPES or shape in CROP_SHAPES
    if not (flat or crops):
        return None
    faces = model_input.reshape(-1, *crop)
    _check_count(len(faces), "face crops", settings)
    return as_uint8(faces, "face array")


def _crop_column(cells: pd.Series, settings: ServeSettings) -> np.ndarray | None:
    """An ``image`` column whose every cell is one crop, an array or nested pixel lists (REST
    JSON): the face-crop form as MLflow's input schema lets it through. None for any other
    column; its count is checked once its first cell shows it is crops."""
    if cells.empty or not _is_crop(cells.iloc[0]):
        return None
    _check_count(len(cells), "face crops", settings)
    if not all(map(_is_crop, cells)):
        return None
    faces = np.stack([np.asarray(cell).reshape(IMAGE_SIZE, IMAGE_SIZE) for cell in cells])
    if faces.dtype.kind not in "uif":
        return None
    return as_uint8(faces, "face array")


def _is_crop(cell) -> bool:
    if not isinstance(cell, (np.ndarray, list)):
        return False
    try:
        return np.shape(cell) in CROP_SHAPES
    except ValueError:  # ragged nested lists: not a crop (and not an image either)
        return False


def pending_images(model_input, settings: ServeSettings, files: bool) -> list[PendingImage]:
    """Every accepted image form -> named, sized images, not decoded yet, with the call's
    limits checked as each is added: a call over a limit costs no decoding at all."""
    items = image_items(model_input)
    _check_count(len(items), "images", settings)
    images, total_bytes, total_pixels = [], 0, 0
    for index, item in enumerate(items):
        image = _pending(item, f"image {index}", settings, files)
        total_bytes += len(image.encoded or b"")
        total_pixels += image.area
        if total_bytes > settings.max_request_bytes:
            raise ImageError(
                f"{image.name}: brings the encoded images to {total_bytes} bytes, over the "
                f"limit of {settings.max_request_bytes} per call"
            )
        if total_pixels > settings.max_request_pixels:
            raise ImageError(
                f"{image.name}: brings the images to {total_pixels} pixels, over the limit of "
                f"{settings.max_request_pixels} per call"
            )
        images.append(image)
    return images


def _check_count(count: int, what: str, settings: ServeSettings) -> None:
    if count > settings.max_images:
        raise ImageError(
            f"{count} {what} in one call, over the limit of {settings.max_images} images"
        )


def image_items(model_input) -> list:
    """The input as a list of single images (rules 2 and 3 for arrays)."""
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ImageError(
                f"a DataFrame needs an {IMAGE_COLUMN!r} column (base64 text, bytes or pixel "
                f"arrays); got columns {[str(c) for c in model_input.columns[:8]]}"
            )
        return [item for cell in model_input[IMAGE_COLUMN] for item in _cell_items(cell)]
    if isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise ImageError(
                f"a dict input needs an {IMAGE_COLUMN!r} key; got keys {list(model_input)[:8]}"
            )
        model_input = model_input[IMAGE_COLUMN]
    if isinstance(model_input, (*_BYTES_LIKE, str, Path)):
        return [model_input]
    if isinstance(model_input, np.ndarray):
        return _array_items(model_input)
    if isinstance(model_input, (list, tuple, pd.Series)):
        return list(model_input)
    raise ImageError(
        f"unsupported input type {type(model_input).__name__}: see "
        "components/serving/model_inputs.py"
    )


def _cell_items(cell) -> list:
    """One cell of the ``image`` column -> its images: a list of strings or bytes is several
    (MLflow hands REST's ``{"inputs": {"image": [...]}}`` over as one such cell); anything
    else, nested pixel lists included, is one."""
    several = isinstance(cell, (list, tuple)) and cell
    if several and all(isinstance(item, (str, *_BYTES_LIKE)) for item in cell):
        return list(cell)
    return [cell]


def _array_items(array: np.ndarray) -> list:
    if array.dtype.kind in "OSU":
        return list(array.ravel())
    one_image = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in CHANNELS)
    if one_image:
        return [array]
    if array.ndim in (3, 4):
        return list(array)
    raise ImageError(
        "an array is one image, [H, W] or [H, W, C], or a batch, [N, H, W] or [N, H, W, C] "
        f"(C = 1, 3 or 4); got shape {array.shape}"
    )


def _pending(item, name: str, settings: ServeSettings, files: bool) -> PendingImage:
    if isinstance(item, Path) or (isinstance(item, str) and files and names_a_file(item)):
        if not files:
            raise ImageError(f"{name}: file paths are read in-process only, never by a server")
        return file_image(Path(item), settings)
    if isinstance(item, str):
        return _text_image(item, name, settings, files)
    if isinstance(item, _BYTES_LIKE):
        return encoded_image(item, name, settings)
    try:
        pixels = np.asarray(item)
    except ValueError:  # ragged nested lists
        raise ImageError(f"{name}: not a pixel array (rows of unequal length)") from None
    return array_image(pixels, name, settings)


def _text_image(text: str, name: str, settings: ServeSettings, files: bool) -> PendingImage:
    try:
        return encoded_image(text, name, settings)
    except NotBase64Error:
        if not files:
            raise
        raise ImageError(
            f"{name}: a string must be a file path or a base64-encoded image; "
            f"{text[:80]!r} names no file here and is not base64"
        ) from None


def names_a_file(text: str) -> bool:
    """Whether ``text`` is the path of an existing regular file (a ``data:`` URL never is)."""
    if len(text) > MAX_PATH_CHARS or text.startswith("data:"):
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False
