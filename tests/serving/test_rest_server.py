"""``emoflow serve``: MLflow's scoring app behind our body limit and request gate.

The limits are checked against a stand-in app (it records what reached it, and holds
requests until released), served by uvicorn on a thread over a real socket, so that what a
client sees on the wire is tested; the model is checked once, against MLflow's own app, and
the command once, as a process. Every server is stopped, passed or failed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import uvicorn

from emoflow.components.serving.rest_server import (
    RETRY_AFTER_S,
    RequestGate,
    RequestLimits,
    create_app,
)
from emoflow.components.settings import ServeSettings
from tests.conftest import ROOT
from tests.consumers import (
    canvas_with_faces,
    detectable_crops,
    load_registered,
    png,
    register_tiny_model,
)
from tests.processes import free_ports, log_tail, started

LIMIT = 1000


class HeldApp:
    """An ASGI app that answers a POST with its body's size once ``release`` is set, and a
    GET at once."""

    def __init__(self):
        self.bodies: list[int] = []
        self.release = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        answer = b"up"
        if scope["method"] == "POST":
            body = (await receive())["body"]
            self.bodies.append(len(body))
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            answer = str(len(body)).encode()
        length = (b"content-length", str(len(answer)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [length]})
        await send({"type": "http.response.body", "body": answer})


@contextlib.contextmanager
def on_a_thread(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, stopped on the way out."""
    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def held() -> Iterator[tuple[HeldApp, str]]:
    app = HeldApp()
    with on_a_thread(RequestLimits(app, LIMIT, RequestGate(capacity=LIMIT, queued=1), 10.0)) as url:
        try:
            yield app, url
        finally:
            app.release.set()  # let held requests end, so the server can stop


def raw_exchange(url: str, head: bytes, body_parts: list[bytes] = ()) -> bytes:
    """Send ``head`` then each part (a pause between), and read until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head)
        for part in body_parts:
            time.sleep(0.05)
            connection.sendall(part)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def test_a_declared_body_over_the_limit_is_413_before_any_of_it_is_sent(held):
    app, url = held
    head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT + 1}\r\n\r\n"
    answer = raw_exchange(url, head.encode())  # no body sent at all: the answer cannot wait
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert f"limit of {LIMIT} bytes".encode() in answer
    assert b"connection: close" in answer.lower()
    assert app.bodies == []


def test_a_streamed_body_is_413_once_past_the_limit_and_never_echoed(held):
    app, url = held
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (600, b"S" * 600)
    answer = raw_exchange(url, head, [chunk, chunk])  # 1200 bytes, no end: it is not awaited
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"SSS" not in answer
    assert app.bodies == []


def test_a_body_within_the_limit_reaches_the_app_whole(held):
    app, url = held
    app.release.set()
    assert requests.post(f"{url}/invocations", data=b"x" * LIMIT, timeout=10).text == str(LIMIT)
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    answer = raw_exchange(url, head + b"Connection: close\r\n\r\n", [b"3\r\nabc\r\n0\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"3")


def test_a_small_request_passes_a_waiting_large_one_and_past_the_queue_the_largest_is_503(held):
    app, url = held
    answers: dict[int, requests.Response] = {}

    def send(size: int) -> threading.Thread:
        def post() -> None:
            answers[size] = requests.post(f"{url}/invocations", data=b"x" * size, timeout=10)

        thread = threading.Thread(target=post)
        thread.start()
        time.sleep(0.3)  # in this order
        return thread

    threads = [send(600), send(900)]  # 600 + 900 > LIMIT: the second waits
    threads.append(send(950))  # a second waiting request: the larger is refused at once
    threads[-1].join(10)
    assert answers[950].status_code == 503
    assert answers[950].headers["Retry-After"] == str(RETRY_AFTER_S)
    assert "retry later" in answers[950].json()["message"]
    threads.append(send(20))  # fits beside the 600: goes before the waiting 900
    _until(lambda: app.bodies == [600, 20])
    assert requests.get(f"{url}/ping", timeout=10).text == "up"  # GETs pass a full gate
    app.release.set()
    for thread in threads:
        thread.join(10)
    assert {size: answers[size].text for size in (600, 900, 20)} == {
        600: "600",
        900: "900",
        20: "20",
    }
    assert app.bodies == [600, 20, 900]


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- The model, as MLflow serves it ---------------------------------------------------------


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, str, Path]:
    folder = tmp_path_factory.mktemp("rest")
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    return register_tiny_model(folder, tracking_uri), tracking_uri, folder


def _photo_request() -> dict:
    photo, _ = canvas_with_faces(detectable_crops(1))
    rows = [[base64.b64encode(png(photo)).decode()]]
    return {"dataframe_split": {"columns": ["image"], "data": rows}}


@pytest.mark.slow
def test_answers_are_mlflows_own(registered):
    from mlflow.pyfunc import scoring_server

    model_uri, tracking_uri, _ = registered
    model = load_registered(model_uri, tracking_uri)
    payload = _photo_request()
    answers = []
    for app in (scoring_server.init(model), create_app(model, ServeSettings())):
        with on_a_thread(app) as url:
            answer = requests.post(f"{url}/invocations", json=payload, timeout=60)
            answers.append((answer.status_code, answer.json(), requests.get(f"{url}/version").text))
    assert answers[0] == answers[1]
    assert answers[0][0] == 200 and answers[0][1]["predictions"], answers[0]


@pytest.mark.slow
def test_the_command_serves_the_registered_model(registered):
    model_uri, tracking_uri, folder = registered
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    command = ["emoflow", "serve", "-m", model_uri, "--port", str(port)]
    command += ["--params", str(ROOT / "params.yaml")]
    with started({"serve": command}, folder, {"serve": env}, folder / "logs") as processes:
        url = f"http://127.0.0.1:{port}"
        _until(lambda: _answers(url, processes["serve"], folder), timeout=180)
        answer = requests.post(f"{url}/invocations", json=_photo_request(), timeout=60)
        assert answer.status_code == 200, answer.text
        limit = ServeSettings().max_request_bytes
        head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: {limit + 1}\r\n\r\n"
        assert raw_exchange(url, head.encode()).startswith(b"HTTP/1.1 413")


def _answers(url: str, process, folder: Path) -> bool:
    assert process.poll() is None, log_tail(folder / "logs", "serve")
    with contextlib.suppress(requests.ConnectionError):
        return requests.get(f"{url}/ping", timeout=2).status_code == 200
    return False
