"""The forms of input the registry model takes and the rules that tell them apart (no model
needed): arrays by shape, strings as paths or base64, files in-process only."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd
import pytest

from emoflow.components.serving.image_input import ImageError, decode
from emoflow.components.serving.model_inputs import (
    face_array,
    files_allowed,
    names_a_file,
    pending_images,
)
from emoflow.components.settings import ServeSettings
from tests.conftest import SERVING_MARKER
from tests.consumers import png

SETTINGS = ServeSettings(max_images=8)


def photo(height: int = 60, width: int = 80) -> np.ndarray:
    """A BGR photo with distinct channels, so that a misread shape or order shows."""
    rng = np.random.default_rng(height * width)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


class Read(NamedTuple):
    name: str
    gray: np.ndarray


def read(
    model_input, files: bool = True, channel_order: str = "bgr", settings: ServeSettings = SETTINGS
) -> list[Read]:
    """The images as the model reads them: checked whole, then decoded one by one."""
    return [
        Read(image.name, decode(image, channel_order, settings.detect_max_side)[0])
        for image in pending_images(model_input, settings, files)
    ]


@pytest.fixture
def photo_file(tmp_path) -> tuple[Path, np.ndarray]:
    image = photo()
    path = tmp_path / "photo.png"
    path.write_bytes(png(image))
    return path, image


# --- Arrays: rules 1 to 3 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "count"),
    [
        ((600, 512, 3), 1),  # cv2.imread: one colour photo, not 600 images 3 pixels wide
        ((60, 80, 4), 1),  # one BGRA photo
        ((60, 80, 1), 1),  # one gray photo with its channel axis
        ((60, 80), 1),  # one gray photo
        ((5, 60, 80), 5),  # five gray photos
        ((2, 60, 80, 3), 2),  # two colour photos
        ((2, 60, 80, 1), 2),
        ((48, 48, 3), 1),  # a colour 48x48 image is a photo, not three face crops
    ],
)
def test_an_array_is_one_image_or_a_batch_by_its_last_axis(shape, count):
    images = read(np.zeros(shape, np.uint8))
    assert [i.name for i in images] == [f"image {k}" for k in range(count)]
    height, width = shape[-3:-1] if len(shape) >= 3 and shape[-1] in (1, 3, 4) else shape[-2:]
    assert all(i.gray.shape == (height, width) and i.gray.dtype == np.uint8 for i in images)


def test_one_colour_array_is_converted_as_its_channel_order():
    image = photo()
    (bgr,) = read(image)
    (rgb,) = read(image[..., ::-1], channel_order="rgb")
    np.testing.assert_array_equal(bgr.gray, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(rgb.gray, bgr.gray)


@pytest.mark.parametrize(
    "shape", [(3, 48, 48), (3, 48, 48, 1), (3, 2304), (48, 48), (48, 48, 1), (48, 48, 48)]
)
def test_face_crop_arrays_are_recognised_first(shape):
    faces = face_array(np.full(shape, 7, np.uint8), ServeSettings())
    assert faces is not None and faces.shape[1:] == (48, 48) and (faces == 7).all()
    assert len(faces) == (1 if shape in ((48, 48), (48, 48, 1)) else shape[0])


@pytest.mark.parametrize(
    "model_input",
    [
        np.zeros((48, 48, 3), np.uint8),
        np.zeros((2, 48, 48, 3), np.uint8),
        np.zeros((60, 80), np.uint8),
        [np.zeros((48, 48), np.uint8)],  # a bare list is always images to search
        pd.DataFrame({"image": [np.zeros((48, 48), np.uint8), np.zeros((60, 80), np.uint8)]}),
        pd.DataFrame({"image": [np.zeros((48, 48), np.uint8), "aGVsbG8="]}),
        pd.DataFrame({"image": [[[0] * 48] * 47 + [[0] * 5]]}),  # ragged pixel rows
    ],
)
def test_other_arrays_and_sequences_are_not_face_crops(model_input):
    assert face_array(model_input, SETTINGS) is None


def test_a_flat_2304_column_frame_is_face_crops():
    faces = face_array(pd.DataFrame(np.zeros((2, 2304), np.uint8)), SETTINGS)
    assert faces.shape == (2, 48, 48)


def test_an_image_column_of_crops_is_face_crops_as_the_input_schema_passes_them():
    """Arrays from an in-process DataFrame, nested lists from REST JSON, with or without a
    channel axis; their count is refused before they are stacked."""
    crop = np.full((48, 48), 7, np.uint8)
    column = pd.DataFrame({"image": [crop, crop[..., np.newaxis], crop.tolist()]})
    faces = face_array(column, SETTINGS)
    assert faces.shape == (3, 48, 48) and faces.dtype == np.uint8 and (faces == 7).all()
    with pytest.raises(ImageError, match="9 face crops in one call, over the limit of 8"):
        face_array(pd.DataFrame({"image": [crop] * 9}), SETTINGS)
    with pytest.raises(ImageError, match="face array"):
        face_array(pd.DataFrame({"image": [np.full((48, 48), 300)]}), SETTINGS)


def test_a_cell_holding_a_list_of_strings_or_bytes_is_that_many_images():
    """MLflow hands REST's ``{"inputs": {"image": [...]}}`` over as one cell holding the list."""
    encoded = [png(photo()), base64.b64encode(png(photo(30, 40))).decode()]
    images = read(pd.DataFrame({"image": [encoded]}))
    assert [(i.name, i.gray.shape) for i in images] == [
        ("image 0", (60, 80)),
        ("image 1", (30, 40)),
    ]
    (pixels,) = read(pd.DataFrame({"image": [np.zeros((20, 30), np.uint8).tolist()]}))
    assert pixels.gray.shape == (20, 30), "nested pixel rows are one image"


