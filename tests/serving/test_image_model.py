"""The registry model on raw images: faces found, input forms, face-crop mode, errors, parity.

One tiny model is trained, logged and registered per module; every test loads it from the
registry as a consumer would.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from emoflow.components.manifest import Dataset, describe_pixels
from emoflow.components.model_input import to_model_input
from emoflow.components.records.input_pipelines import scoring_batches
from emoflow.components.records.tfrecords import write_split
from emoflow.components.serving.detection import HAAR_CASCADE, crop_faces
from emoflow.components.serving.image_model import (
    BOX_COLUMNS,
    Deadline,
    DeadlineExceeded,
    ImageGate,
    RequestError,
    ServerBusy,
)
from emoflow.components.settings import ServeSettings
from emoflow.flows.code_graph import PROJECT_ROOT
from tests.consumers import (
    EMOTIONS,
    best_iou,
    canvas_with_faces,
    detectable_crops,
    image_column,
    load_registered,
    png,
    register_tiny_model,
    tracking,
)

ROOT = PROJECT_ROOT
TABLE_COLUMNS = ["image", "source", *BOX_COLUMNS, "face_score", *EMOTIONS, "emotion"]


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, str]:
    """The tiny model's registry URI and its tracking store's URI."""
    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return register_tiny_model(folder, uri, serve=ServeSettings(margin=0.1, max_images=4)), uri


@pytest.fixture(scope="module")
def model(registered):
    return load_registered(*registered)


# Runs in a fresh interpreter with the checkout (and the editable install's finder) taken off
# the import path: whatever `emoflow.components` it then imports is the copy the model shipped.
ISOLATED_LOAD = """
import importlib.util, json, os, sys
root = sys.argv[1]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != root and "editable" not in p]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
assert importlib.util.find_spec("emoflow") is None, "the checkout is still importable"
import mlflow, numpy as np, pandas as pd
mlflow.set_tracking_uri(sys.argv[2])
model = mlflow.pyfunc.load_model(sys.argv[3])
import emoflow.components
shipped = os.path.dirname(emoflow.components.__file__)
table = model.predict(pd.DataFrame({"image": list(np.full((2, 48, 48), 128, np.uint8))}))
print(json.dumps({
    "shipped": sorted(os.path.relpath(os.path.join(d, f), shipped)
                      for d, _, fs in os.walk(shipped) for f in fs if f.endswith(".py")),
    "training_importable": importlib.util.find_spec("emoflow.components.training") is not None,
    "rows": len(table),
}))
"""


def test_a_registered_model_loads_and_predicts_with_only_the_code_it_ships(registered, tmp_path):
    model_uri, uri = registered
    done = subprocess.run(
        [sys.executable, "-c", ISOLATED_LOAD, str(ROOT), uri, model_uri],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    parts = {Path(f).parts[0] for f in report["shipped"] if len(Path(f).parts) > 1}
    assert parts == {"serving"}, "only the shared root and serving travel with the model"
    assert "settings.py" in report["shipped"] and "serving/image_model.py" in report["shipped"]
    assert report["training_importable"] is False and report["rows"] == 2


@pytest.fixture(scope="module")
def scenes():
    """Three images: no face, one face, three faces; and where the faces were put."""
    crops = detectable_crops(3)
    empty, _ = canvas_with_faces([])
    one, one_box = canvas_with_faces(crops[:1])
    three, three_boxes = canvas_with_faces(crops, size=(720, 300))
    return [empty, one, three], [[], one_box, three_boxes]


def test_one_row_per_face_and_none_for_an_image_without_faces(model, scenes):
    images, placed = scenes
    frame = pd.DataFrame(
        {"image": [png(images[0]), base64.b64encode(png(images[1])).decode(), png(images[2])]}
    )
    result = model.predict(frame)
    assert list(result.columns) == TABLE_COLUMNS
    assert result["image"].tolist() == [1, 2, 2, 2]
    for (_, row), expected in zip(result.iterrows(), [placed[1][0], *placed[2]]):
        assert best_iou(expected, [row[list(BOX_COLUMNS)].to_numpy()]) > 0.6
    probabilities = result[list(EMOTIONS)].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert result["emotion"].tolist() == [EMOTIONS[i] for i in probabilities.argmax(axis=1)]


def test_no_face_anywhere_is_an_empty_table_not_an_error(model, scenes):
    result = model.predict(pd.DataFrame({"image": [png(scenes[0][0])]}))
    assert result.empty and list(result.columns) == TABLE_COLUMNS


def test_every_input_form_gives_the_same_rows(model, scenes):
    image = scenes[0][1]
    text = base64.b64encode(png(image)).decode()
    expected = model.predict(image_column([png(image)]))
    forms = [
        (image_column([image]), None),
        (image_column([image[..., ::-1]]), {"channel_order": "rgb"}),
        (image_column([text]), None),
        ({"image": [text]}, None),  # REST "inputs": MLflow hands the list over as one cell
        ({"image": np.array([text])}, None),
    ]
    for model_input, params in forms:
        pd.testing.assert_frame_equal(model.predict(model_input, params=params), expected)
    two = model.predict({"image": [text, png(image)]})
    assert two["image"].tolist() == [0, 1] and two["source"].tolist() == ["image 0", "image 1"]
    classifier = model.unwrap_python_model()  # in-process, the bare forms too
    bare = [
        (png(image), None),
        ([image], None),
        (image[np.newaxis], None),  # an array is a batch
        ([image[..., ::-1]], {"channel_order": "rgb"}),
    ]
    for model_input, params in bare:
        pd.testing.assert_frame_equal(classifier.predict(None, model_input, params), expected)


def test_the_input_schema_is_the_image_column_and_mlflow_holds_callers_to_it(model, scenes):
    schema = model.metadata.signature.inputs
    assert schema.to_dict() == [{"type": "any", "name": "image", "required": True}]
    image = png(scenes[0][1])
    with pytest.raises(MlflowException, match=r"missing inputs \['image'\]") as raised:
        model.predict([image])  # a bare list: MLflow looks for the column, before the model
    assert raised.value.get_http_status_code() == 400
    with pytest.raises(RequestError, match=r"a DataFrame needs an 'image' column"):
        model.unwrap_python_model().predict(None, pd.DataFrame({"pixels": [image]}))


def test_the_peers_forms_give_the_same_faces_named_by_their_path(model, scenes, tmp_path):
    """fer's and DeepFace's habits: a path, or one array straight from cv2.imread."""
    image = scenes[0][1]
    path = tmp_path / "one face.png"
    path.write_bytes(png(image))
    expected = model.predict(pd.DataFrame({"image": [png(image)]}))
    assert expected["source"].tolist() == ["image 0"] and expected["face_score"].isna().all()
    forms = [
        (cv2.imread(str(path)), "image 0"),  # HxWx3: one photo, not H images
        (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), "image 0"),
        (str(path), str(path)),
        (path, str(path)),
    ]
    classifier = model.unwrap_python_model()
    for model_input, source in forms:
        result = classifier.predict(None, model_input)
        assert result["source"].tolist() == [source]
        pd.testing.assert_frame_equal(
            result.drop(columns="source"), expected.drop(columns="source")
        )
    mixed = model.predict(image_column([image, str(path), path]))  # the schema's form
    assert mixed["image"].tolist() == [0, 1, 2]
    assert mixed["source"].tolist() == ["image 0", str(path), str(path)]


def test_a_model_loaded_without_file_reading_takes_strings_as_base64(registered, tmp_path):
    model_uri, uri = registered
    path = tmp_path / "photo.png"
    path.write_bytes(png(np.zeros((60, 60), np.uint8)))
    with tracking(uri):
        strict = mlflow.pyfunc.load_model(model_uri, model_config={"read_files": False})
    with pytest.raises(MlflowException, match="image 0: a string must be a base64-encoded image"):
        strict.predict(image_column([str(path)]))
    with pytest.raises(MlflowException, match="file paths are read in-process only"):
        strict.predict(image_column([path]))


def test_face_crop_arrays_keep_the_skeleton_contract(model):
    faces = np.stack(detectable_crops(3))
    network = model.unwrap_python_model().network
    direct = network.predict(to_model_input(faces), verbose=0)
    result = model.predict(image_column(faces))  # a column of 48x48 arrays
    assert list(result.columns) == list(EMOTIONS)
    np.testing.assert_allclose(result.to_numpy(), direct, atol=1e-6)
    classifier = model.unwrap_python_model()
    flat = pd.DataFrame(faces.reshape(3, -1))  # 2304 pixel columns
    for bare in (faces, flat):
        pd.testing.assert_frame_equal(classifier.predict(None, bare), result)
    detected = model.predict(image_column(faces), params={"mode": "detect"})  # as images
    assert list(detected.columns) == TABLE_COLUMNS


def test_faces_mode_takes_each_image_as_one_face(model):
    faces = detectable_crops(2)
    doubled = [np.repeat(np.repeat(face, 2, axis=0), 2, axis=1) for face in faces]  # 96x96
    result = model.predict(
        pd.DataFrame({"image": [png(f) for f in doubled]}), params={"mode": "faces"}
    )
    assert result["image"].tolist() == [0, 1]
    assert result[list(BOX_COLUMNS)].to_numpy().tolist() == [[0, 0, 96, 96]] * 2
    crops = model.predict(image_column(faces))
    np.testing.assert_allclose(result[list(EMOTIONS)].to_numpy(), crops.to_numpy(), atol=1e-6)


def test_the_network_reads_what_training_reads(model, scenes, tmp_path):
    """Spy on the network's input: the tf.data training tensor, bit for bit, and the crop
    at the reported box with the logged margin for a detected face."""
    classifier = model.unwrap_python_model()
    seen = []
    original = classifier._forward
    classifier._forward = lambda x: seen.append(np.asarray(x)) or original(x)
    try:
        faces = np.stack(detectable_crops(2))
        manifest = pd.DataFrame(
            {"id": ["a", "b"], "label": ["happy", "sad"], "split": ["test"] * 2}
        )
        write_split(
            Dataset(pd.concat([manifest, describe_pixels(faces)], axis=1), faces),
            "test",
            tmp_path,
            10,
        )
        ((training_tensor, _),) = scoring_batches(
            tmp_path, ["test"], ("happy", "sad"), 8
        ).as_numpy_iterator()
        model.predict(image_column(faces))
        np.testing.assert_array_equal(seen[-1], training_tensor)

        image = scenes[0][1]
        row = model.predict(image_column([image])).iloc[0]
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        crop = crop_faces(gray, np.array([row[list(BOX_COLUMNS)].to_numpy(np.int64)]), margin=0.1)
        np.testing.assert_array_equal(seen[-1], to_model_input(crop).numpy())
    finally:
        classifier._forward = original


@pytest.mark.parametrize(
    ("model_input", "params", "message"),
    [
        (
            image_column([png(np.zeros((60, 60), np.uint8)), b"\x89PNG nope"]),
            None,
            r"image 1: not an image",
        ),
        (pd.DataFrame({"pixels": ["x"]}), None, r"missing inputs \['image'\]"),
        (image_column([np.zeros((60, 60), np.uint8)] * 5), None, r"5 images in one call, over"),
        (image_column([np.zeros((60, 60), np.float32) + 0.5]), None, r"must be whole numbers"),
        (image_column([b"x"]), {"mode": "guess"}, r"params.mode must be one of auto, detect"),
        (image_column([b"x"]), {"channel_order": "gbr"}, r"params.channel_order must be one of"),
    ],
)
def test_bad_inputs_are_invalid_parameter_errors(model, model_input, params, message):
    with pytest.raises(MlflowException, match=message) as raised:
        model.predict(model_input, params=params)
    assert raised.value.get_http_status_code() == 400


def test_the_model_carries_its_detector_and_serve_settings(model):
    classifier = model.unwrap_python_model()
    assert classifier.settings.margin == 0.1 and classifier.settings.max_images == 4
    detector = classifier.detector_file
    assert detector.name == HAAR_CASCADE.name and detector != HAAR_CASCADE  # a copy in the model
    assert detector.read_bytes() == HAAR_CASCADE.read_bytes()
    signature = model.metadata.signature
    assert {p.name: p.default for p in signature.params.params} == {
        "mode": "auto",
        "channel_order": "bgr",
    }
    assert [c.name for c in signature.outputs.inputs] == TABLE_COLUMNS


def test_unknown_params_are_refused_by_name(model):
    """MLflow drops params its schema does not declare; a misspelt mode must not detect."""
    with pytest.raises(
        MlflowException, match=r"unknown params mdoe, x: this model takes mode"
    ) as raised:
        blank = image_column([png(np.zeros((60, 60), np.uint8))])
        model.predict(blank, params={"mdoe": "faces", "x": "1"})
    assert raised.value.get_http_status_code() == 400
    classifier = model.unwrap_python_model()  # in-process calls are held to the same rule
    with pytest.raises(RequestError, match=r"unknown params mdoe"):
        classifier.predict(None, [np.zeros((60, 60), np.uint8)], {"mdoe": "faces"})
    crop = image_column([np.zeros((48, 48), np.uint8)])
    assert model.predict(crop, params={"mode": "faces"}).shape == (1, 7)


@pytest.mark.parametrize(
    ("model_input", "params"),
    [
        (image_column([png(np.zeros((1, 20000), np.uint8))]), None),  # shrunk to detect: no rows
        (image_column([png(np.zeros((20000, 1), np.uint8))]), None),
        (image_column([np.zeros((1, 5000), np.uint8)]), None),
        (image_column([png(np.zeros((1, 20000), np.uint8))]), {"mode": "faces"}),
        (image_column([np.zeros((1, 5000), np.uint8)]), {"mode": "faces"}),
    ],
)
def test_slivers_are_images_without_faces_not_crashes(model, model_input, params):
    result = model.predict(model_input, params=params)
    assert len(result) == (1 if params else 0)
    if params:
        assert result[list(BOX_COLUMNS)].to_numpy()[0, 2:].max() in (5000, 20000)


def test_an_image_opencv_fails_on_is_a_400_naming_it_without_a_stack_trace(model, monkeypatch):
    classifier = model.unwrap_python_model()

    def fails(gray):
        raise cv2.error("/io/opencv/modules/imgproc/src/resize.cpp:4208: error: (-215)")

    monkeypatch.setattr(classifier.finder, "detect", fails)
    images = [np.zeros((60, 60), np.uint8), np.zeros((70, 50), np.uint8)]
    with pytest.raises(MlflowException) as raised:
        model.predict(image_column(images))
    error = raised.value
    assert error.get_http_status_code() == 400
    assert error.message == "image 0: OpenCV cannot process this 60x60 image"
    assert "stack_trace" not in error.serialize_as_json()


def test_an_error_message_is_not_rewritten_to_quote_the_request():
    """MLflow's scoring server prefixes a model's error with the whole request, base64 faces
    and all (``Failed to predict data '...'``); our errors keep their message."""
    error = RequestError("image 3: not an image", 1001)
    error.message = f"Failed to predict data '{'iVBOR' * 100}'. \nError: {error.message}"
    assert error.message == "image 3: not an image" and "iVBOR" not in error.serialize_as_json()


def test_a_large_jpeg_is_decoded_reduced_and_its_boxes_are_in_its_own_pixels(model):
    (crop,) = detectable_crops(1)
    image, (placed,) = canvas_with_faces([crop], size=(2800, 1500), side=600)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    # decoded at 1/2 scale: still over detect_max_side (1280)
    result = model.predict(image_column([jpeg]))
    assert len(result) == 1
    assert best_iou(placed, [result[list(BOX_COLUMNS)].to_numpy()[0]]) > 0.6


def test_a_call_past_its_deadline_stops_between_images(model, monkeypatch):
    """Work a client gave up on does not go on: the call stops at its deadline (504), and the
    images after it are never searched."""
    classifier = model.unwrap_python_model()
    timeout = classifier.settings.model_copy(update={"request_timeout_seconds": 0.5})
    monkeypatch.setattr(classifier, "settings", timeout)
    searched = []
    detect = classifier.finder.detect

    def slow(gray):
        searched.append(len(searched))
        time.sleep(0.3)
        return detect(gray)

    monkeypatch.setattr(classifier.finder, "detect", slow)
    started = time.monotonic()
    with pytest.raises(MlflowException, match=r"the call ran past its limit of 0.5 s") as raised:
        model.predict(image_column([np.zeros((60, 60), np.uint8)] * 4))  # the most it takes
    assert raised.value.get_http_status_code() == 504
    assert 1 <= len(searched) < 4 and time.monotonic() - started < 0.5 + 0.3 + 1.0
    assert raised.value.message.startswith(f"image {len(searched)}: not searched")


def test_the_gate_serves_the_cheapest_image_next_and_refuses_the_costliest_when_full():
    gate, deadline = ImageGate(parallel=1, queued=2), Deadline(30)
    order, outcomes = [], {}

    def call(cost: int) -> None:
        try:
            with gate.turn(cost, deadline, f"cost {cost}"):
                order.append(cost)
            outcomes[cost] = "served"
        except ServerBusy as err:
            outcomes[cost] = str(err)

    def waiting(count: int) -> None:
        while len(gate._waiting) != count:
            time.sleep(0.01)

    threads = []
    with gate.turn(1, deadline, "first"):  # holds the only turn
        for cost, queued in ((50, 1), (10, 2), (30, 2), (90, 2)):
            threads.append(threading.Thread(target=call, args=(cost,)))
            threads[-1].start()
            if cost != 90:
                waiting(queued)
        threads[-1].join(5)  # 90 costs more than every waiter: refused at once
    for thread in threads:
        thread.join(5)
    assert order == [10, 30]
    assert outcomes[50] == outcomes[90].replace("90", "50")  # the costliest waiter, refused
    assert "the server is busy" in outcomes[50]


def test_a_wait_for_a_turn_ends_at_the_deadline():
    gate = ImageGate(parallel=1, queued=4)
    with gate.turn(1, Deadline(30), "first"):
        with pytest.raises(DeadlineExceeded, match="image 5: not searched"):
            with gate.turn(1, Deadline(0.2), "image 5"):
                pass
    with gate.turn(1, Deadline(1), "again"):  # the turn was handed back
        assert gate._waiting == []
