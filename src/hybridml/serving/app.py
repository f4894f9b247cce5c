"""The lean ASGI inference app: KServe V1/V2 REST routes, health, metadata, metrics and feedback for one model."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, generate_latest

from hybridml import __version__
from hybridml.errors import HybridmlError, InvalidInputError, NotFoundError, PayloadTooLargeError
from hybridml.serving import protocol
from hybridml.serving.auth import ControlAuth
from hybridml.serving.metrics import ServingMetrics
from hybridml.serving.payload_log import JsonLinesLog, check_request_id, feedback_records, payload_record
from hybridml.serving.predictor import BundlePredictor

log = logging.getLogger("hybridml.serving")

HEADER_MODEL = "x-hybridml-model"
HEADER_VERSION = "x-hybridml-version"
HEADER_VARIANT = "x-hybridml-variant"
HEADER_REQUEST_ID = "x-request-id"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
JSON = b"application/json"
_V2_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
_V1_MODEL = re.compile(r"^/v1/models/([^/:]+)(:predict)?$")
# Request ids only have to be unique, not secret: a Mersenne Twister seeded from os.urandom avoids the getrandom
# system call uuid.uuid4() makes on every request. The ids keep the UUID4 form (32 hex digits, version 4).
_IDS = random.Random()  # noqa: S311
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Response:
    """An HTTP answer: status, body and extra headers (lower-case names)."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: bytes = JSON


def new_request_id() -> str:
    """A fresh request id: a random version-4 UUID as 32 lower-case hex digits (``uuid.uuid4().hex`` form)."""
    return "%032x" % (_IDS.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET)


def error_response(status: int, message: str) -> Response:
    """``{"error": message}`` with ``status``."""
    return Response(status, orjson.dumps({"error": message}))


def json_response(payload: Any, status: int = 200) -> Response:
    """``payload`` as JSON."""
    return Response(status, orjson.dumps(payload))


