"""``emoflow predict``: image batches, and videos with tracking, smoothing and windows.

The video is generated here (Motion JPEG AVI): a face crossing the frame. Its smoothing and
window logic is checked with real detection and scripted probabilities (happy, then sad), so
each expected number is computed independently in the test.
"""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from emoflow.components.serving.detection import FaceFinder, iou
from emoflow.components.serving.face_tracking import FaceTracker
from emoflow.components.serving.predict import plan
from emoflow.components.serving.sources import PredictError
from emoflow.components.serving.video import predict_video
from emoflow.components.settings import PredictSettings, ServeSettings
from emoflow.flows.cli import app
from tests.conftest import write_params
from tests.consumers import (
    EMOTIONS,
    canvas_with_faces,
    detectable_crops,
    png,
    register_tiny_model,
    tiny_keras_model,
    write_params_for,
)

FRAMES, SWITCH = 24, 12  # scripted: happy before frame 12, sad from it
HAPPY, SAD = EMOTIONS.index("happy"), EMOTIONS.index("sad")


def scripted(emotion: int) -> np.ndarray:
    p = np.full(len(EMOTIONS), 0.05)
    p[emotion] = 0.7
    return p


class ScriptedClassifier:
    """Real face detection; probabilities by frame number instead of a network."""

    def __init__(self):
        self.emotions = list(EMOTIONS)
        self.finder = FaceFinder(ServeSettings())
        self.faces_per_frame = []

    def probabilities(self, crops):
        p = scripted(HAPPY if len(self.faces_per_frame) < SWITCH else SAD)
        self.faces_per_frame.append(len(crops))
        return np.tile(p, (len(crops), 1))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 320x240, 10 fps clip: one face moving right 4 px per frame; its true boxes."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    (crop,) = detectable_crops(1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    boxes = []
    for frame in range(FRAMES):
        canvas, _ = canvas_with_faces([], size=(320, 240))
        x, y, side = 20 + 4 * frame, 60, 120
        canvas[y : y + side, x : x + side] = cv2.cvtColor(
            cv2.resize(crop, (side, side)), cv2.COLOR_GRAY2BGR
        )
        writer.write(canvas)
        boxes.append((x, y, side, side))
    writer.release()
    return path, boxes


