"""Untrusted images in: decode bytes, base64 text or arrays into one gray image, within limits.

Inputs are checked where they enter, with limits, so that a bad or hostile payload is a
clear :class:`ImageError` naming the image, never a crash or a memory blow-up. Detection
(``components.serving.detection``) only ever sees what this module let through.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import cv2
import numpy as np

from components.errors import EmoFlowError
from components.settings import ServeSettings

CHANNEL_ORDERS = ("bgr", "rgb")
_GRAY_CODES = {
    ("bgr", 3): cv2.COLOR_BGR2GRAY,
    ("rgb", 3): cv2.COLOR_RGB2GRAY,
    ("bgr", 4): cv2.COLOR_BGRA2GRAY,
    ("rgb", 4): cv2.COLOR_RGBA2GRAY,
}


class ImageError(EmoFlowError, ValueError):
    """An input that is not a usable image; the message names the image and what is wrong."""


class NotBase64Error(ImageError):
    """A string that is not base64 text (so, in-process, neither a file nor an image)."""


def decode_image(data: bytes | str, name: str, settings: ServeSettings) -> np.ndarray:
    """Encoded image bytes, or their base64 text (a ``data:`` URL prefix is allowed) -> gray.

    The size in pixels is read from the header and checked before decoding: a small PNG can
    declare a gigapixel image.
    """
    raw = _base64(data, name, settings) if isinstance(data, str) else bytes(data)
    if len(raw) > settings.max_image_bytes:
        raise ImageError(f"{name}: {len(raw)} bytes, over the limit of {settings.max_image_bytes}")
    width, height = _header_size(raw, name)
    _check_pixels(width, height, name, settings)
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{name}: a {width}x{height} image that OpenCV cannot decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def read_file(path: Path, settings: ServeSettings) -> np.ndarray:
    """An image file -> gray, named by its path; its size is checked before it is read."""
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageError(f"{name}: cannot read it ({err.strerror})") from None
    if not path.is_file():
        raise ImageError(f"{name}: not a regular file")
    if size > settings.max_image_bytes:
        raise ImageError(f"{name}: {size} bytes, over the limit of {settings.max_image_bytes}")
    return decode_image(path.read_bytes(), name, settings)


def _base64(text: str, name: str, settings: ServeSettings) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > 4 * (settings.max_image_bytes // 3 + 1):
        raise ImageError(
            f"{name}: {len(text)} base64 characters, "
            f"over the limit of {settings.max_image_bytes} bytes"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise NotBase64Error(f"{name}: a string must be a base64-encoded image ({err})") from None


def _header_size(raw: bytes, name: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            return image.size
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image in a known format (PNG, JPEG, BMP, WebP, TIFF): "
            f"{len(raw)} bytes starting {raw[:8]!r}"
        ) from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name}: {err}") from None
    except OSError as err:
        raise ImageError(f"{name}: a corrupt image header ({err})") from None


def _check_pixels(width: int, height: int, name: str, settings: ServeSettings) -> None:
    if width * height > settings.max_image_pixels:
        raise ImageError(
            f"{name}: {width}x{height} pixels, over the limit of {settings.max_image_pixels}"
        )
    if min(width, height) < 1:
        raise ImageError(f"{name}: an empty image ({width}x{height})")


def to_gray(
    pixels: np.ndarray, channel_order: str, name: str, settings: ServeSettings
) -> np.ndarray:
    """An image array, HxW, HxWx1, HxWx3 or HxWx4 (BGR[A] or RGB[A]), 0..255 -> gray uint8."""
    image = as_uint8(np.asarray(pixels), name)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        _check_pixels(image.shape[1], image.shape[0], name, settings)
        return image
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(
            f"{name}: expected HxW, HxWx1, HxWx3 or HxWx4 pixels, got shape {image.shape}"
        )
    _check_pixels(image.shape[1], image.shape[0], name, settings)
    return cv2.cvtColor(np.ascontiguousarray(image), _GRAY_CODES[(channel_order, image.shape[2])])


def as_uint8(pixels: np.ndarray, name: str) -> np.ndarray:
    """JSON gives int64 and users give floats: accept any array holding whole numbers 0..255."""
    if pixels.dtype == np.uint8:
        return pixels
    if not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        raise ImageError(f"{name}: pixels must be numbers, got dtype {pixels.dtype}")
    if pixels.size and not (
        np.all(np.isfinite(pixels))
        and pixels.min() >= 0
        and pixels.max() <= 255
        and np.all(pixels == np.round(pixels))
    ):
        raise ImageError(
            f"{name}: pixels must be whole numbers 0..255, got {pixels.dtype} "
            f"in [{pixels.min()}, {pixels.max()}]"
        )
    return pixels.astype(np.uint8)
