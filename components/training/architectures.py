"""Network families, built by name from the settings, and how each is trained in phases.

Every network ends in a softmax: EmoPy's relu/sigmoid outputs gave scores that did not
form a distribution, which made its "dominant emotion" meaningless. The softmax layer
computes in float32 even under mixed precision, so probabilities stay exact.

Image networks take ``[48, 48, 1]`` faces in [0, 1] (``components.model_input``);
sequence networks (``components.model_kinds``) take ``[time_delay, 48, 48, 1]``
windows of the same faces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from emoflow.components.face_views import FaceCrop
from emoflow.components.model_input import INPUT_SHAPE
from emoflow.components.settings import ModernSettings, TrainSettings, TransferSettings


def convolutional_nn(num_classes: int, dense_units: int, settings: TrainSettings) -> keras.Model:
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
            _softmax(num_classes),
        ],
        name="convolutional_nn",
    )


@dataclass(frozen=True)
class Base:
    """An ImageNet network from ``keras.applications`` and what it expects."""

    application: Callable[..., keras.Model]
    min_size: int  # smallest input side the network accepts
    mean: tuple[float, float, float]  # its input scaling, in units of [0, 1] pixels
    std: tuple[float, float, float]
    last_frozen: str  # the layer below the top blocks that fine-tuning unfreezes


_CAFFE_MEAN = (103.939 / 255, 116.779 / 255, 123.68 / 255)  # BGR means of "caffe" scaling
BASES: dict[str, Base] = {
    "inception_v3": Base(keras.applications.InceptionV3, 75, (0.5,) * 3, (0.5,) * 3, "mixed8"),
    "xception": Base(
        keras.applications.Xception, 71, (0.5,) * 3, (0.5,) * 3, "block12_sepconv3_bn"
    ),
    "vgg16": Base(keras.applications.VGG16, 32, _CAFFE_MEAN, (1 / 255,) * 3, "block4_pool"),
    "resnet50": Base(
        keras.applications.ResNet50, 32, _CAFFE_MEAN, (1 / 255,) * 3, "conv4_block6_out"
    ),
}
BASE_LAYER = "base"


def transfer_learning_nn(
    num_classes: int, dense_units: int, settings: TrainSettings
) -> keras.Model:
    """EmoPy's TransferLearningNN: an ImageNet base (Inception-v3 by default) under a new head.

    The grayscale face is resized to the base's smallest input and tiled to three channels
    inside the model, so the model takes the same input as every other image network.
    """
    transfer = settings.transfer
    base = BASES[transfer.base]
    size = base.min_size
    network = base.application(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg", name=BASE_LAYER
    )
    if transfer.weights is not None:
        load_base_weights(network, transfer.weights)
    face = keras.Input(INPUT_SHAPE, name="face")
    x = keras.layers.Resizing(size, size, name="resize_to_base")(face)
    x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = keras.layers.Normalization(
        mean=base.mean, variance=[s * s for s in base.std], name="imagenet_scaling"
    )(x)
    x = network(x)
    x = keras.layers.Dropout(transfer.dropout)(x)
    x = keras.layers.Dense(dense_units, activation="relu")(x)
    return keras.Model(face, _softmax(num_classes)(x), name="transfer_learning_nn")


def load_base_weights(network: keras.Model, path: Path) -> None:
    """ImageNet weights from a local file (nothing is downloaded), with an error that says which."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: ImageNet weights file not found (train.transfer.weights in params.yaml)"
        )
    try:
        network.load_weights(path)
    except (ValueError, OSError) as err:
        raise ValueError(
            f"{path}: cannot load these weights into {network.name} without its top: {err}"
        ) from None


