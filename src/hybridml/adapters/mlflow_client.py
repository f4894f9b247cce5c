"""The one place hybridml opens MLflow clients: fail-fast HTTP settings, and what an MLflow failure *is*.

Every MLflow client hybridml makes (registry, tracking) comes from :func:`client`, which first applies
:data:`HTTP_SETTINGS`. MLflow's REST client otherwise retries a refused connection 7 times with a backoff
factor of 2 and waits 120 s per request, so a stopped tracking server takes minutes to notice.

:func:`classify` tells what a failure is from the exception types in its chain (``__cause__`` /
``__context__``) and from MLflow's error codes, never from the words of a message:

- a direct SQL store wraps the driver's exception: SQLite's ``SQLITE_BUSY``/``SQLITE_LOCKED`` (single writer)
  and unique-constraint codes, psycopg2's classes for the SQLSTATEs of serialization failure, deadlock, lock
  timeout and unique violation are lost write races (MLflow reports them as ``TEMPORARILY_UNAVAILABLE`` or, for an
  ``IntegrityError``, ``BAD_REQUEST``: the code alone cannot tell a race from a bad argument, the type can);
- the REST store raises ``requests`` exceptions as the context of an ``MlflowException``: ``ConnectionError``
  and ``Timeout`` mean the server is not reachable; ``RetryError`` means the server kept answering one of
  MLflow's transient HTTP statuses (408, 429, 5xx) through MLflow's own retries, which is how a race on the
  server's database reaches a client (SQLite locked: 503; MLflow's version-number retries spent: 500);
- a server's JSON error carries an error code: 409 codes (``ABORTED``, ``RESOURCE_CONFLICT``) are races,
  ``TEMPORARILY_UNAVAILABLE``/``REQUEST_LIMIT_EXCEEDED`` mean "try again".
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable, Iterator, MutableMapping
from typing import TypeVar

import requests
import urllib3.exceptions
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hybridml.core.secrets import redact
from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError, NotReadyError

# Refused: 3 tries 0 s and ~2-2.5 s apart, so a stopped server is reported within ~3 s per call. Unanswered:
# each try waits at most 8 s, ~27 s in all. A user's own setting of any of these wins.
HTTP_SETTINGS: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "8",
}


def configure_http(env: MutableMapping[str, str] | None = None) -> None:
    """Apply :data:`HTTP_SETTINGS` to ``env`` (default ``os.environ``, where MLflow reads them) unless set."""
    target = os.environ if env is None else env
    for key, value in HTTP_SETTINGS.items():
        target.setdefault(key, value)


def client(tracking_uri: str) -> MlflowClient:
    """An MLflow client for ``tracking_uri`` (also its registry URI), with the fail-fast HTTP settings."""
    configure_http()
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class Failure(enum.Enum):
    """What went wrong, as far as a caller's next move is concerned."""

    RACE = "race"  # a concurrent write won (lock, unique key, serialization): trying again is right
    BUSY = "busy"  # the server kept saying "try again" (HTTP 408/429/5xx, 503): trying again is right
    UNREACHABLE = "unreachable"  # no answer: server stopped, refused, timed out, or its database is down
    NOT_FOUND = "not-found"
    INVALID = "invalid"
    EXISTS = "exists"
    OTHER = "other"


T = TypeVar("T")

RETRYABLE = frozenset({Failure.RACE, Failure.BUSY})

NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"})
INVALID_CODES = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST", "INVALID_STATE"})
RACE_CODES = frozenset({"ABORTED", "RESOURCE_CONFLICT"})
BUSY_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})

# SQLite result codes (https://sqlite.org/rescode.html): the primary code is the low byte.
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_SQLITE_UNIQUE = frozenset({2067, 1555})  # SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
# PostgreSQL SQLSTATEs (psycopg2 raises one exception class per SQLSTATE): serialization failure, deadlock,
# lock not available, unique violation are races; connection exceptions and shutdowns mean it is gone.
_PG_RACE = ("40001", "40P01", "55P03", "23505")
_PG_GONE = ("08000", "08001", "08003", "08004", "08006", "57P01", "57P02", "57P03")


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or during, nearest first (each once)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]