def test_an_array_of_no_image_shape_is_a_named_error():
    with pytest.raises(ImageError, match=r"an array is one image, .*; got shape \(1, 2, 3, 4, 5\)"):
        read(np.zeros((1, 2, 3, 4, 5), np.uint8))


def test_the_image_limit_counts_images_not_rows_of_one_photo():
    read(photo(600, 512))  # 600 rows, one image
    with pytest.raises(ImageError, match="9 images in one call, over the limit of 8 images"):
        read([photo()] * 9)


# --- Strings, bytes and files ------------------------------------------------------------------


def test_every_single_image_form_reads_the_same_pixels(photo_file):
    path, image = photo_file
    encoded = path.read_bytes()
    text = base64.b64encode(encoded).decode()
    expected = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    forms = [
        (path, str(path)),
        (str(path), str(path)),
        (encoded, "image 0"),
        (bytearray(encoded), "image 0"),
        (text, "image 0"),
        ("data:image/png;base64," + text, "image 0"),
        (image, "image 0"),
        ({"image": [str(path)]}, str(path)),
        (pd.DataFrame({"image": [text]}), "image 0"),
    ]
    for model_input, name in forms:
        (read_image,) = read(model_input)
        assert read_image.name == name
        np.testing.assert_array_equal(read_image.gray, expected)


def test_a_list_names_each_image_by_its_path_or_its_index(photo_file):
    path, image = photo_file
    names = [i.name for i in read([image, str(path), png(image), path])]
    assert names == ["image 0", str(path), "image 2", str(path)]


def test_base64_of_an_image_never_names_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = base64.b64encode(png(photo(8, 8))).decode()
    (tmp_path / "iVBOR").write_bytes(b"not read")  # a PNG's base64 starts so
    assert not names_a_file(text) and not names_a_file("data:" + text)
    assert names_a_file("iVBOR") and not names_a_file("x" * 5000) and not names_a_file("a\0b")
    assert read(text)[0].gray.shape == (8, 8)


