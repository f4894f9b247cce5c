"""Helpers behind ``hybridml serve --canary/--shadow`` and ``hybridml feedback``: parsing, command line, feedback."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hybridml.errors import InvalidInputError
from hybridml.serving.control import ControlClient

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
    match = _CANARY.fullmatch(spec)
    if not match or not 1 <= int(match["pct"]) <= 99:
        raise InvalidInputError(f"--canary must look like NAME/VERSION:PCT with PCT in 1-99, got {spec!r}")
    return VariantRef(match["name"], match["version"], int(match["pct"]))


def parse_shadow(spec: str) -> VariantRef:
    """``NAME/VERSION`` as a VariantRef; raises InvalidInputError naming the expected form."""
    match = _REF.fullmatch(spec)
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
    control_port: int | None = None,
    control_token_file: str | None = None,
    control_socket: str | None = None,
    payload_log_max_bytes: int | None = None,
    payload_log_keep: int | None = None,
) -> list[str]:
    """The ``python -m hybridml.serving`` command line for stable (dir, version), canary (dir, version, pct)
    and shadow (dir, version) bundles already downloaded.

    ``control_port`` (on 127.0.0.1) or ``control_socket`` adds the control listener; ``control_token_file``
    lets non-loopback callers in with that bearer token. ``payload_log_max_bytes`` / ``payload_log_keep``
    override the server's rotation defaults.
    """
    command = [python, "-m", "hybridml.serving", "--model-dir", stable[0], "--model-name", name,
               "--model-version", stable[1], "--bind-host", host, "--bind-port", str(port)]  # fmt: skip
    if canary:
        command += ["--canary-dir", canary[0], "--canary-version", canary[1], "--canary-percent", str(canary[2])]
    if shadow:
        command += ["--shadow-dir", shadow[0], "--shadow-version", shadow[1]]
    if payload_log:
        command += ["--payload-log", payload_log]
        if payload_log_max_bytes is not None:
            command += ["--payload-log-max-bytes", str(payload_log_max_bytes)]
        if payload_log_keep is not None:
            command += ["--payload-log-keep", str(payload_log_keep)]
    if feedback_log:
        command += ["--feedback-log", feedback_log]
    if control_port is not None:
        command += ["--control-port", str(control_port)]
    if control_socket is not None:
        command += ["--control-socket", control_socket]
    if control_token_file is not None:
        command += ["--control-token-file", control_token_file]
    return command


def send_feedback(endpoint: str, labels: dict[str, Any], timeout_s: float = 10, token: str | None = None) -> int:
    """Attach ground-truth ``labels`` ({request_id: label}) on the server at ``endpoint``; returns how many.

    ``endpoint`` is the inference URL (its ``/feedback`` answers loopback callers, or others with ``token``) or
    a control address (``http://HOST:PORT``, ``unix:///PATH``).
    """
    return ControlClient(endpoint.rstrip("/"), token, timeout_s=timeout_s).feedback(labels)
