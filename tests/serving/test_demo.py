"""The demo page's server, called as the page calls it (no browser: test_demo_page.py has one)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from emoflow.components.provenance import SYNTHETIC_WARNING
from emoflow.components.serving.demo import ModelShelf, create_app
from emoflow.components.settings import MlflowSettings, ServeSettings
from tests.consumers import EMOTIONS, canvas_with_faces, detectable_crops, png
from tests.serving.demo_models import CARD, NAME, register_sample_trained


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    first = register_sample_trained(folder, uri)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        shelf = ModelShelf(first, MlflowSettings(tracking_uri=uri), ServeSettings())
        with TestClient(create_app(shelf)) as test_client:
            yield test_client


def test_the_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="photo"' in page.text and "<script>" in page.text


def test_the_models_on_offer_are_the_first_and_the_registry(client):
    offered = client.get("/api/models").json()
    assert offered == {
        "first": f"models:/{NAME}@champion",
        "models": [offered["first"], f"models:/{NAME}/1"],
    }


def test_a_sample_trained_model_is_shown_with_its_warning_and_card(client):
    facts = client.get("/api/model", params={"uri": f"models:/{NAME}/1"}).json()
    assert facts["training_data"] == "synthetic-sample" and facts["warning"] == SYNTHETIC_WARNING
    assert facts["card"] == CARD and facts["version"] == "1"
    assert facts["emotions"] == list(EMOTIONS) and facts["detector"] == "haar"


@pytest.mark.parametrize("uri", ["/etc", "models:/other@champion", "../mlflow.db"])
def test_only_models_on_offer_are_opened(client, uri):
    response = client.get("/api/model", params={"uri": uri})
    assert (
        response.status_code == 404 and "not a model this page offers" in response.json()["detail"]
    )


def test_a_photo_gives_its_faces(client):
    image, placed = canvas_with_faces(detectable_crops(2), size=(640, 300))
    response = client.post(
        "/api/predict", params={"uri": f"models:/{NAME}@champion"}, content=png(image)
    )
    assert response.status_code == 200, response.text
    found = response.json()["faces"]
    assert len(found) == len(placed)
    for face in found:
        assert face["emotion"] in EMOTIONS and face["face_score"] is None
        assert abs(sum(face["emotions"].values()) - 1) < 1e-5


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"GIF89a but not really", 400, "image 0: not an image"),
        (b"", 400, "no photo"),
        (b"\0" * (10 * 2**20 + 1), 413, "over the limit of"),
    ],
)
def test_bad_uploads_are_refused_with_a_reason(client, body, status, message):
    response = client.post("/api/predict", params={"uri": f"models:/{NAME}@champion"}, content=body)
    assert response.status_code == status and message in response.json()["detail"]
