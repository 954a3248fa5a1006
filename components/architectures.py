"""Network families, built by name from the settings.

Every network ends in a softmax: EmoPy's relu/sigmoid outputs gave scores that did not
form a distribution, which made its "dominant emotion" meaningless.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from components.preprocessing import INPUT_SHAPE


def convolutional_nn(num_classes: int, dense_units: int) -> keras.Model:
    """EmoPy's ConvolutionalNN: 4 x Conv2D(10, 4x4, relu), max-pool after the 2nd and 4th."""
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE, name="face"),
            keras.layers.Conv2D(10, 4, activation="relu"),
            keras.layers.Conv2D(10, 4, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(10, 4, activation="relu"),
            keras.layers.Conv2D(10, 4, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(dense_units, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax", name="emotion"),
        ],
        name="convolutional_nn",
    )


ARCHITECTURES: dict[str, Callable[[int, int], keras.Model]] = {"convnn": convolutional_nn}


def build(name: str, num_classes: int, dense_units: int) -> keras.Model:
    """Build an untrained network of the named family."""
    return ARCHITECTURES[name](num_classes, dense_units)
