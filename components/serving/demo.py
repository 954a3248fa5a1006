"""``emoflow demo``: a page on 127.0.0.1 to try a model on a photo or the webcam.

A person judging a model wants to see it on a face, not read a table: the page
(``demo_page.html``) takes a dropped photo, or webcam frames, draws each face's box with its
top emotion and shows every emotion's probability as a bar. It also says what the model was
trained on and, for a model trained on the built-in synthetic sample, warns that its answers
on real photos mean nothing; the registered version's model card is one click away.

The models on offer are the one named at start and every alias and version of the registry:
a client picks among those URIs and can never make the server open a path. Photos arrive as
bytes, checked by the model's own limits (``serve.max_image_bytes`` and the rest).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from mlflow.exceptions import MlflowException
from starlette.concurrency import run_in_threadpool

from emoflow.components.errors import EmoFlowError
from emoflow.components.provenance import SYNTHETIC, SYNTHETIC_WARNING, TRAINING_DATA_TAG
from emoflow.components.serving.image_model import EmotionClassifier
from emoflow.components.serving.recognizer import faces
from emoflow.components.settings import MlflowSettings, ServeSettings

PAGE = Path(__file__).with_name("demo_page.html")
HOST = "127.0.0.1"  # the page runs models on its visitors' photos: this machine only
VERSIONS_LISTED = 10  # per registered model, newest first, beside its aliases


@dataclass(frozen=True)
class ModelFacts:
    """What the page tells about a model before its answers."""

    uri: str
    emotions: list[str]
    detector: str
    training_data: str  # synthetic-sample, real or unknown
    warning: str | None  # for a model trained on the synthetic sample
    version: str | None  # the registered version, for a registry URI
    card: str | None  # that version's model card (its description)


class ModelShelf:
    """The models the page offers, each loaded on first use and kept."""

    def __init__(self, first: str, store: MlflowSettings, serve: ServeSettings):
        from emoflow.components.mlflow_store import tracking_uri

        self.first = first
        self._uri = tracking_uri(store)
        self._store, self._serve = store, serve
        self._loaded: dict[str, tuple[EmotionClassifier, ModelFacts]] = {}
        self._lock = threading.Lock()

    def choices(self) -> list[str]:
        """The first model, then every registered model's aliases and newest versions."""
        found = [self.first]
        if not _store_exists(self._uri):
            return found  # asking would create an empty sqlite store
        client = mlflow.MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
        try:
            registered = client.search_registered_models(max_results=100)
        except MlflowException:  # a folder model without a registry beside it
            return found
        for model in registered:
            found += [f"models:/{model.name}@{alias}" for alias in sorted(model.aliases)]
            versions = client.search_model_versions(f"name = '{model.name}'")
            newest = sorted((int(v.version) for v in versions), reverse=True)[:VERSIONS_LISTED]
            found += [f"models:/{model.name}/{v}" for v in newest]
        return list(dict.fromkeys(found))

    def get(self, uri: str) -> tuple[EmotionClassifier, ModelFacts]:
        """A model on offer, loaded once; any other URI is refused."""
        with self._lock:
            if uri not in self._loaded:
                if uri not in self.choices():
                    raise HTTPException(404, f"{uri}: not a model this page offers")
                self._loaded[uri] = self._load(uri)
            return self._loaded[uri]

    def _load(self, uri: str) -> tuple[EmotionClassifier, ModelFacts]:
        from emoflow.components.serving.predict import load_classifier

        classifier = load_classifier(uri, self._serve, self._store, self._uri)
        version = self._version(uri)
        kind = (version.tags.get(TRAINING_DATA_TAG) if version else None) or (
            classifier.training_data or {}
        ).get("kind", "unknown")
        facts = ModelFacts(
            uri=uri,
            emotions=classifier.emotions,
            detector=classifier.settings.detector,
            training_data=kind,
            warning=SYNTHETIC_WARNING if kind == SYNTHETIC else None,
            version=str(version.version) if version else None,
            card=(version.description or None) if version else None,
        )
        return classifier, facts

    def _version(self, uri: str):
        """The registered version a ``models:/`` URI names, else None."""
        if not uri.startswith("models:/"):
            return None
        client = mlflow.MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
        name, _, alias = uri.removeprefix("models:/").partition("@")
        if alias:
            return client.get_model_version_by_alias(name, alias)
        name, _, number = name.rpartition("/")
        return client.get_model_version(name, number)


def _store_exists(uri: str) -> bool:
    from emoflow.components.mlflow_store import SQLITE

    return not uri.startswith(SQLITE) or Path(uri.removeprefix(SQLITE)).is_file()


def create_app(shelf: ModelShelf) -> FastAPI:
    """The page and its three calls: the models on offer, one model's facts, a prediction."""
    app = FastAPI(title="EmoFlow demo", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/api/models")
    def models() -> dict:
        return {"first": shelf.first, "models": shelf.choices()}

    @app.get("/api/model")
    def model(uri: str) -> dict:
        return asdict(_loaded(shelf, uri)[1])

    @app.post("/api/predict")
    async def predict(request: Request, uri: str) -> dict:
        classifier, facts = await run_in_threadpool(_loaded, shelf, uri)
        photo = await _body(request, classifier.settings.max_image_bytes)
        table = await run_in_threadpool(_detect, classifier, photo)
        return {"model": facts.uri, "faces": faces(table, classifier.emotions)}

    return app


def _loaded(shelf: ModelShelf, uri: str) -> tuple[EmotionClassifier, ModelFacts]:
    try:
        return shelf.get(uri)
    except (EmoFlowError, FileNotFoundError, MlflowException) as err:
        raise HTTPException(404, f"{uri}: {err}") from None


async def _body(request: Request, limit: int) -> bytes:
    """The uploaded photo, read no further than the model's limit."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise HTTPException(413, f"a photo over the limit of {limit} bytes")
    if not received:
        raise HTTPException(400, "no photo: send the image file's bytes as the request body")
    return bytes(received)


def _detect(classifier: EmotionClassifier, photo: bytes):
    try:
        return classifier.predict(None, [photo], {"mode": "detect"})
    except MlflowException as err:  # the model's own 400: not an image, over a limit
        raise HTTPException(400, err.message) from None


def serve(first: str, serve: ServeSettings, store: MlflowSettings, port: int) -> None:
    """Run the page on 127.0.0.1:``port`` until Ctrl-C; the first model is loaded before."""
    import uvicorn

    shelf = ModelShelf(first, store, serve)
    shelf.get(first)  # a model that does not load fails here, not on the first photo
    print(f"EmoFlow demo: http://{HOST}:{port}/  (Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(shelf), host=HOST, port=port, log_level="warning")
