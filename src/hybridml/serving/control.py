"""Control plane of a model server: who may call it, its own listener (``/admin/*``, ``/feedback``) and a client.

Control (promote, rollback, traffic, feedback) is served on a listener apart from the inference port: loopback
TCP or a Unix socket by default. A caller that is not on loopback must send ``Authorization: Bearer <token>``;
the token is read once at start from a file or ``HYBRIDML_CONTROL_TOKEN`` (as a Kubernetes Secret mounts it).
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from hybridml.errors import (
    ConflictError,
    HybridmlError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
)
from hybridml.serving.app import (
    Receive,
    Response,
    Scope,
    Send,
    check_percent,
    error_response,
    json_response,
    lifespan,
    read_body,
    refusal,
    send_response,
)
from hybridml.serving.auth import TOKEN_ENV, ControlAuth, is_loopback_client, is_loopback_host, read_token

CONTROL_PATHS = ("/admin/traffic", "/admin/promote", "/admin/rollback", "/feedback")
MAX_CONTROL_BODY_BYTES = 4 * 1024 * 1024


class Controlled(Protocol):
    """What a control listener drives: the router, or a single-variant server (see :class:`SingleVariant`)."""

    def state(self) -> dict[str, Any]:
        """``{"model", "canary_percent", "variants": {variant: {"version", "pid", "alive"}}}``."""
        ...

    async def promote(self) -> None:
        """Make the canary the stable variant (ConflictError without a live canary)."""
        ...

    async def rollback(self) -> None:
        """Drop the canary (ConflictError without one)."""
        ...

    def set_canary_percent(self, percent: int) -> None:
        """Send ``percent`` of new requests to the canary."""
        ...

    def feedback(self, body: bytes) -> int:
        """Append the labels in a ``/feedback`` body to the feedback log; returns how many."""
        ...


class ControlApp:
    """The control listener's ASGI app: ``GET|POST /admin/traffic``, ``POST /admin/promote|rollback``, ``/feedback``.

    Promote and rollback are awaited here: they return once the old worker has exited, while the inference
    listener of the same event loop keeps answering.

    Args:
        target: the server being controlled.
        auth: who may call.
        local_socket: this app listens on a Unix socket (callers are local; the socket file is mode 0600).
    """

    def __init__(self, target: Controlled, auth: ControlAuth, *, local_socket: bool = False) -> None:
        self.target = target
        self.auth = auth
        self.local_socket = local_socket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: authorise first, then read the body and answer."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        response = refusal(self.auth, scope, headers, local_socket=self.local_socket)
        if response is None:
            body = await read_body(scope, receive, headers, MAX_CONTROL_BODY_BYTES)
            response = body if isinstance(body, Response) else await self.handle(scope["method"], scope["path"], body)
        await send_response(send, response)

    async def handle(self, method: str, path: str, body: bytes) -> Response:
        """Answer one authorised control call; errors become their 4xx/5xx JSON answer."""
        try:
            if path not in CONTROL_PATHS:
                raise NotFoundError(f"no control route {path[:100]}")
            if path == "/admin/traffic" and method == "GET":
                return json_response(self.target.state())
            if method != "POST":
                return error_response(405, f"method {method} is not allowed on {path}")
            if path == "/feedback":
                return json_response({"accepted": self.target.feedback(body)})
            if path == "/admin/traffic":
                self.target.set_canary_percent(_percent_body(body))
            elif path == "/admin/promote":
                await self.target.promote()
            else:
                await self.target.rollback()
            return json_response(self.target.state())
        except HybridmlError as exc:
            return error_response(exc.http_status, exc.message)


def _percent_body(body: bytes) -> int:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"body must be JSON: {exc}") from None
    if not isinstance(payload, dict) or set(payload) != {"canary_percent"}:
        raise InvalidInputError('body must be {"canary_percent": N}')
    value: int = payload["canary_percent"]
    return value


class SingleVariant:
    """Control of a server with one variant and no router: state and feedback; nothing to promote or split.

    Args:
        app: the in-process inference app.
        pid: process id reported in the state.
    """

    def __init__(self, app: Any, pid: int) -> None:
        self.app = app
        self.pid = pid

    def state(self) -> dict[str, Any]:
        """The one stable variant, at a canary share of 0."""
        return {
            "model": self.app.name,
            "canary_percent": 0,
            "variants": {self.app.variant: {"version": self.app.version, "pid": self.pid, "alive": True}},
        }

    async def promote(self) -> None:
        """Always a conflict: a single-variant server has no canary."""
        raise ConflictError("there is no live canary to promote")

    async def rollback(self) -> None:
        """Always a conflict: a single-variant server has no canary."""
        raise ConflictError("there is no canary to roll back")

    def set_canary_percent(self, percent: int) -> None:
        """Accept 0 (the current split); anything else is a conflict."""
        if check_percent(percent):
            raise ConflictError("there is no live canary to send traffic to")

    def feedback(self, body: bytes) -> int:
        """Append the labels of a ``/feedback`` body (NotFoundError without a feedback log)."""
        accepted: int = self.app.accept_feedback(body)
        return accepted


# ----------------------------------------------------------------------------------------------------- client

_ERRORS_BY_STATUS: dict[int, type[HybridmlError]] = {
    400: InvalidInputError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    503: NotReadyError,
}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """Calls a server's control listener (or ``/feedback`` on its inference port) and raises hybridml errors.

    Args:
        address: ``http://HOST:PORT`` or ``unix:///path/to/control.sock``.
        token: bearer token, sent when given (needed only from outside loopback).
        timeout_s: time budget of each call.

    Raises:
        InvalidInputError: an address of another form.
    """

    def __init__(self, address: str, token: str | None = None, *, timeout_s: float = 30.0) -> None:
        parts = urlsplit(address)
        if parts.scheme == "unix" and parts.path and not parts.netloc:
            self._unix: str | None = parts.path
            self._host, self._port = "", 0
        elif parts.scheme == "http" and parts.hostname and parts.port and parts.path in ("", "/"):
            self._unix, self._host, self._port = None, parts.hostname, parts.port
        else:
            raise InvalidInputError(f"control address must be http://HOST:PORT or unix:///PATH, got {address!r}")
        self.address = address
        self._token = token
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"ControlClient({self.address!r})"

    def state(self) -> dict[str, Any]:
        """The split and the variants (``GET /admin/traffic``)."""
        return self._call("GET", "/admin/traffic", None)

    def promote(self) -> dict[str, Any]:
        """Make the canary stable; returns the new state (ConflictError without a live canary)."""
        return self._call("POST", "/admin/promote", None)

    def rollback(self) -> dict[str, Any]:
        """Drop the canary; returns the new state (ConflictError without one)."""
        return self._call("POST", "/admin/rollback", None)

    def traffic(self, percent: int) -> dict[str, Any]:
        """Send ``percent`` (0-100) of new requests to the canary; returns the new state."""
        return self._call("POST", "/admin/traffic", {"canary_percent": percent})

    def feedback(self, labels: Mapping[str, Any]) -> int:
        """Attach ground-truth ``labels`` ({request_id: label}); returns how many the server accepted."""
        if not labels:
            raise InvalidInputError("no feedback labels given")
        items = [{"request_id": k, "label": v} for k, v in labels.items()]
        return int(self._call("POST", "/feedback", {"items": items})["accepted"])

    def _call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        connection: http.client.HTTPConnection
        if self._unix is not None:
            connection = _UnixConnection(self._unix, self.timeout_s)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        headers = {"content-type": "application/json"}
        if self._token is not None:
            headers["authorization"] = f"Bearer {self._token}"
        try:
            connection.request(method, path, body=orjson.dumps(body) if body is not None else b"", headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise NotReadyError(f"cannot reach control listener at {self.address}: {exc}") from exc
        finally:
            connection.close()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = {"error": raw[:300].decode("utf-8", "replace")}
        if status >= 400:
            message = payload.get("error", payload) if isinstance(payload, dict) else payload
            error = _ERRORS_BY_STATUS.get(status, HybridmlError)
            raise error(f"control listener at {self.address} answered {status}: {message}")
        if not isinstance(payload, dict):
            raise HybridmlError(f"control listener at {self.address} answered {status} with a non-object body")
        return payload


__all__ = [
    "TOKEN_ENV",
    "ControlApp",
    "ControlAuth",
    "ControlClient",
    "Controlled",
    "SingleVariant",
    "is_loopback_client",
    "is_loopback_host",
    "read_token",
]
