"""Finding, cropping and checking faces: the serving half of preprocessing (no model needed)."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from emoflow.components.manifest import Dataset, describe_pixels
from emoflow.components.records.input_pipelines import scoring_batches, training_batches
from emoflow.components.records.tfrecords import write_split
from emoflow.components.serving.detection import (
    FaceFinder,
    MtcnnDetector,
    crop_faces,
    drop_nested,
    model_input,
)
from emoflow.components.serving.image_input import (
    ImageError,
    array_image,
    decode,
    encoded_image,
    to_gray,
)
from emoflow.components.settings import ServeSettings
from tests.consumers import (
    best_iou,
    canvas_with_faces,
    detectable_crops,
    face_crops,
    png,
    sample_photo,
)

SETTINGS = ServeSettings()


@pytest.fixture(scope="module")
def finder() -> FaceFinder:
    return FaceFinder(SETTINGS)


def gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def test_several_faces_are_found_where_they_are_left_to_right(finder):
    image, placed = canvas_with_faces(detectable_crops(3), size=(720, 300))
    faces = finder.detect(gray(image))
    assert len(faces.boxes) == 3
    assert list(faces.boxes[:, 0]) == sorted(faces.boxes[:, 0])
    for box, expected in zip(faces.boxes, placed):
        assert best_iou(expected, [box]) > 0.6, (box, expected)
    assert faces.crops.shape == (3, 48, 48) and faces.crops.dtype == np.uint8


def test_real_ckplus_faces_are_all_found(shared_data, finder):
    crops = face_crops()
    found = [len(finder.boxes(gray(canvas_with_faces([crop])[0]))) for crop in crops]
    assert found == [1] * len(crops)


def test_an_image_without_a_face_gives_no_boxes(finder):
    image, _ = canvas_with_faces([])
    faces = finder.detect(gray(image))
    assert faces.boxes.shape == (0, 4) and faces.crops.shape == (0, 48, 48)


def test_large_images_are_shrunk_to_detect_and_boxes_map_back():
    (crop,) = detectable_crops(1)
    image, (placed,) = canvas_with_faces([crop], size=(1920, 1080), side=480)
    shrinking = FaceFinder(ServeSettings(detect_max_side=640))
    faces = shrinking.detect(gray(image))
    assert len(faces.boxes) == 1 and best_iou(placed, faces.boxes) > 0.6
    np.testing.assert_array_equal(faces.crops, crop_faces(gray(image), faces.boxes, 0.0))


def test_faces_are_found_again_near_where_they_were(finder):
    crops = detectable_crops(2)
    image, _ = canvas_with_faces(crops, size=(720, 300))
    frame = gray(image)
    full = finder.boxes(frame)
    moved = full + [12, -8, 0, 0]  # last frame's boxes, a little off
    near = finder.boxes_near(frame, moved)
    assert len(near) == len(full) == 2
    assert all(best_iou(box, [expected]) > 0.75 for box, expected in zip(near, full))
    twice = np.concatenate([moved[:1], moved[:1] + [4, 4, 0, 0]])  # two tracks on one face
    assert len(finder.boxes_near(frame, twice)) == 1
    nowhere = np.array([[600, 0, 100, 100]])  # background only
    assert finder.boxes_near(frame, nowhere).shape == (0, 4)


def test_nested_detections_are_dropped_but_separate_faces_kept():
    boxes = np.array(
        [[100, 100, 200, 200], [150, 150, 60, 60], [400, 100, 200, 200], [590, 100, 50, 50]]
    )
    np.testing.assert_array_equal(drop_nested(boxes), boxes[[0, 2, 3]])


def test_crops_are_squares_around_the_box_grown_by_the_margin():
    image = np.arange(200 * 300, dtype=np.uint32).reshape(200, 300).astype(np.uint8)
    exact = crop_faces(image, np.array([[10, 20, 48, 48]]), margin=0.0)
    np.testing.assert_array_equal(exact[0], image[20:68, 10:58])  # training size: no resampling
    tall = crop_faces(image, np.array([[100, 50, 40, 96]]), margin=0.0)  # 96x96 around the centre
    np.testing.assert_array_equal(
        tall[0], cv2.resize(image[50:146, 72:168], (48, 48), interpolation=cv2.INTER_AREA)
    )
    grown = crop_faces(image, np.array([[100, 50, 48, 48]]), margin=0.5)  # 96x96: 24 more per side
    np.testing.assert_array_equal(
        grown[0], cv2.resize(image[26:122, 76:172], (48, 48), interpolation=cv2.INTER_AREA)
    )


def test_crops_past_the_edge_repeat_the_edge_pixels():
    image = np.tile(np.arange(60, dtype=np.uint8) * 4, (60, 1))  # brightness grows to the right
    (crop,) = crop_faces(image, np.array([[-12, 0, 48, 48]]), margin=0.0)
    assert (crop[:, :12] == 0).all()  # the left edge column, repeated
    np.testing.assert_array_equal(crop[:, 12:], image[:48, :36])


def test_every_image_form_gives_the_same_gray_pixels():
    (crop,) = detectable_crops(1)
    bgr, _ = canvas_with_faces([crop], size=(200, 180), side=120)
    bgr[:, :, 0] = 30  # colour, so that the channel order matters
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    encoded = png(bgr)
    text = base64.b64encode(encoded).decode()
    forms = [
        decoded(encoded_image(encoded, "png", SETTINGS)),
        decoded(encoded_image(text, "base64", SETTINGS)),
        decoded(encoded_image("data:image/png;base64," + text, "data url", SETTINGS)),
        to_gray(bgr, "bgr", "bgr"),
        to_gray(bgr[..., ::-1], "rgb", "rgb"),
        to_gray(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "bgr", "bgra"),
        to_gray(bgr.astype(np.int64), "bgr", "json ints"),
    ]
    for form in forms:
        np.testing.assert_array_equal(form, expected)
    assert not np.array_equal(to_gray(bgr, "rgb", "swapped"), expected)


def decoded(image, channel_order: str = "bgr") -> np.ndarray:
    return decode(image, channel_order, SETTINGS.detect_max_side)[0]


@pytest.mark.parametrize(
    ("data", "settings", "message"),
    [
        (b"GIF89a but not really", SETTINGS, r"image 7: not an image in a known format .*21 bytes"),
        ("not base64!", SETTINGS, r"image 7: a string must be a base64-encoded image"),
        (
            png(np.zeros((300, 300), np.uint8)),
            ServeSettings(max_image_pixels=10_000),
            r"300x300 pixels, over the limit of 10000",
        ),
        (
            png(np.zeros((30, 30), np.uint8)),
            ServeSettings(max_image_bytes=50),
            r"bytes, over the limit of 50",
        ),
        (
            "A" * 200,
            ServeSettings(max_image_bytes=100),
            r"200 base64 characters, over the limit of 100 bytes",
        ),
    ],
)
def test_bad_encoded_inputs_are_named_errors(data, settings, message):
    with pytest.raises(ImageError, match=message):
        encoded_image(data, "image 7", settings)


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (
            np.random.default_rng(0).random((50, 50)),
            r"pixels must be whole numbers 0..255, got float64 in \[0\.0",
        ),
        (np.full((50, 50), 300), r"pixels must be whole numbers 0..255, got int64 in \[300, 300\]"),
        (
            np.zeros((50, 50, 2), np.uint8),
            r"expected HxW, HxWx1, HxWx3 or HxWx4 pixels, got shape \(50, 50, 2\)",
        ),
        (np.array([["a"]]), r"pixels must be numbers, got dtype <U1"),
        (np.zeros((200, 200), np.uint8), r"200x200 pixels, over the limit of 10000"),
    ],
)
def test_bad_pixel_arrays_are_named_errors(pixels, message):
    with pytest.raises(ImageError, match=f"frame 3: {message}"):
        decoded(array_image(pixels, "frame 3", ServeSettings(max_image_pixels=10_000)))


def test_yunet_needs_its_model_file(tmp_path):
    with pytest.raises(ValidationError, match="detector yunet needs detector_model"):
        ServeSettings(detector="yunet")
    with pytest.raises(FileNotFoundError, match="missing.onnx: YuNet model file not found"):
        FaceFinder(ServeSettings(detector="yunet", detector_model=tmp_path / "missing.onnx"))


def test_a_file_that_is_not_a_cascade_is_refused(tmp_path):
    bogus = tmp_path / "cascade.xml"
    bogus.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ValueError, match="not an OpenCV Haar cascade"):
        FaceFinder(ServeSettings(detector_model=bogus))


def test_training_and_serving_preprocessing_give_the_same_tensor(tmp_path):
    """A face through TFRecords + tf.data equals it through the serving path, bit for bit.

    Served at twice the size (each pixel repeated 2x2), it is cropped and shrunk back to the
    same 48x48 pixels, so that path must agree exactly too.
    """
    faces = np.stack(face_crops()[:4])
    manifest = pd.DataFrame(
        {"id": [f"f{i}" for i in range(4)], "label": ["happy"] * 4, "split": ["train"] * 4}
    )
    write_split(
        Dataset(pd.concat([manifest, describe_pixels(faces)], axis=1), faces), "train", tmp_path, 10
    )
    scored = np.concatenate(
        [x for x, _ in scoring_batches(tmp_path, ["train"], ("happy",), 8).as_numpy_iterator()]
    )
    trained = np.concatenate(
        [
            x
            for x, _ in training_batches(
                tmp_path, ("happy",), 8, seed=0, augment=None
            ).as_numpy_iterator()
        ]
    )
    served = model_input(np.concatenate([FaceFinder.whole(face).crops for face in faces])).numpy()
    doubled = [np.repeat(np.repeat(face, 2, axis=0), 2, axis=1) for face in faces]
    served_large = model_input(
        np.concatenate([FaceFinder.whole(face).crops for face in doubled])
    ).numpy()
    np.testing.assert_array_equal(served, scored)
    np.testing.assert_array_equal(served_large, scored)

    # training shuffles: compare as a set of images
    def order(x: np.ndarray) -> np.ndarray:
        return x[np.lexsort(x.reshape(len(x), -1).T)]

    np.testing.assert_array_equal(order(trained), order(scored))


# --- Detector choice: MTCNN, and scores ----------------------------------------------------


@pytest.fixture(scope="module")
def mtcnn() -> FaceFinder:
    return FaceFinder(ServeSettings(detector="mtcnn"))


def test_mtcnn_finds_the_faces_and_scores_each_one(mtcnn):
    crops = face_crops()[:3]
    image, placed = canvas_with_faces(list(crops), size=(720, 300))
    faces = mtcnn.detect(gray(image))
    assert len(faces.boxes) == 3 and faces.crops.shape == (3, 48, 48)
    for (x, y, w, h), (px, py, side, _) in zip(faces.boxes, placed):  # tighter boxes than Haar's
        assert (
            abs(x + w / 2 - (px + side / 2)) < side / 5
            and abs(y + h / 2 - (py + side / 2)) < side / 5
        )
    assert ((faces.scores >= SETTINGS.score_threshold) & (faces.scores <= 1)).all()


def test_traced_and_shrunk_mtcnn_finds_what_the_package_finds(mtcnn):
    """Our wrapping (traced stages, the image shrunk to 20 px faces) changes speed only."""
    from mtcnn import MTCNN

    photo = gray(cv2.imread(str(sample_photo())))
    scale = MtcnnDetector.PYRAMID_FACE_PX / SETTINGS.min_face_px
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    (expected,) = MTCNN().detect_faces(
        cv2.cvtColor(small, cv2.COLOR_GRAY2RGB), min_face_size=20, threshold_onet=0.8
    )
    faces = mtcnn.detect(photo)
    np.testing.assert_allclose(faces.boxes[0], np.array(expected["box"]) / scale, atol=1)
    assert faces.scores[0] == pytest.approx(expected["confidence"], abs=1e-4)


def test_the_score_threshold_drops_less_certain_faces(mtcnn):
    photo = gray(cv2.imread(str(sample_photo())))
    faces = mtcnn.detect(photo)
    assert len(faces.boxes) == 1 and 0.8 <= faces.scores[0] < 1
    stricter = FaceFinder(
        ServeSettings(detector="mtcnn", score_threshold=(faces.scores[0] + 1) / 2)
    )
    assert stricter.detect(photo).boxes.shape == (0, 4)


def test_a_haar_cascade_gives_no_score(finder):
    faces = finder.detect(gray(cv2.imread(str(sample_photo()))))
    assert len(faces.boxes) == 1 and np.isnan(faces.scores).all()


def test_mtcnn_takes_its_weights_from_its_package_not_the_working_directory(tmp_path, monkeypatch):
    """mtcnn 1.0 would unpickle a pnet.lz4 found in the working directory."""
    monkeypatch.chdir(tmp_path)
    for name in ("pnet.lz4", "rnet.lz4", "onet.lz4"):
        (tmp_path / name).write_bytes(b"not weights")
    finder = FaceFinder(ServeSettings(detector="mtcnn"))
    assert finder.detect(np.full((64, 64), 100, np.uint8)).boxes.shape == (0, 4)


def test_mtcnn_takes_no_model_file(tmp_path):
    with pytest.raises(ValidationError, match="detector mtcnn takes no detector_model"):
        ServeSettings(detector="mtcnn", detector_model=tmp_path / "x.onnx")


@pytest.mark.parametrize("shape", [(1, 20000), (20000, 1), (1, 5000), (47, 3000), (1, 1)])
def test_slivers_have_no_face_and_no_crash(finder, shape):
    """Shrunk to detect, a 20000x1 image had no rows left, and OpenCV raised."""
    assert len(finder.detect(np.zeros(shape, np.uint8)).boxes) == 0


@pytest.mark.parametrize("shape", [(1, 20000), (20000, 1), (96, 96), (30, 60)])
def test_a_whole_image_face_is_shrunk_before_it_is_squared(shape):
    gray = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    faces = FaceFinder.whole(gray)
    assert faces.crops.shape == (1, 48, 48) and faces.boxes.tolist() == [[0, 0, *shape[::-1]]]
    if shape == (96, 96):  # square: exactly the crop of the whole image
        np.testing.assert_array_equal(faces.crops[0], crop_faces(gray, faces.boxes, 0.0)[0])
