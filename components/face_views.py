"""The views of a face a network sees: random crops in training, the centre at inference, and
the ten views of test-time averaging; and the one way to load a saved network.

The best published from-scratch FER2013 recipe trains on random 40x40 crops of the 48x48
faces and averages ten crops at test time (Khaireddin & Chen 2021). The crop lives inside the
network (:class:`FaceCrop`) rather than in the input pipeline, so every saved model keeps the
48x48 input contract that serving, exports and evaluation share, and costs 40x40 compute.

Ten-crop averaging is done by shifting the 48x48 face (edges repeated) so that the network's
own centre crop falls on each corner: the centre crop of a face shifted by ``margin`` pixels is
exactly the corner crop of the original. So the same views serve networks with and without a
crop layer, and the serving code needs no knowledge of the network's inside.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from emoflow.components.manifest import IMAGE_SIZE
from emoflow.components.settings import TestTimeViews

DEFAULT_MARGIN = 4  # pixels a ten-crop view shifts a network without a crop layer: 40 of 48


@keras.saving.register_keras_serializable(package="emoflow")
class FaceCrop(keras.layers.Layer):
    """A random ``size`` x ``size`` window of each face in training, the centre one otherwise."""

    def __init__(self, size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size = size
        self._seeds = keras.random.SeedGenerator()

    def call(self, faces: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        side = faces.shape[1]
        room = side - self.size
        if not training:
            start = room // 2
            return faces[:, start : start + self.size, start : start + self.size, :]
        count = tf.shape(faces)[0]
        corners = tf.cast(
            keras.random.randint((count, 2), 0, room + 1, seed=self._seeds), tf.float32
        )
        # Boxes on whole pixels, `size` samples apart by one pixel: bilinear sampling copies them.
        boxes = tf.concat([corners, corners + self.size - 1], axis=1) / (side - 1)
        return tf.image.crop_and_resize(
            faces, boxes, tf.range(count), [self.size, self.size], method="bilinear"
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.size, self.size, input_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size}


def load_network(path: Path, compile: bool = False) -> keras.Model:
    """A saved ``.keras`` network, in Keras' safe mode, with EmoFlow's own layers known."""
    return keras.models.load_model(path, compile=compile, safe_mode=True)


def view_margin(network: keras.Model) -> int:
    """How far ten-crop views shift faces for ``network``: to its crop's corners, if it crops."""
    for layer in network.layers:
        if isinstance(layer, FaceCrop):
            return (IMAGE_SIZE - layer.size) // 2
    return DEFAULT_MARGIN


def tta_views(faces: np.ndarray, kind: TestTimeViews, margin: int) -> list[np.ndarray]:
    """The views of ``[N, 48, 48, 1]`` faces whose predictions are averaged.

    none: the faces; flip: and their mirror images; ten_crop: the centre and four corner
    windows (shifted by ``margin``), each also mirrored.
    """
    if kind == "none":
        return [faces]
    if kind == "flip":
        return [faces, faces[:, :, ::-1]]
    padded = np.pad(faces, ((0, 0), (margin, margin), (margin, margin), (0, 0)), mode="edge")
    shifts = [(0, 0), (-margin, -margin), (-margin, margin), (margin, -margin), (margin, margin)]
    shifted = [
        padded[:, margin + dy : margin + dy + IMAGE_SIZE, margin + dx : margin + dx + IMAGE_SIZE]
        for dy, dx in shifts
    ]
    return shifted + [view[:, :, ::-1] for view in shifted]


def predict_views(
    network: keras.Model, faces: np.ndarray, kind: TestTimeViews, batch_size: int
) -> np.ndarray:
    """Class probabilities of ``faces``, averaged over their test-time views."""
    views = tta_views(faces, kind, view_margin(network))
    total = sum(network.predict(v, batch_size=batch_size, verbose=0) for v in views)
    return total / len(views)
