"""REST: ``mlflow models serve`` on the registered model, round-tripping real images.

The server is a subprocess in its own process group, killed whatever the test's outcome,
so no server outlives the test.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from emoflow.components.settings import ServeSettings
from tests.consumers import (
    EMOTIONS,
    best_iou,
    canvas_with_faces,
    detectable_crops,
    png,
    register_tiny_model,
)

pytestmark = pytest.mark.slow
MAX_IMAGE_BYTES = 200_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, log: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    command = [
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    with log.open("w") as output:
        server = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, server, log)
        yield url
    finally:
        _stop(server)


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"the model server exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            )
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(
        f"the model server did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}"
    )


def _stop(server: subprocess.Popen) -> None:
    """The server's whole process group (mlflow starts uvicorn as a child): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # children that outlived the leader


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("serving")
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    model_uri = register_tiny_model(
        folder, tracking_uri, serve=ServeSettings(max_image_bytes=MAX_IMAGE_BYTES)
    )
    with model_server(model_uri, tracking_uri, folder / "server.log") as url:
        yield url


def invoke(url: str, payload: dict) -> requests.Response:
    return requests.post(f"{url}/invocations", json=payload, timeout=60)


def test_an_image_round_trips_through_rest(served):
    crops = detectable_crops(3)
    one, (one_box,) = canvas_with_faces(crops[:1])
    three, three_boxes = canvas_with_faces(crops, size=(720, 300))
    images = [base64.b64encode(png(image)).decode() for image in (one, three)]
    response = invoke(
        served, {"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}
    )
    assert response.status_code == 200, response.text
    assert "NaN" not in response.text  # strict JSON: Haar's missing face scores are null
    rows = response.json()["predictions"]
    assert [row["image"] for row in rows] == [0, 1, 1, 1]
    assert [row["source"] for row in rows] == ["image 0"] + ["image 1"] * 3
    assert all(row["face_score"] is None for row in rows)
    for row, expected in zip(rows, [one_box, *three_boxes]):
        assert best_iou(expected, [[row[k] for k in ("x", "y", "w", "h")]]) > 0.6
        assert abs(sum(row[e] for e in EMOTIONS) - 1.0) < 1e-4 and row["emotion"] in EMOTIONS
    # The tensor form, with params: the same faces as face crops.
    faces = np.stack(crops).tolist()
    response = invoke(served, {"inputs": faces, "params": {"mode": "faces"}})
    assert response.status_code == 200, response.text
    assert [list(row) for row in response.json()["predictions"]] == [list(EMOTIONS)] * 3


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {
                "dataframe_split": {
                    "columns": ["image"],
                    "data": [[base64.b64encode(b"%PDF-1.7").decode()]],
                }
            },
            "image 0: not an image",
        ),
        (
            {"dataframe_split": {"columns": ["image"], "data": [["***"]]}},
            "image 0: a string must be a base64-encoded image",
        ),
        (
            {"inputs": {"image": ["x"]}, "params": {"mode": "everything"}},
            "params.mode must be one of",
        ),
        ({"something": 1}, "dataframe_split"),
        (
            {"inputs": {"image": ["x"]}, "params": {"mdoe": "faces"}},
            "unknown params mdoe: this model takes mode, channel_order",
        ),
        ({"inputs": np.zeros((65, 48, 48), np.uint8).tolist()}, "65 face crops in one call"),
        (
            {
                "inputs": {
                    "image": [base64.b64encode(png(np.zeros((6600, 6000), np.uint8))).decode()] * 3
                }
            },
            "image 2: brings the images to 118800000 pixels, over the limit of 100000000",
        ),
    ],
)
def test_bad_payloads_are_400_with_a_reason(served, payload, message):
    response = invoke(served, payload)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_an_error_names_the_image_and_quotes_no_data_no_trace_no_path(served):
    marker = base64.b64encode(b"SECRET-FACE" * 300).decode()  # base64, but of no image
    response = invoke(served, {"dataframe_split": {"columns": ["image"], "data": [[marker]]}})
    assert response.status_code == 400, response.text
    assert (
        response.json()["message"]
        == "image 0: not an image in a known format (PNG, JPEG, BMP, WebP, TIFF): 3300 bytes"
    )
    assert marker[:40] not in response.text and "Traceback" not in response.text
    assert "stack_trace" not in response.json() and str(Path.cwd()) not in response.text


def test_slivers_are_images_without_faces(served):
    sliver = base64.b64encode(png(np.zeros((1, 20000), np.uint8))).decode()
    response = invoke(served, {"inputs": {"image": [sliver]}})
    assert response.status_code == 200 and response.json()["predictions"] == []
    response = invoke(served, {"inputs": np.zeros((1, 1, 5000), np.uint8).tolist()})
    assert response.status_code == 200 and response.json()["predictions"] == []


def test_an_oversized_image_is_refused_and_the_server_carries_on(served):
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    encoded = png(noise)
    assert len(encoded) > MAX_IMAGE_BYTES
    response = invoke(
        served,
        {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(encoded).decode()]]}},
    )
    assert response.status_code == 400 and "over the limit of 200000" in response.json()["message"]
    not_json = requests.post(
        f"{served}/invocations",
        data=b"\x00\xff",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert not_json.status_code == 400
    assert requests.get(f"{served}/ping", timeout=5).status_code == 200


def test_a_client_given_file_path_is_never_read_by_the_server(served, tmp_path):
    """In-process a string may name a file; from a REST client it is only ever base64."""
    image, _ = canvas_with_faces(detectable_crops(1))
    path = tmp_path / "face.png"
    path.write_bytes(png(image))  # a readable image on the server's own disk
    payloads = [
        {"dataframe_split": {"columns": ["image"], "data": [[str(path)]]}},
        {"inputs": {"image": [str(path)]}},
        {"inputs": [str(path)]},
    ]
    for payload in payloads:
        response = invoke(served, payload)
        assert response.status_code == 400, response.text
        # taken as base64, not opened (MLflow itself may quote the request in its message)
        assert "image 0: a string must be a base64-encoded image" in response.json()["message"]