def test_a_string_that_is_neither_file_nor_base64_says_so():
    with pytest.raises(ImageError, match=r"image 0: .*file path or a base64.*'no/such/photo.jpg'"):
        read("no/such/photo.jpg")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d, r"not a regular file"),
        (lambda d: d / "missing.png", None),  # a str that names no file: not base64 either
        (lambda d: d / "big.png", r"big.png: \d+ bytes, over the limit of 1000"),
        (lambda d: d / "text.png", r"text.png: not an image in a known format"),
    ],
)
def test_bad_files_are_named_errors(tmp_path, make, message):
    (tmp_path / "big.png").write_bytes(png(photo(200, 200)))
    (tmp_path / "text.png").write_text("hello")
    path = make(tmp_path)
    settings = ServeSettings(max_image_bytes=1000)
    expected = message or "cannot read it"
    with pytest.raises(ImageError, match=expected):
        read(path, settings=settings)


def test_without_file_reading_a_path_is_refused_and_a_string_is_only_base64(photo_file):
    path, _ = photo_file
    with pytest.raises(ImageError, match="file paths are read in-process only"):
        read(path, files=False)
    with pytest.raises(
        ImageError, match=r"image 0: a string must be a base64-encoded image"
    ) as err:
        read(str(path), files=False)
    assert "photo.png" not in str(err.value)  # the server's answer does not echo the path


def test_files_are_read_in_process_only(monkeypatch):
    assert files_allowed(None) and files_allowed({})
    assert not files_allowed({"read_files": False})
    monkeypatch.setenv(SERVING_MARKER, "true")  # what MLflow's scoring server sets
    assert not files_allowed({}) and not files_allowed({"read_files": True})


# --- Limits per call -----------------------------------------------------------------------


def test_face_crops_count_toward_the_image_limit():
    assert face_array(np.zeros((8, 48, 48), np.uint8), SETTINGS).shape == (8, 48, 48)
    with pytest.raises(ImageError, match="9 face crops in one call, over the limit of 8 images"):
        face_array(np.zeros((9, 2304), np.int64), SETTINGS)  # refused before any conversion


def test_the_pixels_of_a_call_are_limited_together_before_any_decoding(monkeypatch):
    """64 PNGs of zeros, 3.3 MB in all, once declared 2.5 billion pixels: each under the
    per-image limit. The call is refused from the headers alone."""
    zeros = png(np.zeros((600, 660), np.uint8))  # 396,000 pixels in 3 KB
    settings = ServeSettings(max_request_pixels=1_000_000)
    monkeypatch.setattr(cv2, "imdecode", lambda *_: pytest.fail("decoded before the check"))
    with pytest.raises(
        ImageError, match=r"image 2: brings the images to 1188000 pixels, over the limit of 1000000"
    ):
        pending_images([zeros] * 64, settings, files=False)
    with pytest.raises(ImageError, match=r"image 1: brings the images to 1200000 pixels"):
        pending_images(np.zeros((3, 1000, 600), np.uint8), settings, files=False)


def test_the_encoded_bytes_of_a_call_are_limited_together():
    encoded = png(photo(60, 80))
    settings = ServeSettings(max_request_bytes=2 * len(encoded) + 10)
    assert len(pending_images([encoded] * 2, settings, files=False)) == 2
    text = base64.b64encode(encoded).decode()
    with pytest.raises(
        ImageError, match=rf"image 2: brings the encoded images to {3 * len(encoded)}"
    ):
        pending_images([encoded, text, encoded], settings, files=False)


@pytest.mark.parametrize(
    "model_input",
    [
        [b"\x00SECRET-FACE-DATA" * 50],  # not an image
        ["U0VDUkVULUZBQ0UtREFUQQ==" * 3 + "!"],  # not base64
        [np.full((4, 4), 999)],  # not 0..255 (the message gives the range)
        [np.zeros((4, 4, 2), np.uint8)],  # not a channel count
    ],
)
def test_errors_name_the_image_and_never_quote_its_data(model_input):
    with pytest.raises(ImageError, match=r"^image 0: ") as raised:
        read(model_input, files=False)
    message = str(raised.value)
    assert "SECRET" not in message and "U0VDUkVU" not in message
    assert len(message) < 200
