"""Helpers behind ``hybridml serve --canary/--shadow`` and ``hybridml feedback``: parsing and HTTP calls."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import requests

from hybridml.errors import InvalidInputError, NotReadyError
from hybridml.serving.client import _raise_for_status

_CANARY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,62})/(?P<version>[A-Za-z0-9][A-Za-z0-9._-]{0,62}):(?P<pct>\d{1,3})$"
)
_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,62})/(?P<version>[A-Za-z0-9][A-Za-z0-9._-]{0,62})$")


@dataclass(frozen=True)
class VariantRef:
    """A registered version to serve as canary or shadow, and the canary's traffic share."""

    name: str
    version: str
    percent: int = 0


def parse_canary(spec: str) -> VariantRef:
    """``NAME/VERSION:PCT`` (PCT in 1-99) as a VariantRef; raises InvalidInputError naming the expected form."""
    match = _CANARY.match(spec)
    if not match or not 1 <= int(match["pct"]) <= 99:
        raise InvalidInputError(f"--canary must look like NAME/VERSION:PCT with PCT in 1-99, got {spec!r}")
    return VariantRef(match["name"], match["version"], int(match["pct"]))


def parse_shadow(spec: str) -> VariantRef:
    """``NAME/VERSION`` as a VariantRef; raises InvalidInputError naming the expected form."""
    match = _REF.match(spec)
    if not match:
        raise InvalidInputError(f"--shadow must look like NAME/VERSION, got {spec!r}")
    return VariantRef(match["name"], match["version"])


def server_command(
    python: str,
    name: str,
    stable: tuple[str, str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    canary: tuple[str, str, int] | None = None,
    shadow: tuple[str, str] | None = None,
    payload_log: str | None = None,
    feedback_log: str | None = None,
) -> list[str]:
    """The ``python -m hybridml.serving`` command line for stable (dir, version), canary (dir, version, pct)
    and shadow (dir, version) bundles already downloaded."""
    command = [python, "-m", "hybridml.serving", "--model-dir", stable[0], "--model-name", name,
               "--model-version", stable[1], "--bind-host", host, "--bind-port", str(port)]  # fmt: skip
    if canary:
        command += ["--canary-dir", canary[0], "--canary-version", canary[1], "--canary-percent", str(canary[2])]
    if shadow:
        command += ["--shadow-dir", shadow[0], "--shadow-version", shadow[1]]
    if payload_log:
        command += ["--payload-log", payload_log]
    if feedback_log:
        command += ["--feedback-log", feedback_log]
    return command


def _post(url: str, body: Any, timeout_s: float) -> dict[str, Any]:
    try:
        response = requests.post(url, json=body, timeout=timeout_s)
    except requests.RequestException as exc:
        raise NotReadyError(f"cannot reach model server at {url}: {exc}") from exc
    _raise_for_status(response)
    answer: dict[str, Any] = response.json()
    return answer


def send_feedback(endpoint: str, labels: dict[str, Any], timeout_s: float = 10) -> int:
    """Attach ground-truth ``labels`` ({request_id: label}) on the server at ``endpoint``; returns how many."""
    if not labels:
        raise InvalidInputError("no feedback labels given")
    items = [{"request_id": k, "label": v} for k, v in labels.items()]
    return int(_post(f"{endpoint.rstrip('/')}/feedback", {"items": items}, timeout_s)["accepted"])


def set_traffic(endpoint: str, *, canary_percent: int | None = None, action: str | None = None,
                timeout_s: float = 10) -> dict[str, Any]:  # fmt: skip
    """Change a running router's split without a restart: a canary percent, or ``promote`` / ``rollback``."""
    base = endpoint.rstrip("/")
    if action is not None:
        if action not in ("promote", "rollback"):
            raise InvalidInputError(f"action must be promote or rollback, got {action!r}")
        return _post(f"{base}/admin/{action}", None, timeout_s)
    if canary_percent is None:
        raise InvalidInputError("give a canary percent or an action")
    return _post(f"{base}/admin/traffic", {"canary_percent": canary_percent}, timeout_s)
