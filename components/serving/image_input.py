"""Untrusted images in: check bytes, base64 text or arrays against the limits, then decode one
at a time straight to gray.

Inputs are checked where they enter, so that a bad or hostile payload is a clear
:class:`ImageError` naming the image, never a crash or a memory blow-up. Checking and
decoding are two steps: :func:`encoded_image`, :func:`file_image` and :func:`array_image`
read only sizes (an encoded image's from its header: a 50 KB PNG can declare 40 million
pixels), so a request is measured whole before any of it is decoded; :func:`decode` then
decodes one image when its turn comes. Detection (``components.serving.detection``) only
ever sees what this module let through. Messages name the image and never quote its data.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emoflow.components.errors import EmoFlowError
from emoflow.components.settings import ServeSettings

CHANNEL_ORDERS = ("bgr", "rgb")
CHANNELS = (1, 3, 4)
_GRAY_CODES = {
    ("bgr", 3): cv2.COLOR_BGR2GRAY,
    ("rgb", 3): cv2.COLOR_RGB2GRAY,
    ("bgr", 4): cv2.COLOR_BGRA2GRAY,
    ("rgb", 4): cv2.COLOR_RGBA2GRAY,
}
# Decoding at 1/2, 1/4 or 1/8 scale: libjpeg scales in the DCT, several times faster than a
# full decode and a resize; other formats are decoded whole and shrunk by OpenCV.
_GRAY_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2}
_GRAY_FLAGS |= {4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_COLOR_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2}
_COLOR_FLAGS |= {4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


class ImageError(EmoFlowError, ValueError):
    """An input that is not a usable image; the message names the image and what is wrong."""


class NotBase64Error(ImageError):
    """A string that is not base64 text (so, in-process, neither a file nor an image)."""


@dataclass(frozen=True)
class PendingImage:
    """One input image, sized and checked, not decoded yet: its name (its path, or
    ``image <index>``: what its errors and the output's ``source`` column call it), its size,
    and either its encoded bytes or its pixel array."""

    name: str
    width: int
    height: int
    encoded: bytes | None = None
    pixels: np.ndarray | None = None
    # A gray image is decoded straight to gray. A colour one is decoded in colour and converted
    # as an array is: the decoders' own conversions (libjpeg's luma, libpng's) differ by one
    # level here and there, enough to change a probability in the fourth decimal, and a file,
    # its bytes and cv2.imread's array of it must give the same answer.
    gray_decode: bool = False

    @property
    def area(self) -> int:
        return self.width * self.height


def encoded_image(data: bytes | str, name: str, settings: ServeSettings) -> PendingImage:
    """Encoded image bytes, or their base64 text (a ``data:`` URL prefix is allowed), sized
    from the header and checked against the per-image limits without decoding the pixels."""
    raw = _base64(data, name, settings) if isinstance(data, str) else bytes(data)
    if len(raw) > settings.max_image_bytes:
        raise ImageError(f"{name}: {len(raw)} bytes, over the limit of {settings.max_image_bytes}")
    (width, height), gray_decode = _header(raw, name)
    _check_pixels(width, height, name, settings)
    return PendingImage(name, width, height, encoded=raw, gray_decode=gray_decode)


def file_image(path: Path, settings: ServeSettings) -> PendingImage:
    """An image file, named by its path; its size on disk is checked before it is read."""
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageError(f"{name}: cannot read it ({err.strerror})") from None
    if not path.is_file():
        raise ImageError(f"{name}: not a regular file")
    if size > settings.max_image_bytes:
        raise ImageError(f"{name}: {size} bytes, over the limit of {settings.max_image_bytes}")
    return encoded_image(path.read_bytes(), name, settings)


def array_image(pixels: np.ndarray, name: str, settings: ServeSettings) -> PendingImage:
    """An image array, HxW or HxWxC (C = 1, 3 or 4), checked by shape and dtype."""
    if pixels.dtype.kind not in "uif":
        raise ImageError(f"{name}: pixels must be numbers, got dtype {pixels.dtype}")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in CHANNELS)):
        raise ImageError(
            f"{name}: expected HxW, HxWx1, HxWx3 or HxWx4 pixels, got shape {pixels.shape}"
        )
    height, width = pixels.shape[:2]
    _check_pixels(width, height, name, settings)
    return PendingImage(name, width, height, pixels=pixels)


def decode(image: PendingImage, channel_order: str, detect_side: int) -> tuple[np.ndarray, int]:
    """The image in gray, and the factor its coordinates are to be multiplied by to be the
    original's: an encoded image at least twice ``detect_side`` (the side detection shrinks
    images to) is decoded at 1/2, 1/4 or 1/8 scale, never below ``detect_side`` (nor its
    short side below one pixel), so that detection reads nearly the same pixels and no face
    crop is upscaled."""
    if image.pixels is not None:
        return to_gray(image.pixels, channel_order, image.name), 1
    long, short = max(image.width, image.height), min(image.width, image.height)
    scale = max(s for s in _GRAY_FLAGS if s == 1 or (long >= s * detect_side and short >= s))
    flags = _GRAY_FLAGS if image.gray_decode else _COLOR_FLAGS
    gray = cv2.imdecode(np.frombuffer(image.encoded, np.uint8), flags[scale])
    if gray is not None and gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
    if gray is None:
        raise ImageError(
            f"{image.name}: a {image.width}x{image.height} image that OpenCV cannot decode"
        )
    # EXIF orientation may swap the sides; anything larger than the header said is refused.
    if gray.size > (image.width // scale + 1) * (image.height // scale + 1):
        raise ImageError(
            f"{image.name}: decodes to {gray.shape[1]}x{gray.shape[0]} pixels, more than its "
            f"header's {image.width}x{image.height}"
        )
    return gray, scale


def _base64(text: str, name: str, settings: ServeSettings) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > base64_chars(settings.max_image_bytes):
        raise ImageError(
            f"{name}: {len(text)} base64 characters, "
            f"over the limit of {settings.max_image_bytes} bytes"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise NotBase64Error(f"{name}: a string must be a base64-encoded image ({err})") from None


def base64_chars(size: int) -> int:
    """The most base64 characters ``size`` bytes take."""
    return 4 * (size // 3 + 1)


def _header(raw: bytes, name: str) -> tuple[tuple[int, int], bool]:
    """The size in an encoded image's header, and whether to decode it straight to gray."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            return image.size, image.mode == "L"
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image in a known format (PNG, JPEG, BMP, WebP, TIFF): {len(raw)} bytes"
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


