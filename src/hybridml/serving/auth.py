"""Who may make a control call: loopback peers always, anyone else with the bearer token (read once at start)."""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridml.errors import InvalidInputError

TOKEN_ENV = "HYBRIDML_CONTROL_TOKEN"  # noqa: S105 - the name of the variable, not a secret
_BEARER = "bearer "


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address, or a name resolved once here) is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return _loopback_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(_loopback_address(str(info[4][0])) for info in infos)


def _loopback_address(text: str) -> bool:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is an IPv4 loopback client on a dual-stack socket
    return address.is_loopback


def is_loopback_client(client: Any) -> bool:
    """Whether an ASGI ``scope["client"]`` is a loopback peer (an unknown or malformed peer is not)."""
    if not isinstance(client, list | tuple) or not client or not isinstance(client[0], str):
        return False
    try:
        return _loopback_address(client[0])
    except ValueError:
        return False


@dataclass(frozen=True)
class ControlAuth:
    """Who may make a control call: loopback peers always, anyone else with the bearer token.

    The token never appears in ``repr`` or logs. ``proxy_headers`` stay off in the server, so the peer address
    is the TCP peer's and no ``X-Forwarded-For`` header can make a remote caller look local.

    Args:
        token: the shared secret (None: only loopback callers are allowed).
    """

    token: bytes | None = None

    def __repr__(self) -> str:
        return f"ControlAuth(token={'set' if self.token else 'none'})"

    def decide(self, client: Any, authorization: str | None, *, local_socket: bool = False) -> int | None:
        """None when the call is allowed, else the HTTP status to refuse it with.

        Args:
            client: the ASGI ``scope["client"]`` (host, port), or None.
            authorization: the ``Authorization`` header, if any.
            local_socket: the call came over a Unix socket (its file mode already limits who can connect).

        Returns:
            None (allowed), 401 (not on loopback and no bearer token sent) or 403 (a token that does not match,
            or no token configured on this server).
        """
        if local_socket or is_loopback_client(client):
            return None
        if authorization is None or authorization[: len(_BEARER)].lower() != _BEARER:
            return 401
        if self.token is None:
            return 403
        try:
            # Header values arrive decoded as latin-1: encoding back gives the bytes the client sent.
            sent = authorization[len(_BEARER) :].strip().encode("latin-1")
        except UnicodeEncodeError:
            return 403
        return None if hmac.compare_digest(sent, self.token) else 403


def read_token(token_file: str | None, environ: Mapping[str, str]) -> bytes | None:
    """The control token from ``token_file`` (first) or ``HYBRIDML_CONTROL_TOKEN``; None when neither is set.

    Surrounding whitespace is dropped (a mounted Secret often ends in a newline).

    Raises:
        InvalidInputError: the file cannot be read, or the token is empty.
    """
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read control token file {token_file}: {exc.__class__.__name__}") from None
        where = f"control token file {token_file}"
    elif environ.get(TOKEN_ENV) is not None:
        text, where = environ[TOKEN_ENV], TOKEN_ENV
    else:
        return None
    token = text.strip()
    if not token:
        raise InvalidInputError(f"{where} is empty")
    return token.encode("utf-8")
