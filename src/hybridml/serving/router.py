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
    refusal,
    send_response,
)
from hybridml.serving.auth import ControlAuth
from hybridml.serving.ipc import read_frame, write_frame
from hybridml.serving.metrics import LATENCY_BUCKETS
from hybridml.serving.payload_log import JsonLinesLog, check_request_id, feedback_records

log = logging.getLogger("hybridml.serving.router")

STABLE, CANARY, SHADOW = "stable", "canary", "shadow"
STICKY_HEADER = "x-hybridml-key"
MAX_SHADOW_IN_FLIGHT = 64
_BUCKETS = 10_000
_FORWARDED = ("content-type", HEADER_REQUEST_ID, "inference-header-content-length")
STOP_GRACE_S = 5.0  # how long a retired worker may take to finish its requests, and then to exit
_POLL_S = 0.005


@dataclass
class Worker:
    """One variant's worker process and its idle connections."""

    variant: str
    version: str
    socket_path: Path
    process: subprocess.Popen[bytes] | None = None
    alive: bool = True
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)
    # Connections opened and not dropped: those not idle carry a request, so a retiring worker is drained when
    # ``connections == len(idle)``; counting opens instead of requests keeps the hot path free of bookkeeping.
    connections: int = 0
    retired: bool = False

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
    stable and the event is logged. The control listener (:mod:`hybridml.serving.control`) changes the split
    without a restart through :meth:`set_canary_percent`, :meth:`promote` and :meth:`rollback`; ``/admin/*``
    is not served on the inference port. Each request frame tells its worker the role it serves it in, so a
    promoted worker's payload records and metrics say ``stable`` from its first request as stable.

    Args:
        name: model name in the URLs.
        workers: the started workers by variant; ``stable`` is required.
        canary_percent: initial canary share (0-100).
        registry: the router's Prometheus registry.
        feedback_log: where ``/feedback`` appends labels (None: disabled).
        classes: the model's two class names (feedback labels may use them).
        max_body_bytes: body size limit (413 above).
        seed: seed of the random split (None: unseeded).
        control_auth: who may post ``/feedback`` on the inference port (default: loopback callers only).
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
        control_auth: ControlAuth | None = None,
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
        self.control_auth = control_auth if control_auth is not None else ControlAuth()
        self._retiring: set[asyncio.Task[None]] = set()
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
                    # Stop the workers here, together: whatever runs the app may end the process right after.
                    stops = [stop_worker_async(w, grace_s=1.0) for w in self.workers.values()]
                    await asyncio.gather(*stops, *self._retiring)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["path"] == "/feedback":
            denied = refusal(self.control_auth, scope, headers)
            if denied is not None:
                await send_response(send, denied)
                return
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
        """Route one request: inference is split (and shadowed), metrics and feedback are answered here."""
        if path.startswith("/admin/"):
            # Control lives on its own listener; here it does not exist (and is never forwarded to a worker).
            return error_response(404, f"no route {path[:200]}")
        if path == "/metrics" and method == "GET":
            return await self._metrics()
        if path == "/feedback" and method == "POST":
            return self._feedback(body)
        inference = method == "POST" and (path.endswith(":predict") or path.endswith("/infer"))
        if not inference:
            return (await self._forward(STABLE, method, path, headers, body))[2]
        start = time.perf_counter()
        raw_id = headers.get(HEADER_REQUEST_ID)
        headers[HEADER_REQUEST_ID] = check_request_id(raw_id) if raw_id is not None else uuid.uuid4().hex
        variant = self._choose(headers.get(STICKY_HEADER))
        # The worker comes back with the answer: a promote or rollback while the request was on its way may
        # have changed the routing table since.
        served, worker, response = await self._forward(variant, method, path, headers, body)
        # The router's decision is the truth (the worker served it in the role the frame gave it). Only
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
    ) -> tuple[str, Worker, Response]:
        """(variant that answered, its worker, the response); a dead canary's request is answered by stable."""
        worker = self.workers[variant]
        try:
            return variant, worker, await self._exchange(worker, method, path, headers, body, variant)
        except WorkerDiedError:
            self._died(worker)
            if worker.retired and variant in self.workers and self.workers[variant] is not worker:
                # Promoted away while this request was on its way: the variant's new worker answers it.
                return await self._forward(variant, method, path, headers, body)
            if variant == STABLE:
                return variant, worker, error_response(503, f"the stable worker of {self.name} is not running")
            # Scoring is idempotent, so a request the canary dropped is safely answered by stable.
            return await self._forward(STABLE, method, path, headers, body)

    async def _exchange(
        self, worker: Worker, method: str, path: str, headers: dict[str, str], body: bytes, role: str | None = None
    ) -> Response:
        """Send one request to ``worker`` in the role ``role`` (default: its current variant) and read the answer."""
        if not worker.alive:
            raise WorkerDiedError(worker.variant)
        connection = None
        answered = False
        try:
            if worker.idle:
                connection = worker.idle.pop()
            else:
                connection = await asyncio.open_unix_connection(str(worker.socket_path))
                worker.connections += 1
            reader, writer = connection
            forwarded = {k: v for k, v in headers.items() if k in _FORWARDED}
            # The role the router chose travels with each request: after a promote the worker's very next record
            # says stable, and a request routed just before says canary even if it arrives just after.
            await write_frame(writer, orjson.dumps([method, path, forwarded, role or worker.variant]), body)
            meta, answer = await read_frame(reader, 1 << 30)
            answered = True
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise WorkerDiedError(worker.variant) from exc
        finally:
            if connection is not None:
                if answered:
                    worker.idle.append(connection)
                else:  # broken or cancelled half-way: drop it, so a drain does not wait for it
                    worker.connections -= 1
                    connection[1].close()
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
        if not worker.alive or worker.retired:
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

    async def promote(self) -> None:
        """Make the canary the stable variant (100 %), then retire the old stable worker.

        The switch is immediate (new requests go to the new stable); the old worker finishes the requests it
        has, then is terminated, all awaited without blocking the event loop that serves predictions.
        """
        canary = self.workers.get(CANARY)
        if canary is None or not canary.alive:
            raise ConflictError("there is no live canary to promote")
        old = self.workers[STABLE]
        old.retired = True
        canary.variant = STABLE
        self.workers[STABLE] = canary
        del self.workers[CANARY]
        self.canary_percent = 0
        self.split.labels(self.name).set(0)
        self.events.labels(self.name, STABLE, "promote").inc()
        log.info("promoted %s version %s to stable; stopping version %s", self.name, canary.version, old.version)
        await self._retire(old)

    async def rollback(self) -> None:
        """Drop the canary: all traffic to stable at once, then the canary worker is drained and stopped."""
        canary = self.workers.pop(CANARY, None)
        if canary is None:
            raise ConflictError("there is no canary to roll back")
        canary.retired = True
        self.canary_percent = 0
        self.split.labels(self.name).set(0)
        self.events.labels(self.name, CANARY, "rollback").inc()
        log.info("rolled back canary version %s of %s", canary.version, self.name)
        await self._retire(canary)

    async def _retire(self, worker: Worker) -> None:
        # A task of its own, so a control caller that hangs up cannot cancel the stop half-way.
        task = asyncio.create_task(stop_worker_async(worker, drain=True))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        await asyncio.shield(task)

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

    def feedback(self, body: bytes) -> int:
        """Append the labels of a ``/feedback`` body to the feedback log; returns how many.

        Raises:
            NotFoundError: this server has no feedback log.
            InvalidInputError: a malformed body or label.
        """
        if self.feedback_log is None:
            raise NotFoundError("feedback is not enabled on this server (start it with a feedback log)")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"Unrecognized request format: {exc}") from None
        records = feedback_records(payload, self.classes)
        for record in records:
            self.feedback_log.write({**record, "model": self.name})
        return len(records)

    def _feedback(self, body: bytes) -> Response:
        return json_response({"accepted": self.feedback(body)})


async def stop_worker_async(worker: Worker, *, grace_s: float = STOP_GRACE_S, drain: bool = False) -> None:
    """Stop a worker without blocking the event loop: optionally let it finish its requests, then terminate it.

    Args:
        worker: the worker, already out of the routing table.
        grace_s: longest wait for the requests in flight (with ``drain``), and then for the exit after SIGTERM
            before SIGKILL.
        drain: wait until every connection to the worker is idle again (no request in flight) first.
    """
    loop = asyncio.get_running_loop()
    if drain:
        deadline = loop.time() + grace_s
        while worker.alive and worker.connections > len(worker.idle) and loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
    worker.alive = False
    for _, writer in worker.idle:
        writer.close()
    worker.idle.clear()
    process = worker.process
    if process is None or process.poll() is not None:
        return
    process.terminate()
    deadline = loop.time() + grace_s
    while process.poll() is None:
        if loop.time() > deadline:
            log.warning("worker %s (pid %s) ignored SIGTERM for %gs; killing it", worker.variant, worker.pid, grace_s)
            process.kill()
            deadline = loop.time() + grace_s
        await asyncio.sleep(_POLL_S)


def stop_worker(worker: Worker, grace_s: float = STOP_GRACE_S) -> None:
    """Terminate a worker process (SIGTERM, then SIGKILL after ``grace_s``), blocking: only outside the loop."""
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
