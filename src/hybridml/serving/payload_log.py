"""JSON-lines payload log (request id, variant, inputs, outputs) and ground-truth feedback attached to request ids."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hybridml.errors import InvalidInputError

MAX_REQUEST_ID_CHARS = 128
MAX_FEEDBACK_ITEMS = 10_000


class JsonLinesLog:
    """Appends one JSON object per line; each line is a single ``write`` on an O_APPEND file, so several
    processes (the stable, canary and shadow workers) can share one file without interleaving lines.

    Args:
        path: file to append to (its directory is created).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line."""
        line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def payload_record(
    request_id: str, model: str, version: str, variant: str, matrix: np.ndarray, scores: np.ndarray
) -> dict[str, Any]:
    """One payload-log line: the validated model inputs (NaN as null) and the scores."""
    inputs: Any = matrix
    if np.isnan(matrix).any():
        inputs = [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]
    return {
        "ts": time.time(),
        "request_id": request_id,
        "model": model,
        "version": version,
        "variant": variant,
        "inputs": inputs,
        "outputs": scores,
    }


def check_request_id(value: Any) -> str:
    """A request id as accepted from clients: a non-empty printable string of at most 128 characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_REQUEST_ID_CHARS or not value.isprintable():
        raise InvalidInputError(f"request_id must be a printable string of 1-{MAX_REQUEST_ID_CHARS} characters")
    return value


def feedback_records(payload: Any, classes: tuple[str, str] | None) -> list[dict[str, Any]]:
    """Validate a ``/feedback`` body: ``{"request_id": ..., "label": ...}`` or ``{"items": [...]}``.

    Labels may be 0/1, true/false or one of the model's two class names (``classes``).

    Raises:
        InvalidInputError: naming the first malformed item.
    """
    if isinstance(payload, dict) and "items" in payload:
        items = payload["items"]
        if not isinstance(items, list) or not items:
            raise InvalidInputError("'items' must be a non-empty list of {request_id, label} objects")
    else:
        items = [payload]
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise InvalidInputError(f"at most {MAX_FEEDBACK_ITEMS} feedback items per request, got {len(items)}")
    now = time.time()
    records = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"request_id", "label"} or "label" not in item:
            raise InvalidInputError(f"feedback item {i} must be an object with exactly 'request_id' and 'label'")
        request_id = check_request_id(item.get("request_id"))
        records.append({"ts": now, "request_id": request_id, "label": _label(item["label"], classes, i)})
    return records


def _label(value: Any, classes: tuple[str, str] | None, i: int) -> int:
    if isinstance(value, bool):
        return int(value)
    if type(value) is int and value in (0, 1):
        return value
    if isinstance(value, str) and classes is not None and value in classes:
        return classes.index(value)
    allowed = "0, 1, true, false" + (f", {classes[0]!r}, {classes[1]!r}" if classes else "")
    raise InvalidInputError(f"feedback item {i}: label must be one of {allowed}, got {value!r}"[:300])
