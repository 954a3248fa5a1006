"""``emoflow demo`` in a real browser: headless Chromium uploads photos and reads what the page
draws (boxes where the faces are, labels, emotion bars, the sample-trained warning).

Needs a headless browser (tests/browser.py), skipped without one. The server runs as
``emoflow demo`` does, in its own process group, stopped whatever the outcome.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from emoflow.flows.code_graph import PROJECT_ROOT
from tests.browser import headless_chromium, skip_without_browser, wait_for
from tests.consumers import (
    EMOTIONS,
    best_iou,
    canvas_with_faces,
    detectable_crops,
    png,
    write_params_for,
)
from tests.processes import free_ports, log_tail, started
from tests.serving.demo_models import register_sample_trained

pytestmark = pytest.mark.slow
STARTUP_SECONDS = 240  # TensorFlow and the model load first; slow on a loaded 2-core machine
ANSWER_SECONDS = 120


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Iterator[str]:
    """The demo server on a free loopback port, serving a sample-trained registered model."""
    skip_without_browser()
    folder = tmp_path_factory.mktemp("demo-page")
    params = write_params_for(folder)
    model = register_sample_trained(folder, f"sqlite:///{folder / 'mlflow.db'}")
    (port,) = free_ports(1)
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "emoflow.flows.cli", "demo", "-m", model, "--port", str(port)]
    logs = folder / "logs"
    with started(
        {"demo": [*command, "-p", str(params)]}, PROJECT_ROOT, {"demo": env}, logs
    ) as processes:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, processes["demo"], logs)
        yield url


def _wait_until_up(url: str, process, logs: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"emoflow demo exited with {process.returncode}\n{log_tail(logs, 'demo')}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/healthz", timeout=5).ok:
                return
        time.sleep(1)
    pytest.fail(f"emoflow demo did not answer in {STARTUP_SECONDS} s\n{log_tail(logs, 'demo')}")


@pytest.fixture(scope="module")
def browser(page):
    with headless_chromium() as driver:
        driver.get(page)
        _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-model"))
        yield driver


def _wait(driver, condition, seconds: float = ANSWER_SECONDS):
    return wait_for(driver, condition, seconds)


def _upload(driver, path: Path) -> str:
    """Choose ``path`` in the file input; the page's face count (or error) once answered."""
    driver.execute_script("delete document.body.dataset.faces;")
    driver.find_element("id", "photo").send_keys(str(path))

    def answered(d):
        faces = d.find_element("tag name", "body").get_attribute("data-faces")
        error = "error" in (d.find_element("id", "status").get_attribute("class") or "")
        return faces if faces is not None else ("error" if error else None)

    return _wait(driver, answered)


def test_the_page_says_what_the_model_was_trained_on(browser):
    assert browser.find_element("id", "training-data").text == (
        "EmoFlow's synthetic sample, not real faces"
    )
    warning = browser.find_element("id", "warning")
    assert warning.is_displayed() and "synthetic sample" in warning.text
    card = browser.find_element("id", "card-text").get_attribute("textContent")
    assert card.startswith("# Model card: emoflow-demo v1")
    assert browser.find_element("id", "emotions").text == ", ".join(EMOTIONS)
    options = [o.text for o in browser.find_elements("css selector", "#model option")]
    assert options == ["models:/emoflow-demo@champion", "models:/emoflow-demo/1"]


def test_an_uploaded_photo_gets_a_labelled_box_on_each_face(browser, tmp_path):
    image, placed = canvas_with_faces(detectable_crops(3), size=(720, 300))
    photo = tmp_path / "three faces.png"
    photo.write_bytes(png(image))
    assert _upload(browser, photo) == "3"
    picture = browser.find_element("id", "picture")
    scale = int(picture.get_attribute("naturalWidth")) / picture.rect["width"]
    boxes = browser.find_elements("css selector", "#boxes .face-box")
    drawn = []
    for box in boxes:
        left = (box.rect["x"] - picture.rect["x"]) * scale
        top = (box.rect["y"] - picture.rect["y"]) * scale
        drawn.append((left, top, box.rect["width"] * scale, box.rect["height"] * scale))
        label = box.find_element("class name", "face-label").text
        assert re.fullmatch(rf"\d ({'|'.join(EMOTIONS)}) \d+%", label), label
        assert label.split()[1] == box.get_attribute("data-emotion")
    assert all(best_iou(expected, drawn) > 0.6 for expected in placed), (placed, drawn)
    cards = browser.find_elements("css selector", "#faces .face")
    assert len(cards) == 3
    for card, box in zip(cards, boxes):
        bars = card.find_elements("class name", "bar")
        assert [b.get_attribute("data-emotion") for b in bars] == list(EMOTIONS)
        values = [int(b.find_element("class name", "value").text.rstrip("%")) for b in bars]
        top = card.find_element("css selector", ".bar.top").get_attribute("data-emotion")
        assert top == box.get_attribute("data-emotion") and values[EMOTIONS.index(top)] == max(
            values
        )
    assert browser.find_element("id", "status").text == "3 faces found."
    browser.save_screenshot(str(tmp_path / "demo.png"))


def test_a_photo_without_faces_and_a_broken_file_are_said_so(browser, tmp_path):
    empty, _ = canvas_with_faces([])
    photo = tmp_path / "empty.png"
    photo.write_bytes(png(empty))
    assert _upload(browser, photo) == "0"
    assert browser.find_element("id", "status").text == "No face found."
    assert not browser.find_elements("css selector", "#boxes .face-box")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    assert _upload(browser, broken) == "error"
    assert "not an image" in browser.find_element("id", "status").text