def modern_nn(num_classes: int, dense_units: int, settings: TrainSettings) -> keras.Model:
    """A VGG-style network with batch norm and dropout, the recipe of the FER2013 state of the art.

    Blocks of (3x3 conv, batch norm, ReLU) pairs, each block max-pooled and dropped out,
    then a batch-normed dense layer. Label smoothing, the schedule and mixup are training
    settings (``train.overrides.modern`` in params.yaml); test-time averaging is
    ``evaluate.tta``. With ``modern.crop`` the blocks see random crops of the face in
    training and its centre at inference.
    """
    modern: ModernSettings = settings.modern
    face = keras.Input(INPUT_SHAPE, name="face")
    x = face if modern.crop is None else FaceCrop(modern.crop, name="crop")(face)
    for width in modern.widths:
        for _ in range(modern.convs_per_block):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Dropout(modern.block_dropout)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(dense_units, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Dropout(modern.dropout)(x)
    return keras.Model(face, _softmax(num_classes)(x), name="modern_nn")


def convolutional_lstm_nn(
    num_classes: int, dense_units: int, settings: TrainSettings
) -> keras.Model:
    """EmoPy's ConvolutionalLstmNN: two ConvLSTM2D layers read the window frame by frame."""
    filters = settings.sequence_filters
    return keras.Sequential(
        [
            keras.Input((settings.time_delay, *INPUT_SHAPE), name="frames"),
            keras.layers.ConvLSTM2D(filters, 4, return_sequences=True),
            keras.layers.BatchNormalization(),
            keras.layers.ConvLSTM2D(filters, 4, return_sequences=False),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(dense_units, activation="relu"),
            _softmax(num_classes),
        ],
        name="convolutional_lstm_nn",
    )


def time_delay_conv_nn(num_classes: int, dense_units: int, settings: TrainSettings) -> keras.Model:
    """EmoPy's TimeDelayConvNN: Conv3D over time, the first layer spanning two frames (a delay
    of one), the second spanning all that is left, so the output sees the whole window."""
    frames, filters = settings.time_delay, settings.sequence_filters
    first = min(2, frames)
    return keras.Sequential(
        [
            keras.Input((frames, *INPUT_SHAPE), name="frames"),
            keras.layers.Conv3D(filters, (first, 4, 4), activation="relu"),
            keras.layers.MaxPooling3D((1, 2, 2)),
            keras.layers.Conv3D(filters, (frames - first + 1, 4, 4), activation="relu"),
            keras.layers.MaxPooling3D((1, 2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(dense_units, activation="relu"),
            _softmax(num_classes),
        ],
        name="time_delay_conv_nn",
    )


def _softmax(num_classes: int) -> keras.layers.Layer:
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="emotion")


ARCHITECTURES: dict[str, Callable[[int, int, TrainSettings], keras.Model]] = {
    "convnn": convolutional_nn,
    "transfer": transfer_learning_nn,
    "modern": modern_nn,
    "convlstm": convolutional_lstm_nn,
    "timedelay": time_delay_conv_nn,
}


def build(
    name: str, num_classes: int, dense_units: int, settings: TrainSettings | None = None
) -> keras.Model:
    """Build an untrained network of the named family.

    ``dense_units`` is the width of the last hidden layer, which every family has;
    ``settings`` gives the knobs of the others (``time_delay``, ``transfer``, ``modern``).
    """
    return ARCHITECTURES[name](num_classes, dense_units, settings or TrainSettings())


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own trainable layers and learning rate."""

    name: str
    epochs: int
    learning_rate: float
    prepare: Callable[[keras.Model], None]  # sets the trainable layers; compile follows


def phases(name: str, settings: TrainSettings) -> list[Phase]:
    """How a network of the family trains: one phase, or TransferLearningNN's two.

    The transfer network first trains its head on the frozen base, then fine-tunes the
    base's top blocks with a smaller learning rate; batch norm layers stay frozen, as their
    statistics from ImageNet would be spoilt by small batches of faces.
    """
    if name != "transfer":
        return [Phase("train", settings.epochs, settings.learning_rate, _all_trainable)]
    transfer: TransferSettings = settings.transfer
    head = Phase("head", transfer.head_epochs, settings.learning_rate, _freeze_base)
    top = BASES[transfer.base].last_frozen
    fine_tune = Phase(
        "fine_tune",
        settings.epochs,
        transfer.fine_tune_learning_rate,
        lambda m: _unfreeze_above(m, top),
    )
    return [p for p in (head, fine_tune) if p.epochs > 0]


def _all_trainable(network: keras.Model) -> None:
    network.trainable = True


def _freeze_base(network: keras.Model) -> None:
    network.trainable = True
    network.get_layer(BASE_LAYER).trainable = False


def _unfreeze_above(network: keras.Model, last_frozen: str) -> None:
    base = network.get_layer(BASE_LAYER)
    base.trainable = True
    names = [layer.name for layer in base.layers]
    first = names.index(last_frozen) + 1
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= first and not isinstance(layer, keras.layers.BatchNormalization)
