"""Keep credentials out of what hybridml logs, records or prints: URIs may carry ``user:password@``."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(uri: str) -> str:
    """``uri`` with its password replaced by ``***`` (tracking and HPO storage URIs may hold ``user:password@``)."""
    try:
        parts = urlsplit(uri)
        password, port = parts.password, parts.port
    except ValueError:  # not a URI (a bad port, say): show none of it rather than risk a secret
        return "<unparsable URI>"
    if password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc))
