"""``emoflow serve``: MLflow's own scoring server for the registry model, behind limits of ours.

MLflow's scoring app (``mlflow.pyfunc.scoring_server.init``) reads a request's whole body
and parses its JSON on a worker thread before the model sees it, whatever the model's own
limits: under ``mlflow models serve`` a 70 MB body cost ~1 GB and 20 s, and clients looping
13.8 MB uploads slowed an ordinary photo to 4.6 s (``bench/README.md``, serve_attack).
:class:`RequestLimits` runs in front of that app, before any of it:

- a body over ``serve.max_request_bytes`` is refused with 413, by its ``Content-Length`` at
  once, else as soon as the bytes streamed in pass the limit; the connection is closed rather
  than the rest read, and the answer quotes nothing of the request;
- the bodies being read, parsed and predicted total at most ``serve.parallel_request_bytes``
  (:class:`RequestGate`); the smallest waiting body goes next, so one photo is not queued
  behind 40-megapixel uploads; past ``serve.queued_requests`` waiting, the largest is
  refused with 503 and ``Retry-After``, before its body is read, and the connection closed.
  GET requests (``/ping``, ``/health``, ``/version``) pass untouched: health checks answer
  under load.

The REST protocol, its routes and its answers are MLflow's: the app is MLflow's, around the
pyfunc ``mlflow.pyfunc.load_model`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emoflow.components.errors import EmoFlowError
from emoflow.components.settings import MlflowSettings, ServeSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER_S = 1
_UNGATED = ("GET", "HEAD")  # bodiless, and cheap: /ping, /health, /version
_GONE = object()  # a body whose client left before its end


class NotAnEmoFlowModel(EmoFlowError):
    """The URI loads, but as some other pyfunc: its limits and answers would not be ours."""


@dataclass(order=True)
class _Waiter:
    key: tuple[int, int]  # (body bytes, arrival): the smallest, then the oldest, goes next
    turn: asyncio.Future = field(compare=False)  # True: its turn; False: refused

    @property
    def cost(self) -> int:
        return self.key[0]


class RequestGate:
    """Turns at being read, parsed and predicted, by body size: the bodies in progress total
    at most ``capacity`` bytes (one larger body runs alone), since MLflow's parsing costs
    memory and CPU in proportion to the body (a 32 MB JSON array of pixels: ~450 MB, 7-16 s).

    The smallest waiting body goes next, whenever it fits: an ordinary photo passes uploads
    of 40-megapixel images. The policy of the model's ``ImageGate``, on the event loop: past
    ``queued`` requests waiting, the largest of them (the newcomer, if larger) is refused.
    """

    def __init__(self, capacity: int, queued: int):
        self._capacity = capacity
        self._free = capacity
        self._queued = queued
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, body_bytes: int, patience: float) -> AsyncIterator[bool]:
        """Whether the request got its turn, held for the block: False when it was refused,
        or waited ``patience`` seconds."""
        cost = min(body_bytes, self._capacity)
        admitted = await self._enter(cost, patience)
        try:
            yield admitted
        finally:
            if admitted:
                self._leave(cost)

    async def _enter(self, cost: int, patience: float) -> bool:
        waiter = _Waiter((cost, next(self._arrivals)), asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        self._admit()
        if len(self._waiting) > self._queued:
            largest = max(self._waiting)
            self._waiting.remove(largest)
            largest.turn.set_result(False)
        if waiter.turn.done():
            return waiter.turn.result()
        try:
            async with asyncio.timeout(patience):
                return await asyncio.shield(waiter.turn)
        except TimeoutError:
            return self._withdraw(waiter)
        except asyncio.CancelledError:
            self._withdraw(waiter)
            raise

    def _admit(self) -> None:
        """Turns for the smallest waiting requests, while their bodies fit."""
        while self._waiting and (first := min(self._waiting)).cost <= self._free:
            self._waiting.remove(first)
            self._free -= first.cost
            first.turn.set_result(True)

    def _leave(self, cost: int) -> None:
        self._free += cost
        self._admit()

    def _withdraw(self, waiter: _Waiter) -> bool:
        """A waiter that gives up leaves the queue, passing on a turn handed to it meanwhile."""
        if not waiter.turn.done():
            self._waiting.remove(waiter)
            waiter.turn.cancel()
        elif waiter.turn.result():
            self._leave(waiter.cost)
        return False


class RequestLimits:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` would read the body first):
    the body limit and the :class:`RequestGate`, in front of ``app``.

    The body is read here, within the limit, and handed to ``app`` as one message: a server
    receiving a chunked body does not know its size before the end.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, gate: RequestGate, patience: float):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.gate = gate
        self.patience = patience

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _UNGATED:
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await self._too_large(send)
            return
        async with self.gate.turn(
            self.max_body_bytes if length is None else length, self.patience
        ) as admitted:
            if not admitted:
                busy = "the server is busy with other requests; retry later"
                await _refuse(send, 503, busy, [(b"retry-after", str(RETRY_AFTER_S).encode())])
                return
            body = await self._body(receive)
            if body is None:
                await self._too_large(send)
            elif body is not _GONE:
                await self.app(scope, _replay(body, receive), send)

    async def _body(self, receive: Receive) -> bytes | object | None:
        """The whole body; None once past the limit; ``_GONE`` when the client left."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _GONE
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        message = (
            f"request body over the limit of {self.max_body_bytes} bytes (serve.max_request_bytes)"
        )
        await _refuse(send, 413, message)