def test_video_faces_are_tracked_smoothed_and_windowed(clip, tmp_path):
    path, true_boxes = clip
    settings = PredictSettings(ema_alpha=0.3, window=5, full_scan_every=7)
    classifier = ScriptedClassifier()
    records = list(predict_video(classifier, path, settings, annotate_dir=tmp_path))
    assert classifier.faces_per_frame == [1] * FRAMES, (
        "the clip's face must be found in every frame"
    )
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [r["time_s"] for r in records] == [round(i / 10.0, 3) for i in range(FRAMES)]
    faces = [r["faces"][0] for r in records]
    assert {f["track"] for f in faces} == {0}, "one moving face is one track"
    assert all(iou(f["box"], b) > 0.6 for f, b in zip(faces, true_boxes))

    smoothed = scripted(HAPPY)  # the reference moving average, computed independently
    for frame, face in enumerate(faces):
        if frame:
            smoothed = 0.3 * scripted(HAPPY if frame < SWITCH else SAD) + 0.7 * smoothed
        np.testing.assert_allclose(list(face["probabilities"].values()), smoothed, atol=1e-4)
    # The smoothed top emotion turns after 0.7^k < 1/2 (k = 2 frames); the window of 5 after
    # 3 of its frames are sad (frame 14).
    assert [f["emotion"] for f in faces].index("sad") == SWITCH + 1
    assert [f["dominant"] for f in faces].index("sad") == SWITCH + 2
    assert all(f["dominant"] == "sad" for f in faces[SWITCH + 2 :])

    annotated = cv2.VideoCapture(str(tmp_path / "clip.annotated.avi"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    assert not list(tmp_path.glob(".*partial*")), "no partial file left behind"


def test_tracker_gives_new_faces_new_ids_and_forgets_lost_ones():
    tracker = FaceTracker(list(EMOTIONS), PredictSettings(max_missed=1, window=3))
    p = np.tile(scripted(HAPPY), (2, 1))
    first = tracker.update(np.array([[0, 0, 50, 50], [200, 0, 50, 50]]), p)
    moved = tracker.update(np.array([[205, 0, 50, 50], [5, 0, 50, 50]]), p)  # order swapped
    assert [f.track for f in first] == [0, 1] and [f.track for f in moved] == [1, 0]
    tracker.update(np.zeros((0, 4)), p[:0])  # missed once: kept
    assert tracker.update(np.array([[5, 0, 50, 50]]), p[:1])[0].track == 0
    tracker.update(np.zeros((0, 4)), p[:0])
    tracker.update(np.zeros((0, 4)), p[:0])  # missed twice: forgotten
    assert tracker.update(np.array([[5, 0, 50, 50]]), p[:1])[0].track == 2


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    path = tiny_keras_model(folder)
    (folder / "run.json").write_text(json.dumps({"emotions": list(EMOTIONS)}))
    return path


def test_cli_predicts_a_folder_of_images_to_csv_and_json(keras_model, tmp_path):
    """A bad file, or one without a face, is reported and the others go on; the exit status
    and the summary count the failures."""
    crops = detectable_crops(3)
    images = tmp_path / "photos"
    (images / "nested").mkdir(parents=True)
    (images / "one.png").write_bytes(png(canvas_with_faces(crops[:1])[0]))
    (images / "nested" / "three.jpg").write_bytes(
        cv2.imencode(".jpg", canvas_with_faces(crops, size=(720, 300))[0])[1].tobytes()
    )
    (images / "empty.png").write_bytes(png(canvas_with_faces([])[0]))
    (images / "broken.png").write_bytes(b"not a png")
    (images / "sliver.png").write_bytes(png(np.zeros((1, 20000), np.uint8)))  # no face, no crash
    params = write_params_for(tmp_path)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "predict",
            str(images),
            "-m",
            str(keras_model),
            "-o",
            str(tmp_path / "faces.csv"),
            "--annotate",
            str(tmp_path / "annotated"),
            "-p",
            str(params),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "skipped " in result.stderr and "broken.png: not an image" in result.stderr
    assert "empty.png: no face found" in result.stderr
    assert "emoflow predict: 4 faces in 2 of 5 images; 3 of 5 images failed" in result.stderr
    table = pd.read_csv(tmp_path / "faces.csv")
    assert table["source"].map(lambda s: s.rsplit("/", 1)[-1]).tolist() == ["three.jpg"] * 3 + [
        "one.png"
    ]
    assert list(table.columns) == ["source", "x", "y", "w", "h", "face_score", *EMOTIONS, "emotion"]
    assert (tmp_path / "annotated" / "nested" / "three.jpg").is_file()
    assert (tmp_path / "annotated" / "empty.png").is_file()

    as_json = runner.invoke(
        app,
        [
            "predict",
            str(images / "one.png"),
            "-m",
            str(keras_model),
            "-o",
            str(tmp_path / "faces.json"),
            "-p",
            str(params),
        ],
    )
    assert as_json.exit_code == 0, as_json.output
    (record,) = json.loads((tmp_path / "faces.json").read_text())
    assert record["emotion"] in EMOTIONS and record["w"] >= 48


def test_cli_summary_as_json_and_images_without_faces_allowed(keras_model, tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    (images / "one.png").write_bytes(png(canvas_with_faces(detectable_crops(1))[0]))
    (images / "empty.png").write_bytes(png(canvas_with_faces([])[0]))
    (images / "broken.png").write_bytes(b"not a png")
    common = ["predict", str(images), "-m", str(keras_model), "-p", str(write_params_for(tmp_path))]
    out = tmp_path / "faces.csv"

    result = CliRunner().invoke(app, [*common, "-o", str(out), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)  # the predictions went to a file: stdout is free
    assert (summary["inputs"], summary["predicted"], summary["faces"]) == (3, 1, 1)
    broken, empty = summary["failed"]  # in the order of the files
    assert (
        "broken.png: not an image" in broken and empty == f"{images / 'empty.png'}: no face found"
    )
    assert summary["out"] == str(out) and "skipped" not in result.stderr

    allowed = CliRunner().invoke(app, [*common, "-o", str(out), "--allow-no-face"])
    assert allowed.exit_code == 1, "the broken file still fails"
    assert "1 of 3 images failed" in allowed.stderr and "empty.png" not in allowed.stderr

    (images / "broken.png").unlink()
    to_stdout = CliRunner().invoke(app, [*common, "--allow-no-face", "--json"])
    assert to_stdout.exit_code == 0, to_stdout.output
    assert len(pd.read_csv(io.StringIO(to_stdout.stdout))) == 1, "stdout carries the table"
    assert json.loads(to_stdout.stderr.splitlines()[-1])["failed"] == []  # after the progress


def test_cli_uses_the_project_of_its_params_file_from_another_folder(tmp_path, monkeypatch):
    """The relative sqlite store of params.yaml is the project's: nothing is made in the
    working folder, and MLFLOW_TRACKING_URI still wins."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    register_tiny_model(project, f"sqlite:///{project / 'mlflow.db'}")
    params = write_params(project, {"predict": {"model": "models:/emoflow-test@champion"}})
    (elsewhere / "photo.png").write_bytes(png(canvas_with_faces(detectable_crops(1))[0]))
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    command = ["predict", "photo.png", "-o", "faces.csv", "-p", str(params)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(elsewhere / "faces.csv")) == 1
    assert sorted(p.name for p in elsewhere.iterdir()) == ["faces.csv", "photo.png"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other.db")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1
    assert f"MLflow store sqlite:///{elsewhere / 'other.db'}: no such file" in result.stderr
    assert not (elsewhere / "other.db").exists()


def test_cli_writes_video_predictions_as_json_lines(keras_model, clip, tmp_path):
    path, _ = clip
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(path),
            "-m",
            str(keras_model),
            "--max-frames",
            "10",
            "-p",
            str(write_params_for(tmp_path)),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["frame"] for line in lines] == list(range(10))
    assert all(len(line["faces"]) == 1 and line["faces"][0]["track"] == 0 for line in lines)
    assert "emoflow predict: 10 frames (10 faces) from 1 video; wrote stdout" in result.stderr


def test_a_video_that_cannot_be_read_fails_after_the_others(keras_model, clip, tmp_path):
    path, _ = clip
    bogus = tmp_path / "bogus.avi"
    bogus.write_bytes(b"no video here")
    out = tmp_path / "frames.jsonl"
    params = str(write_params_for(tmp_path))
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(bogus),
            str(path),
            "-m",
            str(keras_model),
            "--max-frames",
            "3",
            "-o",
            str(out),
            "-p",
            params,
        ],
    )
    assert result.exit_code == 1, result.output
    assert "bogus.avi: OpenCV cannot open this video" in result.stderr
    assert "3 frames (3 faces) from 2 videos; 1 of 2 videos failed" in result.stderr
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["photo.png", "clip.avi"], "give images and videos (or a webcam) in separate runs"),
        (["clip.avi", "-o", "out.csv"], "video predictions are JSON lines, use a .jsonl file"),
        (["photo.png", "-o", "out.txt"], "image predictions are a table, use a .csv or .json file"),
        (["photo.png", "--mode", "guess"], "mode must be detect or faces"),
        ([], "nothing to predict"),
    ],
)
def test_cli_misuse_is_one_clear_message(keras_model, tmp_path, arguments, message):
    result = CliRunner().invoke(
        app, ["predict", *arguments, "-m", str(keras_model), "-p", str(write_params_for(tmp_path))]
    )
    assert result.exit_code == 1 and message in result.stderr


def test_cli_names_a_model_it_cannot_find(tmp_path):
    (tmp_path / "x.png").write_bytes(png(canvas_with_faces([])[0]))
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(tmp_path / "x.png"),
            "-m",
            str(tmp_path / "nope"),
            "-p",
            str(write_params_for(tmp_path)),
        ],
    )
    assert (
        result.exit_code == 1
        and "nope: not a registry URI, an MLflow model folder or a .keras file" in result.stderr
    )


def test_unopenable_video_is_a_predict_error(tmp_path):
    bogus = tmp_path / "bogus.avi"
    bogus.write_bytes(b"no video here")
    with pytest.raises(PredictError, match="bogus.avi: OpenCV cannot open this video"):
        list(predict_video(ScriptedClassifier(), bogus, PredictSettings()))


def test_plan_refuses_to_mix_images_and_a_webcam(tmp_path):
    with pytest.raises(PredictError, match="separate runs"):
        plan([tmp_path / "a.png"], webcam=0)


def test_plan_names_a_missing_input_and_an_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.jpg: no such file or folder"):
        plan([tmp_path / "nothere.jpg"])
    with pytest.raises(FileNotFoundError, match="gone.mp4: no such file"):
        plan([tmp_path / "gone.mp4"])
    with pytest.raises(PredictError, match="no image files in"):
        plan([tmp_path])
