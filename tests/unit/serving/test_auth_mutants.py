"""Control-endpoint auth behaviour that mutation testing (issue 12) found unasserted.

Name resolution is the world edge of ``is_loopback_host``: these tests replace ``socket.getaddrinfo`` with a fixed
table so that a host name's answer does not depend on this machine's resolver.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from hybridml.serving.auth import ControlAuth, is_loopback_host

RESOLVER = {
    "loopback-only.test": ["127.0.0.1", "::1"],
    "mixed.test": ["127.0.0.1", "10.0.0.5"],
    "public.test": ["10.0.0.5"],
    "scoped.test": ["fe80::1%eth0"],
    "empty.test": [],
}


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    if host not in RESOLVER:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [
        (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in RESOLVER[host]
    ]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _getaddrinfo)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("loopback-only.test", True),  # a name is loopback when every address it resolves to is
        ("mixed.test", False),  # one reachable address is enough to be reachable from elsewhere
        ("public.test", False),
        ("scoped.test", False),
        ("empty.test", False),  # resolves to nothing: not known to be loopback
        ("unknown.test", False),  # does not resolve
        ("localhost", True),  # loopback by name, without asking the resolver
    ],
)
def test_a_host_name_is_loopback_only_when_all_its_addresses_are(resolver: None, host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_repr_says_whether_a_token_is_set_without_showing_it() -> None:
    assert repr(ControlAuth(b"s3cret")) == "ControlAuth(token=set)"
    assert repr(ControlAuth(None)) == "ControlAuth(token=none)"