class Batcher:
    """Adaptive micro-batching: requests that arrive while the event loop is busy are scored in one call.

    A lone request is scored on the next loop turn (no added wait at low load); under concurrency every
    request parsed in the same turn joins the batch, up to ``max_rows`` rows. ``max_wait_s`` > 0 holds a
    batch that long at most, to gather more rows.

    Args:
        predictor: what scores the batches.
        max_rows: largest combined batch.
        max_wait_s: longest time the first request of a batch waits for others.
    """

    def __init__(self, predictor: BundlePredictor, *, max_rows: int = 256, max_wait_s: float = 0.0) -> None:
        self.predictor = predictor
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._rows = 0
        self._scheduled = False
        self.batches = 0

    async def scores(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of ``matrix``, possibly computed together with other requests' rows."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((matrix, future))
        self._rows += len(matrix)
        if self._rows >= self.max_rows:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            if self.max_wait_s > 0:
                loop.call_later(self.max_wait_s, self._flush)
            else:
                loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending, self._rows = self._pending, [], 0
        if not pending:
            return
        self.batches += 1
        try:
            if len(pending) == 1:
                results = [self.predictor.scores(pending[0][0])]
            else:
                combined = self.predictor.scores(np.concatenate([m for m, _ in pending]))
                bounds = np.cumsum([len(m) for m, _ in pending])[:-1]
                results = np.split(combined, bounds)
        except Exception as exc:  # a scoring failure belongs to every request of the batch
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(pending, results, strict=True):
            if not future.done():
                future.set_result(result)


class InferenceApp:
    """Serves one model version (one variant) over KServe V1 and V2 REST, as a raw ASGI application.

    Args:
        name: model name in the URLs.
        version: version reported in headers and V2 answers.
        predictor: the loaded, validating predictor.
        variant: variant label in headers and metrics (stable, canary, shadow).
        registry: Prometheus registry for this app's metrics (None: a fresh one).
        payload_log: where to append a JSON line per scored request (None: no payload log).
        feedback_log: where ``/feedback`` appends labels (None: the endpoint answers 404).
        max_body_bytes: larger request bodies get 413 without being read whole.
        batcher: micro-batcher to score through (None: score each request directly).
        control_auth: who may post ``/feedback`` on this port (default: loopback callers only).
    """

    def __init__(
        self,
        name: str,
        version: str,
        predictor: BundlePredictor,
        *,
        variant: str = "stable",
        registry: CollectorRegistry | None = None,
        payload_log: JsonLinesLog | None = None,
        feedback_log: JsonLinesLog | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        batcher: Batcher | None = None,
        control_auth: ControlAuth | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.variant = variant
        self.predictor = predictor
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ServingMetrics(self.registry, name, version, variant, predictor.schema, predictor.bundle.profile)
        self.payload_log = payload_log
        self.feedback_log = feedback_log
        self.max_body_bytes = max_body_bytes
        self.batcher = batcher
        self.control_auth = control_auth if control_auth is not None else ControlAuth()
        self.ready = True
        self.schema_hash = predictor.schema.schema_hash  # computed once: it goes into every payload record
        self._served_headers = [(HEADER_MODEL, name), (HEADER_VERSION, version), (HEADER_VARIANT, variant)]

    def set_variant(self, variant: str) -> None:
        """Take the role ``variant`` (a router promoted this worker): headers, metrics and payload records follow."""
        if variant == self.variant:
            return
        log.info("%s version %s is now %s (was %s)", self.name, self.version, variant, self.variant)
        self.variant = variant
        self._served_headers = [(HEADER_MODEL, self.name), (HEADER_VERSION, self.version), (HEADER_VARIANT, variant)]
        self.metrics.relabel(variant)

    # ----- ASGI -----

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: read the body (bounded), dispatch, answer."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        if path == "/feedback":
            denied = refusal(self.control_auth, scope, headers)
            if denied is not None:
                await send_response(send, denied)
                return
        body = await read_body(scope, receive, headers, self.max_body_bytes)
        if isinstance(body, Response):
            response = body
        else:
            response = await self.handle(scope["method"], path, headers, body)
        await send_response(send, response)

    async def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes, variant: str | None = None
    ) -> Response:
        """Answer one request; every client mistake becomes a 4xx JSON error, never a 500.

        Args:
            method: HTTP method.
            path: URL path.
            headers: lower-case request headers.
            body: request body.
            variant: the role a router chose this request for (None: this app's own); a change relabels the app.
        """
        if variant is not None and variant != self.variant:
            self.set_variant(variant)
        try:
            if method == "POST":
                if path.startswith("/v1/models/") and path.endswith(":predict"):
                    return await self._infer(path, headers, body, v2=False)
                if path.startswith("/v2/models/") and path.endswith("/infer"):
                    return await self._infer(path, headers, body, v2=True)
                if path == "/feedback":
                    return self._feedback(body)
                return self._not_found_or_405(method, path)
            if method in ("GET", "HEAD"):
                return self._get(path)
            return error_response(405, f"method {method} is not allowed")
        except HybridmlError as exc:
            return error_response(exc.http_status, exc.message)
        except Exception:  # a server bug: log it, answer 500 without internals
            log.exception("unexpected error on %s %s", method, path)
            return error_response(500, "internal server error")

    # ----- routes -----

    def _get(self, path: str) -> Response:
        if path in ("/", "/v2/health/live"):
            return json_response({"status": "alive"} if path == "/" else {"live": True})
        if path == "/v2/health/ready":
            return json_response({"ready": self.ready}, 200 if self.ready else 503)
        if path == "/v2":
            return json_response({"name": "hybridml", "version": __version__, "extensions": ["binary_tensor_data"]})
        if path == "/metrics":
            return Response(200, generate_latest(self.registry), content_type=b"text/plain; version=0.0.4")
        if path == "/v1/models":
            return json_response({"models": [self.name]})
        match = _V1_MODEL.match(path)
        if match and not match.group(2):
            self._check_model(match.group(1), None)
            return json_response({"name": self.name, "ready": self.ready}, 200 if self.ready else 503)
        match = _V2_MODEL.match(path)
        if match and match.group(3) != "/infer":
            self._check_model(match.group(1), match.group(2))
            if match.group(3) == "/ready":
                return json_response({"name": self.name, "ready": self.ready}, 200 if self.ready else 503)
            return json_response(protocol.model_metadata(self.name, [self.version], self.predictor))
        return self._not_found_or_405("GET", path)

    def _not_found_or_405(self, method: str, path: str) -> Response:
        if path.startswith("/admin/"):
            # Control lives on its own listener (hybridml.serving.control); here it does not exist at all.
            return error_response(404, f"no route {path[:200]}")
        post_only = path.endswith((":predict", "/infer")) or path == "/feedback"
        if post_only == (method != "POST"):
            return error_response(405, f"method {method} is not allowed on {path[:200]}")
        return error_response(404, f"no route {path[:200]}")

    def _check_model(self, name: str, version: str | None) -> None:
        if name != self.name:
            raise NotFoundError(f"Model with name {name[:100]} does not exist.")
        if version is not None and version != self.version:
            raise NotFoundError(f"Model {name} version {version[:100]} does not exist.")

    async def _infer(self, path: str, headers: dict[str, str], body: bytes, *, v2: bool) -> Response:
        if not v2:
            self._check_model(path[len("/v1/models/") : -len(":predict")], None)
            decode_v1 = lambda: protocol.v1_matrix(self.predictor, body)  # noqa: E731
            return await self.infer(headers, decode_v1, lambda scores, _: protocol.v1_response(scores))
        match = _V2_MODEL.match(path)
        if not match or match.group(3) != "/infer":
            return error_response(404, f"no route {path[:200]}")
        self._check_model(match.group(1), match.group(2))
        parsed: list[protocol.V2Request] = []  # the decoded request, which the V2 answer echoes (id, outputs)

        def decode() -> tuple[np.ndarray, protocol.Sent]:
            parsed.append(protocol.v2_request(body, headers))
            return protocol.v2_decode(self.predictor, parsed[0])

        def encode(scores: np.ndarray, request_id: str) -> tuple[bytes, dict[str, str]]:
            return protocol.v2_response(self.name, self.version, parsed[0], request_id, scores)

        return await self.infer(headers, decode, encode)

    async def infer(
        self,
        headers: dict[str, str],
        decode: Callable[[], tuple[np.ndarray, protocol.Sent]],
        encode: Callable[[np.ndarray, str], bytes | tuple[bytes, dict[str, str]]],
        content_type: bytes = JSON,
    ) -> Response:
        """Score one request of any wire format: the one path of timing, metrics and payload log.

        Args:
            headers: lower-case request headers (``x-request-id`` is honoured).
            decode: parses and validates the body into (model matrix, values as sent); raises HybridmlError.
            encode: the answer body for (scores, request id), or (body, extra headers); extra headers mean binary.
            content_type: the answer's content type when ``encode`` adds no headers.
        """
        start = time.perf_counter()
        raw_id = headers.get(HEADER_REQUEST_ID)
        request_id = check_request_id(raw_id) if raw_id is not None else new_request_id()
        variant = self.variant  # the role this request came in: a promote while it waits in a batch keeps it
        try:
            matrix, sent = decode()
            parsed = time.perf_counter()
            scores = await self.batcher.scores(matrix) if self.batcher else self.predictor.scores(matrix)
            predicted = time.perf_counter()
            encoded = encode(scores, request_id)
            answer, extra = (encoded, {}) if isinstance(encoded, bytes) else encoded
        except HybridmlError as exc:
            self.metrics.request(exc.http_status)
            return error_response(exc.http_status, exc.message)
        except Exception:
            # Counted here, answered by handle(): without a router in front, this counter is the only place an
            # error-rate alert can see a scoring failure.
            self.metrics.request(500)
            raise
        done = time.perf_counter()
        self.metrics.request(200)
        self.metrics.stages((parsed - start, predicted - parsed, done - predicted, done - start))
        self.metrics.scored(matrix, scores)
        unknown = self.predictor.unknown_categories(matrix, sent)
        if unknown:
            self.metrics.unknown_categories(unknown)
        if self.payload_log is not None:
            self._log_payload(self.payload_log, request_id, variant, matrix, sent, unknown, scores)
        response = Response(200, answer, [*self._served_headers, (HEADER_REQUEST_ID, request_id), *extra.items()])
        response.content_type = b"application/octet-stream" if extra else content_type
        return response

    def _log_payload(
        self,
        payload_log: JsonLinesLog,
        request_id: str,
        variant: str,
        matrix: np.ndarray,
        sent: protocol.Sent,
        unknown: Sequence[tuple[int, int]],
        scores: np.ndarray,
    ) -> None:
        n = len(matrix)
        if unknown:
            names = self.predictor.names
            flags: list[list[str]] = [[] for _ in range(n)]
            for row, feature in unknown:
                flags[row].append(names[feature])
        else:
            flags = [[]] * n  # one shared empty list: serialised n times, built once
        record = payload_record(
            request_id, self.name, self.version, variant, self.schema_hash, sent.records(), flags, scores
        )
        payload_log.write(record)

    def accept_feedback(self, body: bytes) -> int:
        """Append the labels of a ``/feedback`` body to the feedback log; returns how many.

        Raises:
            NotFoundError: this server has no feedback log.
            InvalidInputError: a malformed body or label.
        """
        if self.feedback_log is None:
            raise NotFoundError("feedback is not enabled on this server (start it with a feedback log)")
        records = feedback_records(protocol.loads(body), self.predictor.schema.classes)
        for record in records:
            self.feedback_log.write({**record, "model": self.name})
        return len(records)

    def _feedback(self, body: bytes) -> Response:
        return json_response({"accepted": self.accept_feedback(body)})


async def read_body(scope: Scope, receive: Receive, headers: dict[str, str], limit: int) -> bytes | Response:
    """The request body, or a 413/400 Response if it is over ``limit`` bytes or its length header is bad."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return error_response(400, "content-length must be a non-negative integer")
        if int(declared) > limit:
            return error_response(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return error_response(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_response(send: Send, response: Response) -> None:
    """Send ``response`` over ASGI."""
    headers = [(b"content-type", response.content_type), (b"content-length", str(len(response.body)).encode())]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def refusal(auth: ControlAuth, scope: Scope, headers: dict[str, str], *, local_socket: bool = False) -> Response | None:
    """None when ``auth`` allows the control call in ``scope``, else its 401/403 answer (the body is not read)."""
    status = auth.decide(scope.get("client"), headers.get("authorization"), local_socket=local_socket)
    if status is None:
        return None
    if status == 401:
        response = error_response(401, "control calls from outside loopback need 'Authorization: Bearer <token>'")
        response.headers.append(("www-authenticate", "Bearer"))
        return response
    return error_response(403, "the bearer token is not accepted")


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer ASGI lifespan startup and shutdown (for apps without background tasks)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def check_percent(value: int, what: str = "canary percent") -> int:
    """``value`` if it is an integer in [0, 100]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise InvalidInputError(f"{what} must be an integer in [0, 100], got {value!r}")
    return value


__all__ = ["Batcher", "InferenceApp", "PayloadTooLargeError", "Response", "check_percent", "refusal"]
