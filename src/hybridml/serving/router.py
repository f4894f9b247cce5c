"""Traffic router: stable, canary and shadow variants in separate worker processes behind one KServe endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import subprocess
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError
from hybridml.serving.app import (
    DEFAULT_MAX_BODY_BYTES,
    HEADER_MODEL,
    HEADER_REQUEST_ID,
    HEADER_VARIANT,
    HEADER_VERSION,
    Receive,
    Response,
    Scope,
    Send,
    check_percent,
    error_response,
    json_response,
    read_body,
    send_response,
)
from hybridml.serving.ipc import read_frame, write_frame
from hybridml.serving.metrics import LATENCY_BUCKETS
from hybridml.serving.payload_log import JsonLinesLog, check_request_id, feedback_records

log = logging.getLogger("hybridml.serving.router")

STABLE, CANARY, SHADOW = "stable", "canary", "shadow"
STICKY_HEADER = "x-hybridml-key"
MAX_SHADOW_IN_FLIGHT = 64
_BUCKETS = 10_000
_FORWARDED = ("content-type", HEADER_REQUEST_ID, "inference-header-content-length")


@dataclass
class Worker:
    """One variant's worker process and its idle connections."""

    variant: str
    version: str
    socket_path: Path
    process: subprocess.Popen[bytes] | None = None
    alive: bool = True
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        """Process id of the worker (None for one not started here)."""
        return self.process.pid if self.process is not None else None


class WorkerDiedError(Exception):
    """The worker's connection broke mid-request: it crashed or was killed."""


