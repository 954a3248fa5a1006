"""Training-time augmentation with ``tf.image`` ops, inside the tf.data pipeline.

EmoPy augmented by mirroring, cropping and rotating; here the same ideas run on the fly, so
the shards on disk stay the real images and every epoch sees fresh variants. Stateless ops
with per-example seeds keep a seeded run reproducible even with parallel map calls.
"""

from __future__ import annotations

import math

import tensorflow as tf

from emoflow.components.settings import AugmentSettings


def augment_image(image: tf.Tensor, seed: tf.Tensor, settings: AugmentSettings) -> tf.Tensor:
    """Augment one float image in [0, 1] of shape [H, W, 1] with a [2]-int seed."""
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    if settings.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[0])
    image = _rotate_and_zoom(image, seeds[1], settings)
    if settings.max_brightness > 0:
        image = tf.image.stateless_random_brightness(image, settings.max_brightness, seed=seeds[2])
    low, high = settings.contrast_range
    if high > low:
        image = tf.image.stateless_random_contrast(image, low, high, seed=seeds[3])
    image = tf.clip_by_value(image, 0.0, 1.0)
    if settings.erase_probability > 0:
        image = _random_erase(image, seeds[4], settings.erase_probability)
    return image


def _rotate_and_zoom(image: tf.Tensor, seed: tf.Tensor, settings: AugmentSettings) -> tf.Tensor:
    """One affine warp: rotation about the centre, zoom in, and a shift within the zoom margin.

    Zooming in by ``s`` and shifting inside the freed margin is a random crop resized back,
    done in the same resampling as the rotation so the image is interpolated only once.
    """
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    draws = tf.random.stateless_uniform([4], seed=seed, minval=-1.0, maxval=1.0)
    angle = draws[0] * settings.max_rotation_deg * math.pi / 180.0
    scale = 1.0 - settings.max_zoom * (draws[1] + 1.0) / 2.0  # fraction of the input seen
    shift_x = draws[2] * (1.0 - scale) * width / 2.0
    shift_y = draws[3] * (1.0 - scale) * height / 2.0
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    a0, a1 = scale * tf.cos(angle), -scale * tf.sin(angle)
    b0, b1 = scale * tf.sin(angle), scale * tf.cos(angle)
    transform = tf.stack(
        [
            a0,
            a1,
            cx - a0 * cx - a1 * cy + shift_x,
            b0,
            b1,
            cy - b0 * cx - b1 * cy + shift_y,
            0.0,
            0.0,
        ]
    )
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    return warped[0]


def _random_erase(image: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """With ``probability``, noise over a rectangle of 2-40 % of the image, aspect 0.3-3.3
    (random erasing, Zhong et al. 2020, with the paper's ranges)."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    draws = tf.random.stateless_uniform([5], seed=seeds[0])
    area = (0.02 + 0.38 * draws[1]) * height * width
    aspect = tf.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * draws[2])
    box_h = tf.minimum(tf.sqrt(area * aspect), height)
    box_w = tf.minimum(tf.sqrt(area / aspect), width)
    top = draws[3] * (height - box_h)
    left = draws[4] * (width - box_w)
    rows = tf.range(height)[:, tf.newaxis, tf.newaxis]
    cols = tf.range(width)[tf.newaxis, :, tf.newaxis]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    noise = tf.random.stateless_uniform(tf.shape(image), seed=seeds[1])
    erased = tf.where(inside, noise, image)
    return tf.cond(draws[0] < probability, lambda: erased, lambda: image)
