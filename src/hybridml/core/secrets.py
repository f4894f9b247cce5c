"""Keep credentials out of what hybridml logs, records or prints: URIs may carry ``user:password@``."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# user:password@ where a URI parser finds no netloc (a mistyped "postgresql:/user:pw@host/db", or no scheme).
_LOOSE_CREDENTIALS = re.compile(r"(^|[:/])([^:/@\s]+):([^@/\s]+)@")


def redact(uri: str) -> str:
    """``uri`` with its password replaced by ``***`` (tracking and HPO storage URIs may hold ``user:password@``)."""
    try:
        parts = urlsplit(uri)
        password, port = parts.password, parts.port
    except ValueError:  # not a URI (a bad port, say): show none of it rather than risk a secret
        return "<unparsable URI>"
    if password is None:
        return _LOOSE_CREDENTIALS.sub(r"\1\2:***@", uri)
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc))
