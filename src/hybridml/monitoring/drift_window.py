"""The rows a drift check compares with the reference profile: the last rows of a payload log, or a data file."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybridml.core.schema import CATEGORY, FeatureSchema
from hybridml.errors import InvalidInputError
from hybridml.serving.payload_log import RECORD_VERSION

DEFAULT_WINDOW = 10_000


@dataclass
class Window:
    """Feature columns (schema names to values, one per row), the model's scores on them when known.

    ``skipped`` counts payload records left out because their format is not this one (record version 1).
    """

    columns: dict[str, Any]
    scores: np.ndarray | None
    rows: int
    source: str
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def _check_window(size: int) -> int:
    if type(size) is not int or size < 1:
        raise InvalidInputError(f"window must be a whole number of rows of 1 or more, got {size!r}")
    return size


def _score(value: Any) -> float:
    """A logged score as a float; anything that is not a number counts as missing (NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


class RowBuffer:
    """The last ``size`` rows (and their scores) of payload records of one model (and version), in log order.

    Records of other models or versions, and of another record format, are left out; ``add`` can be called as
    new records arrive (the watch job), so the buffer always holds the latest window.
    """

    def __init__(self, names: list[str], size: int, *, model: str | None = None, version: str | None = None) -> None:
        self.names = names
        self.size = _check_window(size)
        self.model = model
        self.version = version
        self._rows: collections.deque[tuple[dict[str, Any], float]] = collections.deque(maxlen=self.size)
        self.skipped = 0
        self.records = 0

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        """Take the rows of ``records`` that belong to this model and version."""
        for record in records:
            if self.model is not None and record.get("model") != self.model:
                continue
            if self.version is not None and str(record.get("version", "")) != self.version:
                continue
            inputs, outputs = record.get("inputs"), record.get("outputs")
            if record.get("record_version") != RECORD_VERSION or not isinstance(inputs, list):
                self.skipped += 1
                continue
            if not isinstance(outputs, list) or len(outputs) != len(inputs):
                self.skipped += 1
                continue
            self.records += 1
            self._rows.extend(
                (row if isinstance(row, dict) else {}, _score(score))
                for row, score in zip(inputs, outputs, strict=True)
            )

    def __len__(self) -> int:
        return len(self._rows)

    def window(self, source: str) -> Window:
        """The buffered rows as a :class:`Window` (a feature a row lacks is missing there)."""
        rows = list(self._rows)
        columns = {name: [row.get(name) for row, _ in rows] for name in self.names}
        scores = np.fromiter((score for _, score in rows), dtype=np.float64, count=len(rows))
        notes = [f"left out {self.skipped} payload record(s) of another record format"] if self.skipped else []
        return Window(columns, scores, len(rows), source, self.skipped, notes)


def from_payload_log(
    path: str | Path, schema: FeatureSchema, *, model: str, version: str | None, size: int = DEFAULT_WINDOW
) -> Window:
    """The last ``size`` rows the server logged for ``model`` (and ``version`` when given) in a payload log.

    Raises:
        NotFoundError: the log does not exist.
        InvalidInputError: a line is not a JSON object, or the log holds no row of this model.
    """
    from hybridml.errors import NotFoundError
    from hybridml.serving.payload_log import log_files, read_records

    if not log_files(path):
        raise NotFoundError(f"payload log not found: {path}")
    buffer = RowBuffer(schema.names, size, model=model, version=version)
    buffer.add(read_records(path))
    if not len(buffer):
        which = f"{model!r} version {version}" if version else repr(model)
        raise InvalidInputError(f"payload log {path} holds no rows of model {which}")
    return buffer.window(f"payload log {path}")


def from_file(path: str | Path, schema: FeatureSchema, size: int | None = None) -> Window:
    """The feature columns of a CSV or Parquet file (the target and other columns left out; the last ``size``).

    Numeric features are read as numbers, with text counted as missing (as the reference profile counted it).

    Raises:
        NotFoundError: the file does not exist.
        InvalidInputError: unreadable, empty, or lacking a feature column of the schema (named).
    """
    import pandas as pd

    from hybridml.core.data import load_table

    frame = load_table(path)
    lacking = [name for name in schema.names if name not in frame.columns]
    if lacking:
        raise InvalidInputError(f"data file {path} has no column for feature(s) {lacking}")
    if size is not None:
        frame = frame.tail(_check_window(size))
    columns: dict[str, Any] = {}
    for spec in schema.features:
        column = frame[spec.name]
        columns[spec.name] = column if spec.dtype == CATEGORY else pd.to_numeric(column, errors="coerce")
    return Window(columns, None, len(frame), f"file {path}")