def _driver_failure(error: BaseException) -> Failure | None:
    """A DB-API driver exception (sqlite3, psycopg2) classified by its own code or class."""
    sqlite_code = getattr(error, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        if sqlite_code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED) or sqlite_code in _SQLITE_UNIQUE:
            return Failure.RACE
        return None
    pg = sys.modules.get("psycopg2.errors")  # loaded whenever a psycopg2 exception can exist
    if pg is None or not isinstance(error, sys.modules["psycopg2"].Error):
        return None
    if isinstance(error, tuple(pg.lookup(code) for code in _PG_RACE)):
        return Failure.RACE
    if isinstance(error, tuple(pg.lookup(code) for code in _PG_GONE)):
        return Failure.UNREACHABLE
    if type(error) is sys.modules["psycopg2"].OperationalError and getattr(error, "pgcode", None) is None:
        return Failure.UNREACHABLE  # could not connect at all: no server answered, so there is no SQLSTATE
    return None


def _sqlalchemy_failure(error: BaseException) -> Failure | None:
    # Only consulted when SQLAlchemy is loaded: a REST-only client never imports it, and then none of its
    # exceptions can be in the chain.
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is None or not isinstance(error, sa_exc.DBAPIError):
        return None
    if error.connection_invalidated:
        return Failure.UNREACHABLE
    # A database error that is not a known race (no such table, disk full, ...) is not worth retrying, even
    # though MLflow files every OperationalError under TEMPORARILY_UNAVAILABLE.
    return (_driver_failure(error.orig) if error.orig is not None else None) or Failure.OTHER


def classify(exc: BaseException) -> Failure:
    """What ``exc`` (an MLflow, ``requests``, SQLAlchemy or driver exception) is, by type and code only."""
    code = exc.error_code if isinstance(exc, MlflowException) else None
    # Codes that name the outcome win over the cause: MLflow reports "already exists" from an IntegrityError.
    if code in NOT_FOUND_CODES:
        return Failure.NOT_FOUND
    if code == "RESOURCE_ALREADY_EXISTS":
        return Failure.EXISTS
    for error in chain(exc):
        if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return Failure.UNREACHABLE
        if isinstance(error, requests.exceptions.RetryError):
            return Failure.BUSY
        if isinstance(error, ConnectionRefusedError | ConnectionResetError):
            return Failure.UNREACHABLE
        found = _sqlalchemy_failure(error) or _driver_failure(error)
        if found is not None:
            return found
    if code in RACE_CODES:
        return Failure.RACE
    if code in BUSY_CODES:
        return Failure.BUSY
    if code in INVALID_CODES:
        return Failure.INVALID
    return Failure.OTHER


def is_backend_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from MLflow or what it talks through (so :func:`translate` applies to it)."""
    if isinstance(exc, MlflowException | requests.exceptions.RequestException):
        return True
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError)


def _why_unreachable(exc: BaseException) -> str:
    errors = list(chain(exc))
    if any(isinstance(e, ConnectionRefusedError) for e in errors):
        return "connection refused"
    # urllib3's NewConnectionError is a (connect) TimeoutError too, so a refused or failed connect is told apart
    # first; a read timeout reaches requests' ConnectionError through urllib3 once its retries are spent.
    timeouts = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    if any(isinstance(e, timeouts) and not isinstance(e, urllib3.exceptions.NewConnectionError) for e in errors):
        return f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s"
    if any(isinstance(e, requests.exceptions.ConnectionError) for e in errors):
        return "connection failed"
    return "its database is not reachable"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of ``exc``'s message, cut to ``limit`` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def translate(exc: BaseException, what: str, where: str, kind: Failure | None = None) -> HybridmlError:
    """The hybridml error for a failed MLflow call about ``what`` against the store at ``where``."""
    kind = classify(exc) if kind is None else kind
    detail = first_line(exc)
    if kind is Failure.UNREACHABLE:
        return NotReadyError(f"MLflow at {redact(where)} is not reachable ({_why_unreachable(exc)}): {what}")
    if kind is Failure.BUSY:
        return NotReadyError(f"MLflow at {redact(where)} kept answering 'try again' for {what}: {detail}")
    if kind is Failure.NOT_FOUND:
        return NotFoundError(f"{what} not found: {detail}")
    if kind is Failure.INVALID:
        return InvalidInputError(f"{what}: {detail}")
    if kind is Failure.EXISTS:
        return ConflictError(f"{what} already exists: {detail}")
    if kind is Failure.RACE:
        return ConflictError(f"{what}: lost a race with a concurrent write: {detail}")
    return HybridmlError(f"{what}: MLflow failed: {detail}")


def call(op: Callable[[], T], what: str, where: str) -> T:
    """``op()``, with a backend failure translated (once, no retry)."""
    try:
        return op()
    except Exception as exc:
        if not is_backend_error(exc):
            raise
        raise translate(exc, what, where) from exc
