"""Training throughput of every architecture, and how much of the machine it uses.

    python bench/train_throughput.py [--batch 64] [--steps 10] [--architectures convnn modern ...]

For each network (built from ``params.yaml``, as ``emoflow train`` builds it) this times
``fit`` on ``--steps`` batches of random inputs kept in memory, after a warm-up fit that
traces the step, so the figure is the network's, not the input pipeline's. It prints
images/s (a sequence window counts ``time_delay`` images), the achieved FLOP/s and that as a
fraction of the machine's peak, measured as the best of a few big ``tf.matmul`` calls.

FLOPs are counted per layer from its shapes (2 per multiply-add; convolutions, separable and
depthwise convolutions, ConvLSTM2D gates, Conv3D and dense layers; batch norm, pooling and
activations left out) for one forward pass; a training step is taken as three forward passes
(forward, and backward for activations and for weights). As on ``emoflow train``, a GPU runs
in mixed precision, and its peak is then measured in float16.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from emoflow.components.model_kinds import SEQUENCE_ARCHITECTURES
from emoflow.components.settings import load_params
from emoflow.components.training import architectures
from emoflow.components.training.train import (
    compile_network,
    distribution_strategy,
    mixed_precision,
)

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STEP_PASSES = 3  # forward + backward (activations) + backward (weights)


def main() -> int:
    args = _arguments()
    params = load_params(ROOT / "params.yaml")
    gpus = tf.config.list_physical_devices("GPU")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{len(gpus)} GPU(s)"
    )
    dtype = tf.float16 if gpus and params.train.mixed_precision else tf.float32
    peak = matmul_peak(args.matmul_size, dtype)
    print(
        f"matmul peak ({args.matmul_size}x{args.matmul_size}, {dtype.name}): {peak / 1e9:.1f} "
        "GFLOP/s"
    )
    print(f"batch {args.batch}, {args.steps} timed steps\n")
    print(f"{'architecture':<14}{'GFLOP/image':>12}{'images/s':>11}{'GFLOP/s':>10}{'of peak':>9}")
    for name in args.architectures:
        recipe = params.train.recipe(name)
        flops, images_per_second = _measure(name, recipe, args.batch, args.steps)
        per_image = flops / _frames(name, recipe)
        achieved = TRAIN_STEP_PASSES * per_image * images_per_second
        print(
            f"{name:<14}{per_image / 1e9:>12.3f}{images_per_second:>11.1f}"
            f"{achieved / 1e9:>10.1f}{achieved / peak:>9.1%}",
            flush=True,
        )
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per network")
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--architectures", nargs="+", default=list(architectures.ARCHITECTURES))
    return parser.parse_args()


def matmul_peak(size: int, dtype: tf.DType, repeats: int = 5) -> float:
    """FLOP/s of the fastest of ``repeats`` ``size`` x ``size`` matrix products."""
    a = tf.random.normal([size, size], dtype=dtype)
    b = tf.random.normal([size, size], dtype=dtype)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
    product(a, b).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def _measure(name: str, recipe, batch: int, steps: int) -> tuple[float, float]:
    """Forward FLOPs of one example, and training images/s."""
    num_classes = 7
    with mixed_precision(recipe.mixed_precision), distribution_strategy(recipe.multi_gpu).scope():
        network = architectures.build(name, num_classes, recipe.dense_units, recipe)
        compile_network(network, recipe, recipe.learning_rate, steps)
    flops = forward_flops(network)
    shape = tuple(network.input_shape[1:])
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch, *shape), dtype=np.float32))
    y = tf.one_hot(rng.integers(0, num_classes, batch), num_classes)
    data = tf.data.Dataset.from_tensors((x, y))
    network.fit(data.repeat(2), epochs=1, verbose=0)  # trace
    started = time.perf_counter()
    network.fit(data.repeat(steps), epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    return flops, steps * batch * _frames(name, recipe) / seconds


def _frames(name: str, recipe) -> int:
    return recipe.time_delay if name in SEQUENCE_ARCHITECTURES else 1


def forward_flops(model: keras.Model) -> float:
    """FLOPs of one example's forward pass through the layers that do the arithmetic."""
    total = 0.0
    for layer in model.layers:
        total += forward_flops(layer) if isinstance(layer, keras.Model) else _layer_flops(layer)
    return total


def _layer_flops(layer: keras.layers.Layer) -> float:
    if not hasattr(layer, "kernel_size") and not isinstance(layer, keras.layers.Dense):
        return 0.0
    cin = layer.input.shape[-1]
    out = layer.output.shape[1:]
    positions = float(np.prod(out[:-1]))  # output positions (time x height x width, or 1)
    if isinstance(layer, keras.layers.Dense):
        return 2.0 * cin * layer.units * positions
    window = float(np.prod(layer.kernel_size))
    if isinstance(layer, keras.layers.ConvLSTM2D):
        frames = layer.input.shape[1]
        height, width = (out[1], out[2]) if layer.return_sequences else (out[0], out[1])
        gates = 4 * layer.filters
        return 2.0 * window * (cin + layer.filters) * gates * height * width * frames
    if isinstance(layer, keras.layers.SeparableConv2D):
        return (
            2.0
            * positions
            * (window * cin * layer.depth_multiplier + cin * layer.depth_multiplier * layer.filters)
        )
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return 2.0 * positions * window * cin * layer.depth_multiplier
    return 2.0 * positions * window * cin * out[-1] / getattr(layer, "groups", 1)


if __name__ == "__main__":
    raise SystemExit(main())
