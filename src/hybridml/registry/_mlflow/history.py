"""History events encoded as MLflow tags (pure): one tag per event, so concurrent writers never collide."""

from __future__ import annotations

import json
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from hybridml.registry.protocol import HistoryEvent

HISTORY_PREFIX = "hybridml.history."
REGISTERED = "registered"
STATUS = "status"
ALIAS = "alias"
ACTIONS = (REGISTERED, STATUS, ALIAS)
# Events other parts of the platform record about a version (the registry writes the three above itself).
DEPLOYMENT = "deployment"  # a target applied, promoted, rolled back or deleted an endpoint of the version
CANARY = "canary"  # a canary analysis decided promote / continue / rollback, with its figures
MIRROR = "mirror"  # an approval status mirrored to or pulled from another registry (SageMaker)
MONITOR = "monitor"  # drift found, or a retraining run started because of the version's traffic
RECORDED_ACTIONS = (DEPLOYMENT, CANARY, MIRROR, MONITOR)

# Registered-model tag values are VARCHAR(5000) in MLflow's SQL schema (PostgreSQL enforces it), so an event,
# JSON-encoded, must stay well below that; the reason is the only free-text part and is cut first.
MAX_REASON_CHARS = 1000
MAX_FIELD_CHARS = 300
_ELLIPSIS = "…"

_last_ns = 0
_last_ns_lock = threading.Lock()


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + _ELLIPSIS


def event_key(clock_s: float) -> str:
    """A tag key that sorts by time and is unique even for events written in the same nanosecond.

    Within one process keys strictly increase, so a status change and the alias move it causes keep their
    order even under a coarse or frozen clock; across processes the random suffix keeps keys distinct.
    """
    global _last_ns
    with _last_ns_lock:
        ns = max(int(clock_s * 1e9), _last_ns + 1)
        _last_ns = ns
    # 20 zero-padded digits keep lexicographic order equal to numeric order for centuries.
    return f"{HISTORY_PREFIX}{ns:020d}-{secrets.token_hex(4)}"


def iso_utc(clock_s: float) -> str:
    """ISO-8601 UTC timestamp with millisecond precision and a ``Z`` suffix."""
    return datetime.fromtimestamp(clock_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(
    *, clock_s: float, actor: str, action: str, version: int | None, detail: str, reason: str
) -> tuple[str, str]:
    """The (tag key, tag value) that stores one event."""
    value = json.dumps(
        {
            "at": iso_utc(clock_s),
            "actor": truncate(actor, MAX_FIELD_CHARS),
            "action": action,
            "version": version,
            "detail": truncate(detail, MAX_FIELD_CHARS),
            "reason": truncate(reason, MAX_REASON_CHARS),
        },
        ensure_ascii=False,
        sort_keys=True,
    )
    return event_key(clock_s), value


def decode(model: str, key: str, value: str) -> HistoryEvent | None:
    """The event stored under ``key``, or None if the tag is not a (well-formed) history event.

    A malformed tag (written by hand, or by a future format) is skipped rather than failing the whole history.
    """
    if not key.startswith(HISTORY_PREFIX):
        return None
    try:
        raw: dict[str, Any] = json.loads(value)
        version = raw.get("version")
        return HistoryEvent(
            at=str(raw["at"]),
            actor=str(raw.get("actor", "")),
            action=str(raw["action"]),
            model=model,
            version=None if version is None else int(version),
            detail=str(raw.get("detail", "")),
            reason=str(raw.get("reason", "")),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def collect(model: str, tags: dict[str, str]) -> list[tuple[str, HistoryEvent]]:
    """All history events among ``tags`` as (sort key, event) pairs."""
    events = []
    for key, value in tags.items():
        event = decode(model, key, value)
        if event is not None:
            events.append((key.removeprefix(HISTORY_PREFIX), event))
    return events


def ordered(pairs: list[tuple[str, HistoryEvent]]) -> list[HistoryEvent]:
    """Events sorted by the time encoded in their keys (ties broken by the random suffix)."""
    return [event for _, event in sorted(pairs, key=lambda pair: pair[0])]


def mentions(detail: str, number: int) -> bool:
    """Whether an alias event's detail (``alias: old -> new``) names ``number`` on either side."""
    _, _, moves = detail.partition(": ")
    return str(number) in {side.strip() for side in moves.split("->")}
