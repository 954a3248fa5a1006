"""Export: the network as ONNX (tf2onnx) and TFLite, each checked against Keras.

Browser, mobile and embedded consumers run these formats without TensorFlow. A conversion
that quietly changes the numbers is worse than none, so each export is written together
with its parity: the largest probability difference from the Keras model on the same faces,
and an export over the tolerance is not written at all.

Both take what the network takes: float32 [N, 48, 48, 1] in [0, 1], i.e. 48x48 face crops
after ``components.model_input.to_model_input`` (detection and cropping stay outside).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from components.artifacts import atomic_dir, write_json
from components.errors import EmoFlowError
from components.manifest import IMAGE_SIZE
from components.model_input import INPUT_SHAPE
from components.serving.detection import model_input

ONNX_FILE = "model.onnx"
TFLITE_FILE = "model.tflite"
PARITY_FILE = "parity.json"
ONNX_OPSET = 17
INPUT_NAME = "face"


class ExportError(EmoFlowError, RuntimeError):
    """An exported model does not compute what the Keras model computes."""


@dataclass(frozen=True)
class ExportOutputs:
    folder: Path
    onnx: Path
    tflite: Path
    max_difference: dict[str, float]  # format -> largest |probability - Keras probability|


def export(
    network,
    emotions: list[str],
    out_dir: Path,
    faces: np.ndarray | None = None,
    tolerance: float = 1e-4,
) -> ExportOutputs:
    """Write ``model.onnx``, ``model.tflite`` and ``parity.json`` into ``out_dir``, all or nothing.

    ``faces`` (uint8 [N, 48, 48]) are the parity inputs; by default 64 seeded random ones.
    """
    faces = _random_faces() if faces is None else faces
    x = model_input(faces).numpy()
    expected = network(x, training=False).numpy()
    with atomic_dir(out_dir) as tmp:
        to_onnx(network, tmp / ONNX_FILE)
        to_tflite(network, tmp / TFLITE_FILE)
        difference = {
            "onnx": _max_difference(onnx_probabilities(tmp / ONNX_FILE, x), expected),
            "tflite": _max_difference(tflite_probabilities(tmp / TFLITE_FILE, x), expected),
        }
        write_json(
            tmp / PARITY_FILE,
            {
                "faces": len(faces),
                "tolerance": tolerance,
                "max_abs_difference": difference,
                "emotions": emotions,
            },
        )
        failed = {name: value for name, value in difference.items() if value > tolerance}
        if failed:
            raise ExportError(f"export differs from Keras by more than {tolerance}: {failed}")
    return ExportOutputs(out_dir, out_dir / ONNX_FILE, out_dir / TFLITE_FILE, difference)


def _signature() -> list[tf.TensorSpec]:
    return [tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name=INPUT_NAME)]


def to_onnx(network, path: Path) -> Path:
    """Through a traced tf.function: tf2onnx's ``from_keras`` fails on Keras 3 models
    (``KeyError: 'keras_tensor_...'`` with tf2onnx 1.17, TF 2.21, Keras 3.15)."""
    import tf2onnx

    call = tf.function(lambda x: network(x, training=False), input_signature=_signature())
    tf2onnx.convert.from_function(
        call, input_signature=_signature(), opset=ONNX_OPSET, output_path=str(path)
    )
    return path


def to_tflite(network, path: Path) -> Path:
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(network).convert())
    return path


def onnx_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def tflite_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    interpreter = tf.lite.Interpreter(model_path=str(path))
    (given,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(given["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], x.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _max_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    if actual.shape != expected.shape:
        raise ExportError(f"exported model gives shape {actual.shape}, Keras {expected.shape}")
    return float(np.max(np.abs(actual - expected)))


def _random_faces(count: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (count, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8
    )
