"""Export: the network as ONNX (tf2onnx) and TFLite, each checked against Keras.

Browser, mobile and embedded consumers run these formats without TensorFlow. A conversion
that quietly changes the numbers is worse than none, so each export is written together
with its parity: the largest probability difference from the Keras model on the same faces,
and an export over the tolerance is not written at all.

Both take what the network takes: float32 [N, 48, 48, 1] in [0, 1], i.e. 48x48 face crops
after ``components.model_input.to_model_input`` (detection and cropping stay outside).

A bare file would leave its user guessing what the 7 numbers mean and what goes in, so each
carries its emotion names and that input contract (:func:`contract`), as JSON under the key
``emoflow``: in ONNX's ``metadata_props`` (onnxruntime: ``get_modelmeta().custom_metadata_map``),
and in TFLite as a named entry of the flatbuffer's ``metadata`` list (the schema's place for
data the interpreter ignores; :func:`tflite_contract` reads it back, without tflite_support).
The input is named ``face`` and the output ``probabilities`` in both, not ``Identity:0``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from emoflow.components.artifacts import atomic_dir, write_json
from emoflow.components.errors import EmoFlowError
from emoflow.components.manifest import IMAGE_SIZE
from emoflow.components.model_input import INPUT_SHAPE
from emoflow.components.serving.detection import model_input

ONNX_FILE = "model.onnx"
TFLITE_FILE = "model.tflite"
PARITY_FILE = "parity.json"
ONNX_OPSET = 17
INPUT_NAME = "face"
OUTPUT_NAME = "probabilities"
METADATA_KEY = "emoflow"


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
    labels = contract(emotions)
    with atomic_dir(out_dir) as tmp:
        to_onnx(network, tmp / ONNX_FILE, labels)
        to_tflite(network, tmp / TFLITE_FILE, labels)
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


def contract(emotions: list[str]) -> dict:
    """What an exported file takes and gives, written into it."""
    return {
        "emotions": list(emotions),
        "input": {
            "name": INPUT_NAME,
            "shape": [None, *INPUT_SHAPE],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "content": f"{IMAGE_SIZE}x{IMAGE_SIZE} grayscale face crops, pixel value / 255 "
            "(components.model_input.to_model_input); faces found and cropped square first",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": [None, len(emotions)],
            "dtype": "float32",
            "content": "softmax probabilities, one per emotion, in the order of 'emotions'",
        },
    }


def to_onnx(network, path: Path, labels: dict) -> Path:
    """Through a traced tf.function: tf2onnx's ``from_keras`` fails on Keras 3 models
    (``KeyError: 'keras_tensor_...'`` with tf2onnx 1.17, TF 2.21, Keras 3.15). Its output
    is a dict, so the ONNX output takes the key's name."""
    import onnx
    import tf2onnx

    spec = [tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name=INPUT_NAME)]
    call = tf.function(lambda x: {OUTPUT_NAME: network(x, training=False)}, input_signature=spec)
    model, _ = tf2onnx.convert.from_function(call, input_signature=spec, opset=ONNX_OPSET)
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(labels)})
    onnx.save(model, str(path))
    return path


def to_tflite(network, path: Path, labels: dict) -> Path:
    """Converted from the Keras model (converted from the traced function, TF 2.21 gives NaN);
    in the flatbuffer, the input and output tensors and signature entries are then named
    ``face`` and ``probabilities`` (Keras' gives ``output_0``) and the contract is added."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    converted = tf.lite.TFLiteConverter.from_keras_model(network).convert()
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(converted))
    graph, (signature,) = model.subgraphs[0], model.signatureDefs
    for tensors, ends, name in (
        (signature.inputs, graph.inputs, INPUT_NAME),
        (signature.outputs, graph.outputs, OUTPUT_NAME),
    ):
        (entry,), (index,) = tensors, ends
        entry.name = graph.tensors[index].name = name.encode()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(labels).encode(), np.uint8)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY.encode(), len(model.buffers)
    model.buffers.append(buffer)
    model.metadata = [*(model.metadata or []), entry]
    path.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return path


def onnx_contract(path: Path) -> dict:
    """The contract written into an exported ONNX file, as onnxruntime reads it."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])


def tflite_contract(path: Path) -> dict:
    """The contract written into an exported TFLite file, read from its flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(path.read_bytes()), 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name().decode() == METADATA_KEY:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    raise ExportError(f"{path}: no {METADATA_KEY!r} metadata in this TFLite file")


def onnx_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})[0]


def tflite_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    """By the signature's names, as a mobile app would call it."""
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner()
    return runner(**{INPUT_NAME: x.astype(np.float32)})[OUTPUT_NAME]


def _max_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    if actual.shape != expected.shape:
        raise ExportError(f"exported model gives shape {actual.shape}, Keras {expected.shape}")
    return float(np.max(np.abs(actual - expected)))


def _random_faces(count: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (count, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8
    )
