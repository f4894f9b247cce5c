"""Alertmanager webhook receiver: a firing ``HybridmlDriftDetected`` alert for the model starts a retraining run.

``POST /alertmanager`` takes Alertmanager's webhook JSON (``version`` "4"). Each alert is one event keyed by
its fingerprint and start time, so Alertmanager re-sending a firing alert (``repeat_interval``) or a group
holding it starts nothing new, while the same alert firing again after it resolved does. Resolved alerts,
other alert names and alerts without a ``model`` label are logged as ignored. A malformed body is answered
400 with one line, and the server goes on serving. The receiver listens on 127.0.0.1 by default; on any other
address every call needs the bearer token (``hybridml.serving.auth``, as the model server's control listener).
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hybridml.errors import InvalidInputError
from hybridml.monitoring.triggers import Event, Trigger
from hybridml.serving.auth import ControlAuth, is_loopback_host

PATH = "/alertmanager"
DRIFT_ALERT = "HybridmlDriftDetected"
MAX_BODY = 1024 * 1024  # Alertmanager groups are small; anything larger is refused (413)


def parse_alerts(body: bytes, at: float) -> list[tuple[Event, str | None]]:
    """Events of an Alertmanager webhook body, each with the reason it is ignored (None: it may start a run).

    Raises:
        InvalidInputError: not JSON, not version "4", or alerts that are not objects with a status and labels.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidInputError("body must be a JSON object (Alertmanager webhook)")
    if payload.get("version") != "4":
        raise InvalidInputError(f"unsupported Alertmanager webhook version {payload.get('version')!r} (expected '4')")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise InvalidInputError("'alerts' must be a list")
    events = []
    for index, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise InvalidInputError(f"alerts[{index}] must be an object")
        labels = alert.get("labels")
        status = alert.get("status")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise InvalidInputError(f"alerts[{index}].labels must be an object of strings")
        if status not in ("firing", "resolved"):
            raise InvalidInputError(f"alerts[{index}].status must be 'firing' or 'resolved', got {status!r}")
        starts_at = alert.get("startsAt", "")
        if not isinstance(starts_at, str):
            raise InvalidInputError(f"alerts[{index}].startsAt must be a string")
        fingerprint = alert.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint:
            # Alertmanager always sends one; without it, the labels identify the alert as Alertmanager's would.
            fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
        name = labels.get("alertname", "")
        model = labels.get("model", "")
        detail = f"{name} {status}: model={model or '?'} version={labels.get('version', '?')} since {starts_at or '?'}"
        event = Event("alert", f"alert:{fingerprint}:{_start_key(starts_at)}", at, model=model, detail=detail)
        reason = None
        if name != DRIFT_ALERT:
            reason = f"alert {name!r} does not start retraining (only {DRIFT_ALERT})"
        elif status == "resolved":
            reason = "resolved alert: drift ended, nothing to retrain"
        elif not model:
            reason = "drift alert without a 'model' label"
        events.append((event, reason))
    return events


def _start_key(starts_at: str) -> str:
    """The alert's start as a stable string (Alertmanager's own text when it cannot be parsed)."""
    try:
        return datetime.fromisoformat(starts_at.replace("Z", "+00:00")).isoformat()
    except ValueError:
        return starts_at


class WebhookServer:
    """The receiver, serving in a background thread until :meth:`stop`.

    Args:
        trigger: where events go.
        host: address to listen on (default loopback; anything else needs ``token``).
        port: port (0: any free one; see :attr:`port`).
        token: bearer token required from callers off loopback.

    Raises:
        InvalidInputError: a non-loopback host without a token.
    """

    def __init__(self, trigger: Trigger, host: str = "127.0.0.1", port: int = 0, token: bytes | None = None) -> None:
        if not is_loopback_host(host) and token is None:
            raise InvalidInputError(
                f"the webhook would listen on {host} without a token: give --token-file or HYBRIDML_CONTROL_TOKEN,"
                " or listen on 127.0.0.1"
            )
        self.trigger = trigger
        self.auth = ControlAuth(token)
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="alertmanager-webhook", daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The receiver's URL (give it to Alertmanager as a webhook_config url)."""
        host = str(self._server.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{PATH}"

    def start(self) -> WebhookServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (if started) and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()  # returns once serve_forever has ended; it would wait forever for none
            self._thread.join(timeout=5)
        self._server.server_close()

    def handle(self, body: bytes) -> dict[str, Any]:
        """Decide every alert of one webhook call; returns the decisions (raises InvalidInputError when malformed)."""
        decisions = []
        for event, reason in parse_alerts(body, self.trigger.clock()):
            decision = self.trigger.ignore(event, reason) if reason else self.trigger.submit(event)
            decisions.append({"key": event.key, "decision": decision.decision, "reason": decision.reason})
        return {"decisions": decisions}


def _handler_for(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "hybridml-trigger"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # every call that matters is in the decision log

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _allowed(self) -> bool:
            refused = server.auth.decide(self.client_address, self.headers.get("Authorization"))
            if refused is not None:
                self.close_connection = True
                self._reply(refused, {"error": "a bearer token is required off loopback"})
                return False
            return True

        def do_GET(self) -> None:
            if not self._allowed():
                return
            if self.path == "/healthz":
                self._reply(HTTPStatus.OK, {"status": "ok"})
            else:
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}; POST {PATH}"})

        def do_POST(self) -> None:
            if not self._allowed():
                return
            if self.path.split("?", 1)[0] != PATH:
                self.close_connection = True
                self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}; POST {PATH}"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                self._reply(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
                return
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"})
                return
            body = self.rfile.read(length)
            try:
                result = server.handle(body)
            except InvalidInputError as exc:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": exc.message})
                return
            self._reply(HTTPStatus.OK, result)

    return Handler