def to_gray(pixels: np.ndarray, channel_order: str, name: str) -> np.ndarray:
    """An image array, HxW, HxWx1, HxWx3 or HxWx4 (BGR[A] or RGB[A]), 0..255 -> gray uint8
    (shape checked by :func:`array_image`)."""
    image = as_uint8(np.asarray(pixels), name)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), _GRAY_CODES[(channel_order, image.shape[2])])


def as_uint8(pixels: np.ndarray, name: str) -> np.ndarray:
    """JSON gives int64 and users give floats: accept any array holding whole numbers 0..255.

    Integers need only their range checked: no float copy of a JSON array's int64 pixels."""
    if pixels.dtype == np.uint8:
        return pixels
    if not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        raise ImageError(f"{name}: pixels must be numbers, got dtype {pixels.dtype}")
    low, high = (pixels.min(), pixels.max()) if pixels.size else (0, 0)
    whole = np.issubdtype(pixels.dtype, np.integer) or (
        np.isfinite(low) and np.isfinite(high) and np.all(pixels == np.round(pixels))
    )
    if not (whole and low >= 0 and high <= 255):
        raise ImageError(
            f"{name}: pixels must be whole numbers 0..255, got {pixels.dtype} in [{low}, {high}]"
        )
    return pixels.astype(np.uint8)
