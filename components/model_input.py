"""The one transformation from face pixels to model input, shared by training and serving.

EmoPy's predictor fed the network differently from its trainer; keeping a single function
that both the tf.data pipeline and the registry model call makes that impossible here.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from emoflow.components.manifest import IMAGE_SIZE

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)


def to_model_input(faces: tf.Tensor | np.ndarray) -> tf.Tensor:
    """uint8 48x48 grey faces, ``[..., 48, 48]`` or ``[..., 48, 48, 1]`` -> float32 in [0, 1]."""
    x = tf.convert_to_tensor(faces)
    if x.shape[-1] != 1:
        x = x[..., tf.newaxis]
    if tuple(x.shape[-3:]) != INPUT_SHAPE:
        raise ValueError(
            f"faces must be {IMAGE_SIZE}x{IMAGE_SIZE} grayscale, got shape {tuple(x.shape)}"
        )
    return tf.cast(x, tf.float32) / 255.0
