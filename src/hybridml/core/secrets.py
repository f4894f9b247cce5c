"""Keep credentials out of what hybridml logs, records or prints: ``user:password@`` or ``?password=`` in URIs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# user:password@ where a URI parser finds no netloc (a mistyped "postgresql:/user:pw@host/db", or no scheme).
_LOOSE_CREDENTIALS = re.compile(r"(^|[:/])([^:/@\s]+):([^@/\s]+)@")
# A password or token in the query string: libpq and SQLAlchemy URLs accept ?password=..., HTTP URLs carry tokens.
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|sslpassword|secret|token|access_token|api_key|apikey)=)[^&;#]*"
)


def redact(uri: str) -> str:
    """``uri`` with its password replaced by ``***`` (tracking and HPO storage URIs may hold ``user:password@``)."""
    try:
        parts = urlsplit(uri)
        password, _ = parts.password, parts.port  # .port raises ValueError on a bad port
    except ValueError:  # not a URI (a bad port, say): show none of it rather than risk a secret
        return "<unparsable URI>"
    if password is None:
        shown = _LOOSE_CREDENTIALS.sub(r"\1\2:***@", uri)
    else:
        netloc = f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"  # the host as written ([::1], :port)
        shown = urlunsplit(parts._replace(netloc=netloc))
    return _QUERY_SECRET.sub(r"\1***", shown)
