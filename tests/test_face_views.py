"""The views of a face: random crops in training, the centre at inference, ten-crop averaging."""

import keras
import numpy as np
import pytest

from emoflow.components.face_views import (
    DEFAULT_MARGIN,
    FaceCrop,
    load_network,
    predict_views,
    tta_views,
    view_margin,
)


def _faces(count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).random((count, 48, 48, 1)).astype(np.float32)


def _cropping_network() -> keras.Model:
    face = keras.Input((48, 48, 1))
    crop = FaceCrop(40, name="crop")(face)
    return keras.Model(face, keras.layers.Flatten()(crop))


def test_inference_takes_the_centre_and_training_random_whole_pixel_windows():
    faces = _faces()
    crop = FaceCrop(40)
    np.testing.assert_array_equal(crop(faces, training=False), faces[:, 4:44, 4:44])
    windows = np.asarray(crop(np.repeat(faces[:1], 64, axis=0), training=True))
    offsets = set()
    for window in windows:
        found = [
            (y, x)
            for y in range(9)
            for x in range(9)
            if np.allclose(window, faces[0, y : y + 40, x : x + 40], atol=1e-6)
        ]
        assert len(found) == 1, "each training crop is an exact 40x40 window of the face"
        offsets.add(found[0])
    assert len(offsets) > 10, "and the windows move"


def test_a_network_with_a_crop_saves_and_loads_with_its_48x48_contract(tmp_path):
    network = _cropping_network()
    network.save(tmp_path / "model.keras")
    loaded = load_network(tmp_path / "model.keras")
    assert loaded.input_shape == (None, 48, 48, 1) and view_margin(loaded) == 4
    np.testing.assert_array_equal(loaded.predict(_faces(), verbose=0), network(_faces()))


def test_ten_crop_views_put_the_networks_centre_crop_on_each_corner():
    faces = _faces(2)
    network = _cropping_network()
    views = tta_views(faces, "ten_crop", view_margin(network))
    assert len(views) == 10
    seen = [np.asarray(network(v)).reshape(-1, 40, 40) for v in views[:5]]
    corners = [(4, 4), (0, 0), (0, 8), (8, 0), (8, 8)]
    for crop, (top, left) in zip(seen, corners, strict=True):
        np.testing.assert_array_equal(crop, faces[:, top : top + 40, left : left + 40, 0])
    np.testing.assert_array_equal(views[5], views[0][:, :, ::-1], "then each mirrored")


@pytest.mark.parametrize(("kind", "count"), [("none", 1), ("flip", 2), ("ten_crop", 10)])
def test_predictions_are_averaged_over_the_views(kind, count):
    faces = _faces(4)
    network = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten()])
    views = tta_views(faces, kind, DEFAULT_MARGIN)
    assert len(views) == count
    expected = np.mean([v.reshape(4, -1) for v in views], axis=0)
    np.testing.assert_allclose(predict_views(network, faces, kind, 8), expected, rtol=1e-6)
