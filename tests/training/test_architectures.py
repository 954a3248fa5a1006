"""The network families: what each takes and gives, the transfer network's base and phases,
and the device choices that must do nothing on a CPU."""

from __future__ import annotations

from typing import get_args

import keras
import numpy as np
import pytest
import tensorflow as tf

from emoflow.components.model_kinds import SEQUENCE_ARCHITECTURES
from emoflow.components.settings import Architecture, TrainSettings
from emoflow.components.training import architectures
from emoflow.components.training.runtime import distribution_strategy, mixed_precision

EMOTIONS = 4
# The smallest widths that still build every family: these tests check plumbing, not accuracy.
SMALL = TrainSettings(
    dense_units=8,
    sequence_filters=2,
    time_delay=3,
    modern={"widths": [4, 8], "convs_per_block": 1},
    transfer={"base": "vgg16"},
)


def test_every_architecture_in_the_settings_is_built_by_name():
    assert set(architectures.ARCHITECTURES) == set(get_args(Architecture))


@pytest.mark.parametrize("name", sorted(architectures.ARCHITECTURES))
def test_every_network_gives_one_probability_distribution_per_input(name):
    keras.utils.set_random_seed(0)
    network = architectures.build(name, EMOTIONS, SMALL.dense_units, SMALL)
    shape = (SMALL.time_delay, 48, 48, 1) if name in SEQUENCE_ARCHITECTURES else (48, 48, 1)
    assert tuple(network.input_shape[1:]) == shape
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    probabilities = np.asarray(network(x, training=False))
    assert probabilities.shape == (2, EMOTIONS)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities > 0).all()
    last = network.layers[-1]
    assert (
        last.activation is keras.activations.softmax
        and last.dtype_policy.compute_dtype == "float32"
    )


@pytest.mark.slow
def test_inception_v3_is_the_default_base_at_its_smallest_input():
    network = architectures.build("transfer", EMOTIONS, 8, TrainSettings())
    base = network.get_layer(architectures.BASE_LAYER)
    assert base.input_shape[1:] == (75, 75, 3) and any(
        layer.name == "mixed10" for layer in base.layers
    )


def test_transfer_network_resizes_and_tiles_the_gray_face_inside_the_model():
    network = architectures.build("transfer", EMOTIONS, 8, SMALL)
    to_rgb = keras.Model(network.input, network.get_layer("gray_to_rgb").output)
    face = np.random.default_rng(1).random((1, 48, 48, 1), dtype=np.float32)
    rgb = np.asarray(to_rgb(face))
    assert rgb.shape == (1, 32, 32, 3), "VGG16's smallest input"
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_transfer_base_weights_come_from_the_local_file_or_are_random(tmp_path):
    keras.utils.set_random_seed(1)
    source = architectures.build("transfer", EMOTIONS, 8, SMALL).get_layer(architectures.BASE_LAYER)
    weights = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(weights)

    keras.utils.set_random_seed(2)
    loaded = architectures.build(
        "transfer",
        EMOTIONS,
        8,
        SMALL.model_copy(
            update={"transfer": SMALL.transfer.model_copy(update={"weights": weights})}
        ),
    )
    for a, b in zip(source.get_weights(), loaded.get_layer(architectures.BASE_LAYER).get_weights()):
        np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(2)
    random = architectures.build("transfer", EMOTIONS, 8, SMALL).get_layer(architectures.BASE_LAYER)
    assert not np.array_equal(source.get_weights()[0], random.get_weights()[0])

    missing = SMALL.transfer.model_copy(update={"weights": tmp_path / "nowhere.h5"})
    with pytest.raises(FileNotFoundError, match=r"nowhere\.h5: ImageNet weights file not found"):
        architectures.build("transfer", EMOTIONS, 8, SMALL.model_copy(update={"transfer": missing}))


def test_transfer_trains_the_head_first_then_the_top_blocks_without_batch_norm():
    settings = SMALL.model_copy(
        update={"epochs": 3, "transfer": SMALL.transfer.model_copy(update={"head_epochs": 2})}
    )
    network = architectures.build("transfer", EMOTIONS, 8, settings)
    head, fine_tune = architectures.phases("transfer", settings)
    assert (head.name, head.epochs, fine_tune.name, fine_tune.epochs) == ("head", 2, "fine_tune", 3)
    assert fine_tune.learning_rate == settings.transfer.fine_tune_learning_rate

    base = network.get_layer(architectures.BASE_LAYER)
    head.prepare(network)
    assert not base.trainable_weights and network.trainable_weights
    fine_tune.prepare(network)
    trainable = {layer.name for layer in base.layers if layer.trainable_weights}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3"}

    without_head = settings.model_copy(
        update={"transfer": settings.transfer.model_copy(update={"head_epochs": 0})}
    )
    assert [p.name for p in architectures.phases("transfer", without_head)] == ["fine_tune"]
    assert [p.name for p in architectures.phases("convnn", settings)] == ["train"]


def test_fine_tuning_keeps_batch_norm_frozen():
    settings = SMALL.model_copy(
        update={"transfer": SMALL.transfer.model_copy(update={"base": "resnet50"})}
    )
    network = architectures.build("transfer", EMOTIONS, 8, settings)
    architectures.phases("transfer", settings)[-1].prepare(network)
    base = network.get_layer(architectures.BASE_LAYER)
    trainable = [layer for layer in base.layers if layer.trainable_weights]
    assert trainable and all(layer.name.startswith("conv5_") for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)


def test_on_a_cpu_training_uses_the_default_strategy_and_float32():
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("this test describes a machine without GPUs")
    strategy = distribution_strategy(multi_gpu=True)
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 1 and strategy is tf.distribute.get_strategy()
    before = keras.mixed_precision.global_policy().name
    with mixed_precision(enabled=True) as policy:
        assert policy == "float32" and keras.mixed_precision.global_policy().name == "float32"
    assert keras.mixed_precision.global_policy().name == before
