"""Export: ONNX and TFLite compute what the Keras model computes, on real faces."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from emoflow.components.serving.detection import model_input
from emoflow.components.serving.export import (
    ExportError,
    export,
    onnx_contract,
    onnx_probabilities,
    tflite_contract,
    tflite_probabilities,
)
from tests.consumers import EMOTIONS, face_crops, tiny_keras_model

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    network = keras.models.load_model(tiny_keras_model(folder), compile=False)
    return network, export(
        network, list(EMOTIONS), folder / "export", np.stack(face_crops()), TOLERANCE
    )


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_export_matches_keras(exported, fmt):
    network, outputs = exported
    faces = np.random.default_rng(5).integers(
        0, 256, (17, 48, 48), dtype=np.uint8
    )  # any batch size
    x = model_input(faces).numpy()
    run = onnx_probabilities if fmt == "onnx" else tflite_probabilities
    actual = run(getattr(outputs, fmt), x)
    expected = network(x, training=False).numpy()
    assert actual.shape == expected.shape == (17, len(EMOTIONS))
    difference = float(np.max(np.abs(actual - expected)))
    print(f"{fmt}: max |probability difference| from Keras = {difference:.2e}")
    assert difference < TOLERANCE
    assert np.array_equal(actual.argmax(axis=1), expected.argmax(axis=1))


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_each_file_carries_its_emotion_names_and_input_contract(exported, fmt):
    """A consumer with only the file knows what goes in and what each number means."""
    network, outputs = exported
    path = getattr(outputs, fmt)
    written = (onnx_contract if fmt == "onnx" else tflite_contract)(path)
    assert written["emotions"] == list(EMOTIONS)
    assert written["input"]["name"] == "face" and written["input"]["shape"] == [None, 48, 48, 1]
    assert written["input"]["range"] == [0.0, 1.0] and written["input"]["dtype"] == "float32"
    assert written["output"]["name"] == "probabilities"
    assert written["output"]["shape"] == [None, len(EMOTIONS)]
    faces = np.stack(face_crops())
    probabilities = (onnx_probabilities if fmt == "onnx" else tflite_probabilities)(
        path, model_input(faces).numpy()
    )
    labelled = [written["emotions"][i] for i in probabilities.argmax(axis=1)]
    keras_top = network(model_input(faces), training=False).numpy().argmax(axis=1)
    assert labelled == [EMOTIONS[i] for i in keras_top]


def test_inputs_and_outputs_are_named_not_identity(exported):
    import onnx
    import tensorflow as tf

    _, outputs = exported
    graph = onnx.load(str(outputs.onnx)).graph
    assert [i.name for i in graph.input] == ["face"]
    assert [o.name for o in graph.output] == ["probabilities"]
    interpreter = tf.lite.Interpreter(model_path=str(outputs.tflite))
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["face"], "outputs": ["probabilities"]}
    }
    assert [d["name"] for d in interpreter.get_input_details()] == ["face"]
    assert [d["name"] for d in interpreter.get_output_details()] == ["probabilities"]


def test_parity_is_written_beside_the_models(exported):
    _, outputs = exported
    parity = json.loads((outputs.folder / "parity.json").read_text())
    assert parity["faces"] == len(face_crops()) and parity["emotions"] == list(EMOTIONS)
    assert set(parity["max_abs_difference"]) == {"onnx", "tflite"}
    assert all(0 <= v < TOLERANCE for v in parity["max_abs_difference"].values())


def test_an_export_over_the_tolerance_is_not_written(exported, tmp_path):
    network, _ = exported
    with pytest.raises(ExportError, match="differs from Keras by more than"):
        export(network, list(EMOTIONS), tmp_path / "strict", tolerance=-1.0)
    assert not (tmp_path / "strict").exists()


def test_cli_exports_a_model(tmp_path):
    from typer.testing import CliRunner

    from emoflow.flows.cli import app
    from tests.consumers import write_params_for

    model = tiny_keras_model(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"emotions": list(EMOTIONS)}))
    out = tmp_path / "export"
    command = ["export", "-m", str(model), "-o", str(out), "-p", str(write_params_for(tmp_path))]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "largest difference from Keras" in result.stderr
    assert {p.name for p in out.iterdir()} == {"model.onnx", "model.tflite", "parity.json"}
    assert "Captures" not in result.stdout, "Keras' listing of the SavedModel stays quiet"

    again = CliRunner().invoke(app, [*command, "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["onnx"] == str(out / "model.onnx")
    assert set(summary["max_difference"]) == {"onnx", "tflite"}