class _Federated(Collector):
    """Re-exports metric families parsed from the workers' /metrics texts."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._texts = texts

    def collect(self) -> Any:
        families: dict[str, Any] = {}
        for text in self._texts:
            for family in text_string_to_metric_families(text):
                if family.name in families:
                    families[family.name].samples.extend(family.samples)
                else:
                    families[family.name] = family
        yield from families.values()


def bucket(key: str) -> int:
    """Sticky bucket of a request key in [0, 10000): the same key always lands in the same variant."""
    return zlib.crc32(key.encode("utf-8", "replace")) % _BUCKETS


class RouterApp:
    """ASGI app splitting inference traffic between a stable and a canary worker, copying it to a shadow.

    The split mirrors KServe's ``canaryTrafficPercent``: ``canary_percent`` of requests go to the canary,
    at random, or by hashing the ``X-Hybridml-Key`` header when a client sends one (sticky A/B assignment).
    A shadow gets a copy of every inference request; its answers and errors never reach the caller. If the
    canary's worker dies, its in-flight requests are retried on stable, the split falls back to 100 %
    stable and the event is logged. ``/admin/traffic``, ``/admin/promote`` and ``/admin/rollback`` change
    the split without a restart.

    Args:
        name: model name in the URLs.
        workers: the started workers by variant; ``stable`` is required.
        canary_percent: initial canary share (0-100).
        registry: the router's Prometheus registry.
        feedback_log: where ``/feedback`` appends labels (None: disabled).
        classes: the model's two class names (feedback labels may use them).
        max_body_bytes: body size limit (413 above).
        seed: seed of the random split (None: unseeded).
    """

    def __init__(
        self,
        name: str,
        workers: dict[str, Worker],
        *,
        canary_percent: int = 0,
        registry: CollectorRegistry | None = None,
        feedback_log: JsonLinesLog | None = None,
        classes: tuple[str, str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        seed: int | None = None,
    ) -> None:
        if STABLE not in workers:
            raise InvalidInputError("the router needs a stable worker")
        if canary_percent and CANARY not in workers:
            raise InvalidInputError("a canary percent needs a canary model")
        self.name = name
        self.workers = workers
        self.canary_percent = check_percent(canary_percent)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.feedback_log = feedback_log
        self.classes = classes
        self.max_body_bytes = max_body_bytes
        self._random = random.Random(seed)  # noqa: S311 - traffic splitting, not security
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self.requests = Counter(
            "hybridml_router_requests",
            "Requests answered by the router, by model, version, variant and HTTP status code.",
            ["model", "version", "variant", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hybridml_router_seconds",
            "End-to-end time of inference requests in the router, by variant.",
            ["model", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow_outcomes = Counter(
            "hybridml_shadow_requests", "Shadow copies by outcome (ok, error, dropped).", ["model", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.events = Counter(
            "hybridml_variant_events", "Variant lifecycle events (died, fallback, promote, rollback, split).",
            ["model", "variant", "event"], registry=self.registry,
        )  # fmt: skip
        self.split = Gauge("hybridml_canary_percent", "Current canary share.", ["model"], registry=self.registry)
        self.split.labels(name).set(self.canary_percent)

    # ----- ASGI -----

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry; also starts the worker monitor on lifespan startup."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._monitor = asyncio.create_task(self._watch())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._monitor is not None:
                        self._monitor.cancel()
                    # Stop the workers here: uvicorn re-raises SIGTERM once it returns, which ends this
                    # process before any cleanup after Server.run and would leave the workers orphaned.
                    for worker in list(self.workers.values()):
                        stop_worker(worker)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await read_body(scope, receive, headers, self.max_body_bytes)
        if isinstance(body, Response):
            response = body
        else:
            try:
                response = await self.handle(scope["method"], scope["path"], headers, body)
            except HybridmlError as exc:
                response = error_response(exc.http_status, exc.message)
            except Exception:
                log.exception("router error on %s %s", scope["method"], scope["path"])
                response = error_response(500, "internal server error")
        await send_response(send, response)

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        """Route one request: inference is split (and shadowed), admin/metrics/feedback are answered here."""
        if path.startswith("/admin/"):
            return self._admin(method, path, body)
        if path == "/metrics" and method == "GET":
            return await self._metrics()
        if path == "/feedback" and method == "POST":
            return self._feedback(body)
        inference = method == "POST" and (path.endswith(":predict") or path.endswith("/infer"))
        if not inference:
            return (await self._forward(STABLE, method, path, headers, body))[1]
        start = time.perf_counter()
        raw_id = headers.get(HEADER_REQUEST_ID)
        headers[HEADER_REQUEST_ID] = check_request_id(raw_id) if raw_id is not None else uuid.uuid4().hex
        variant = self._choose(headers.get(STICKY_HEADER))
        served, response = await self._forward(variant, method, path, headers, body)
        worker = self.workers[served]
        # The router's decision is the truth: a promoted worker keeps the label it was started with. Only
        # labels the worker set are rewritten, so errors look the same as from a server without a router.
        labels = {HEADER_VARIANT: served, HEADER_VERSION: worker.version, HEADER_MODEL: self.name}
        response.headers = [(k, labels.get(k, v)) for k, v in response.headers]
        self.requests.labels(self.name, worker.version, served, str(response.status)).inc()
        self.latency.labels(self.name, served).observe(time.perf_counter() - start)
        if SHADOW in self.workers and self.workers[SHADOW].alive:
            self._shadow(method, path, headers, body)
        return response

    # ----- routing -----

    def _choose(self, key: str | None) -> str:
        canary = self.workers.get(CANARY)
        if canary is None or not canary.alive or self.canary_percent == 0:
            return STABLE
        if key is not None:
            return CANARY if bucket(key) < self.canary_percent * (_BUCKETS // 100) else STABLE
        return CANARY if self._random.random() * 100 < self.canary_percent else STABLE

    async def _forward(
        self, variant: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[str, Response]:
        """(variant that answered, its response); a dead canary's request is answered by stable."""
        worker = self.workers[variant]
        try:
            return variant, await self._exchange(worker, method, path, headers, body)
        except WorkerDiedError:
            self._died(worker)
            if variant == STABLE:
                return variant, error_response(503, f"the stable worker of {self.name} is not running")
            # Scoring is idempotent, so a request the canary dropped is safely answered by stable.
            return await self._forward(STABLE, method, path, headers, body)

    async def _exchange(self, worker: Worker, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        if not worker.alive:
            raise WorkerDiedError(worker.variant)
        try:
            if worker.idle:
                reader, writer = worker.idle.pop()
            else:
                reader, writer = await asyncio.open_unix_connection(str(worker.socket_path))
            forwarded = {k: v for k, v in headers.items() if k in _FORWARDED}
            await write_frame(writer, orjson.dumps([method, path, forwarded]), body)
            meta, answer = await read_frame(reader, 1 << 30)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise WorkerDiedError(worker.variant) from exc
        worker.idle.append((reader, writer))
        status, content_type, extra = orjson.loads(meta)
        return Response(status, answer, [tuple(h) for h in extra], content_type.encode())

    def _shadow(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        if len(self._shadow_tasks) >= MAX_SHADOW_IN_FLIGHT:
            self.shadow_outcomes.labels(self.name, "dropped").inc()  # never let a slow challenger queue up
            return
        task = asyncio.create_task(self._shadow_call(method, path, dict(headers), body))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow_call(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        worker = self.workers[SHADOW]
        try:
            response = await self._exchange(worker, method, path, headers, body)
            self.shadow_outcomes.labels(self.name, "ok" if response.status == 200 else "error").inc()
        except WorkerDiedError:
            self._died(worker)
            self.shadow_outcomes.labels(self.name, "error").inc()
        except Exception:  # the shadow's failures are observed, never propagated
            log.exception("shadow request failed")
            self.shadow_outcomes.labels(self.name, "error").inc()

    def _died(self, worker: Worker) -> None:
        if not worker.alive:
            return
        worker.alive = False
        for _, writer in worker.idle:
            writer.close()
        worker.idle.clear()
        code = worker.process.poll() if worker.process is not None else None
        self.events.labels(self.name, worker.variant, "died").inc()
        if worker.variant == CANARY:
            log.error(
                "canary worker %s (version %s, pid %s, exit %s) died; traffic falls back to stable",
                worker.variant, worker.version, worker.pid, code,
            )  # fmt: skip
            self.canary_percent = 0
            self.split.labels(self.name).set(0)
            self.events.labels(self.name, CANARY, "fallback").inc()
        else:
            log.error("%s worker (version %s, pid %s, exit %s) died", worker.variant, worker.version, worker.pid, code)

    async def _watch(self) -> None:
        """Notice dead workers between requests too (a crash with no request in flight)."""
        while True:
            await asyncio.sleep(0.2)
            for worker in list(self.workers.values()):
                if worker.alive and worker.process is not None and worker.process.poll() is not None:
                    self._died(worker)

    # ----- admin, metrics, feedback -----

    def state(self) -> dict[str, Any]:
        """The current split and workers (``GET /admin/traffic``)."""
        return {
            "model": self.name,
            "canary_percent": self.canary_percent,
            "variants": {
                w.variant: {"version": w.version, "pid": w.pid, "alive": w.alive} for w in self.workers.values()
            },
        }

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        if path == "/admin/traffic" and method == "GET":
            return json_response(self.state())
        if method != "POST":
            return error_response(405, f"method {method} is not allowed on {path[:100]}")
        if path == "/admin/traffic":
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInputError(f"body must be JSON: {exc}") from None
            if not isinstance(payload, dict) or set(payload) != {"canary_percent"}:
                raise InvalidInputError('body must be {"canary_percent": N}')
            self.set_canary_percent(payload["canary_percent"])
        elif path == "/admin/promote":
            self.promote()
        elif path == "/admin/rollback":
            self.rollback()
        else:
            raise NotFoundError(f"no admin route {path[:100]}")
        return json_response(self.state())

    def set_canary_percent(self, percent: int) -> None:
        """Change the canary share (0-100) of new requests."""
        percent = check_percent(percent)
        canary = self.workers.get(CANARY)
        if percent and (canary is None or not canary.alive):
            raise ConflictError("there is no live canary to send traffic to")
        self.canary_percent = percent
        self.split.labels(self.name).set(percent)
        self.events.labels(self.name, CANARY, "split").inc()
        log.info("canary share of %s set to %d%%", self.name, percent)

    def promote(self) -> None:
        """Make the canary the stable variant (100 %) and stop the old stable worker."""
        canary = self.workers.get(CANARY)
        if canary is None or not canary.alive:
            raise ConflictError("there is no live canary to promote")
        old = self.workers[STABLE]
        canary.variant = STABLE
        self.workers[STABLE] = canary
        del self.workers[CANARY]
        self.canary_percent = 0
        self.split.labels(self.name).set(0)
        self.events.labels(self.name, STABLE, "promote").inc()
        log.info("promoted %s version %s to stable; stopping version %s", self.name, canary.version, old.version)
        stop_worker(old)

    def rollback(self) -> None:
        """Drop the canary: all traffic to stable, the canary worker stopped."""
        canary = self.workers.pop(CANARY, None)
        if canary is None:
            raise ConflictError("there is no canary to roll back")
        self.canary_percent = 0
        self.split.labels(self.name).set(0)
        self.events.labels(self.name, CANARY, "rollback").inc()
        log.info("rolled back canary version %s of %s", canary.version, self.name)
        stop_worker(canary)

    async def _metrics(self) -> Response:
        texts = []
        for worker in list(self.workers.values()):
            with contextlib.suppress(WorkerDiedError):
                answer = await self._exchange(worker, "GET", "/metrics", {}, b"")
                if answer.status == 200:
                    texts.append(answer.body.decode())
        merged = CollectorRegistry()
        merged.register(_Federated(texts))
        body = generate_latest(self.registry) + generate_latest(merged)
        return Response(200, body, content_type=b"text/plain; version=0.0.4")

    def _feedback(self, body: bytes) -> Response:
        if self.feedback_log is None:
            raise NotFoundError("feedback is not enabled on this server (start it with a payload log)")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"Unrecognized request format: {exc}") from None
        records = feedback_records(payload, self.classes)
        for record in records:
            self.feedback_log.write({**record, "model": self.name})
        return json_response({"accepted": len(records)})


def stop_worker(worker: Worker, grace_s: float = 5.0) -> None:
    """Terminate a worker process (SIGTERM, then SIGKILL after ``grace_s``)."""
    worker.alive = False
    for _, writer in worker.idle:
        writer.close()
    worker.idle.clear()
    if worker.process is None or worker.process.poll() is not None:
        return
    worker.process.terminate()
    try:
        worker.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait(timeout=grace_s)
