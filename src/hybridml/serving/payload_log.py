"""JSON-lines payload log (versioned record of each scored request), its rotation, and ground-truth feedback."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hybridml.errors import InvalidInputError

RECORD_VERSION = 2
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP = 5
MAX_REQUEST_ID_CHARS = 128
MAX_FEEDBACK_ITEMS = 10_000


class JsonLinesLog:
    """Appends one JSON object per line, rotating the file by size; safe with several writer processes.

    Each line is a single ``write`` on an ``O_APPEND`` descriptor, so the stable, canary and shadow workers can
    share one file without interleaving or splitting lines. Rotation is done by one writer at a time, under an
    exclusive ``flock`` on the sidecar ``NAME.lock``: the first writer that finds its file at ``max_bytes`` or
    more (checked before each write, with one ``lseek``) renames ``NAME.k`` to ``NAME.k+1`` (dropping the one
    past ``keep``) and ``NAME`` to ``NAME.1``, and opens a new ``NAME``. The other writers still hold the old
    file; since a rotated file is always at or over ``max_bytes``, their next pre-write check sends them to the
    same lock, where they see that ``NAME`` is another file and reopen it. So every line lands whole in one
    file, and no writer appends to a rotated file after it noticed the rotation. See docs/payload-log.md.

    Args:
        path: file to append to (its directory is created).
        max_bytes: rotate once the file has reached this size (0: never rotate).
        keep: rotated files kept besides the live one (``NAME.1`` newest ... ``NAME.keep`` oldest).
    """

    def __init__(self, path: str | Path, *, max_bytes: int = 0, keep: int = DEFAULT_KEEP) -> None:
        if max_bytes < 0:
            raise InvalidInputError(f"payload log max bytes must be 0 (no rotation) or more, got {max_bytes}")
        if keep < 0:
            raise InvalidInputError(f"payload log keep must be 0 or more, got {keep}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._lock = threading.Lock()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line (rotating first if the file is full)."""
        line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            if self.max_bytes and os.lseek(self._fd, 0, os.SEEK_END) >= self.max_bytes:
                self._rotate()
            os.write(self._fd, line)

    def _rotate(self) -> None:
        """Rotate the full file, or reopen ``path`` if another writer already did (called under self._lock)."""
        lock = os.open(f"{self.path}.lock", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            mine = os.fstat(self._fd)
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                if current.st_size < self.max_bytes:
                    return  # truncated by someone else since the check: nothing to rotate
                self._shift()
            os.close(self._fd)
            self._fd = self._open()
        finally:
            os.close(lock)  # closing the descriptor releases the flock

    def _shift(self) -> None:
        """``NAME.k`` -> ``NAME.k+1`` for k = keep-1 ... 1, then ``NAME`` -> ``NAME.1``; the oldest beyond keep goes."""
        if self.keep == 0:
            os.unlink(self.path)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}.{self.keep}")
        for k in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self.path}.{k}", f"{self.path}.{k + 1}")
        os.rename(self.path, f"{self.path}.1")

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def log_files(path: str | Path) -> list[Path]:
    """The files of a rotated log, oldest first: ``NAME.k`` ... ``NAME.1``, then ``NAME`` (those that exist)."""
    path = Path(path)
    rotated = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    files = [p for _, p in sorted(rotated, reverse=True)]
    return [*files, path] if path.exists() else files


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every record of a (rotated) JSON-lines log, oldest file first.

    Raises:
        InvalidInputError: a line that is not a JSON object, naming the file and line number.
    """
    for file in log_files(path):
        with file.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise InvalidInputError(f"{file}:{number}: not a JSON line: {exc}") from None
                if not isinstance(record, dict):
                    raise InvalidInputError(f"{file}:{number}: not a JSON object")
                yield record


def payload_record(
    request_id: str,
    model: str,
    version: str,
    variant: str,
    schema_hash: str,
    inputs: list[dict[str, Any]],
    unknown_categories: list[list[str]],
    scores: np.ndarray,
) -> dict[str, Any]:
    """One payload-log line, format ``RECORD_VERSION`` (documented field by field in docs/payload-log.md).

    Args:
        request_id: the request's id (``X-Request-Id``).
        model: model name.
        version: version that scored the request.
        variant: variant that scored it, as the router decided (stable, canary, shadow).
        schema_hash: ``FeatureSchema.schema_hash`` of the model.
        inputs: one ``{feature: value as sent}`` object per row.
        unknown_categories: per row, the names of the category features whose value the schema did not know.
        scores: positive-class probability per row.
    """
    return {
        "record_version": RECORD_VERSION,
        "ts": time.time(),
        "request_id": request_id,
        "model": model,
        "version": version,
        "variant": variant,
        "schema_hash": schema_hash,
        "inputs": inputs,
        "unknown_categories": unknown_categories,
        "outputs": scores,
    }


def check_request_id(value: Any) -> str:
    """A request id as accepted from clients: a non-empty printable string of at most 128 characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_REQUEST_ID_CHARS or not value.isprintable():
        raise InvalidInputError(f"request_id must be a printable string of 1-{MAX_REQUEST_ID_CHARS} characters")
    return value


def feedback_records(payload: Any, classes: tuple[str, str] | None) -> list[dict[str, Any]]:
    """Validate a ``/feedback`` body: ``{"request_id": ..., "label": ...}`` or ``{"items": [...]}``.

    Labels are values of the target column as in the training table (one of ``classes``), or 0/1 and
    true/false for negative/positive when the classes have other names (see :func:`_label`).

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
    """The encoded label (1 = the positive class, ``classes[1]``) of a feedback label.

    A label is first read as a value of the training table's target column, compared as text the way training
    encoded it, so ``1`` means the class ``"1"`` even when ``--positive-class 0`` made ``"0"`` the positive one.
    Only when it names no class do 0/1 and false/true mean negative/positive.
    """
    if isinstance(value, bool | int | str) and classes is not None:
        text = str(value)
        if text in classes:
            return classes.index(text)
    if isinstance(value, bool):
        return int(value)
    if type(value) is int and value in (0, 1):
        return value
    allowed = "0, 1, true, false" + (f", {classes[0]!r}, {classes[1]!r}" if classes else "")
    raise InvalidInputError(f"feedback item {i}: label must be one of {allowed}, got {value!r}"[:300])