def _content_length(scope: Scope) -> int | None:
    """The declared body size; the HTTP server has refused a malformed one already."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value)
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the body read already, then the client's own messages (its
    disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


async def _refuse(
    send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """An error in MLflow's form (``error_code``, ``message``), so clients parse one shape;
    the connection is closed after it, the body left unread: uvicorn would otherwise read
    the rest to throw it away, in Python, on the event loop every request shares (clients
    looping refused 13.8 MB uploads slowed an ordinary request to 15 s)."""
    code = {413: "INVALID_PARAMETER_VALUE", 503: "TEMPORARILY_UNAVAILABLE"}[status]
    content = json.dumps({"error_code": code, "message": message}).encode()
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"connection", b"close"),
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": [*start_headers, *headers]}
    )
    await send({"type": "http.response.body", "body": content})


def create_app(model, settings: ServeSettings) -> RequestLimits:
    """MLflow's scoring app for ``model`` (a loaded pyfunc), behind ``settings``' limits."""
    from mlflow.pyfunc import scoring_server

    gate = RequestGate(settings.parallel_request_bytes, settings.queued_requests)
    return RequestLimits(
        scoring_server.init(model),
        settings.max_request_bytes,
        gate,
        settings.request_timeout_seconds,
    )


def load_pyfunc(model_uri: str, store: MlflowSettings):
    """The pyfunc MLflow's own server would serve, from a registry URI or a model folder; the
    registry is ``MLFLOW_TRACKING_URI``, else the settings' (as ``emoflow predict``)."""
    import mlflow

    from emoflow.components.mlflow_store import tracking_uri
    from emoflow.components.serving.image_model import EmotionClassifier

    uri = tracking_uri(store)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(model_uri)
    if not isinstance(model.unwrap_python_model(), EmotionClassifier):
        raise NotAnEmoFlowModel(f"{model_uri}: not an EmoFlow model")
    return model


def serve(
    model_uri: str, settings: ServeSettings, store: MlflowSettings, host: str, port: int
) -> None:
    """Serve the model on ``host:port`` until Ctrl-C (one process, one event loop: the limits
    are per process)."""
    import uvicorn

    app = create_app(load_pyfunc(model_uri, store), settings)
    print(f"EmoFlow REST: http://{host}:{port}/invocations  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
