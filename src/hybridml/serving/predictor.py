"""Load a model bundle and score rows only after checking them strictly against the bundle's feature schema."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hybridml.core.model import XGBOOST, Bundle, Classifier, load_estimator, positive_scores, read_bundle
from hybridml.core.schema import BOOLEAN, CATEGORY, FeatureSchema, FeatureSpec
from hybridml.errors import InvalidInputError, PayloadTooLargeError
from hybridml.serving.native import PROBABILITY_OBJECTIVES, NativeBooster

DEFAULT_MAX_ROWS = 10_000
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_NAMES_SHOWN = 5
_PLAIN_NUMBERS = frozenset({float, int})

Converter = Callable[[Any], float]


class SentValues(Protocol):
    """A request's values as sent, read by schema position (see hybridml.serving.protocol)."""

    def value(self, row: int, feature: int) -> Any:
        """The value sent for ``feature`` in ``row``."""
        ...


class _BadValueError(Exception):
    """One value does not fit its feature; the caller adds the row and feature to the message."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_NAMES_SHOWN])
    return shown + (f" and {len(names) - _MAX_NAMES_SHOWN} more" if len(names) > _MAX_NAMES_SHOWN else "")


def _is_nan(value: Any) -> bool:
    return isinstance(value, float | np.floating) and math.isnan(value)


def _converter(spec: FeatureSpec) -> Converter:
    """A function turning one request value of ``spec`` into the float the model sees, or raising _BadValueError."""

    def missing() -> float:
        if not spec.nullable:
            raise _BadValueError("is missing (null/NaN), but the model was trained without missing values for it")
        return math.nan

    if spec.dtype == CATEGORY:
        index = {c: float(i) for i, c in enumerate(spec.categories)}

        def category(value: Any) -> float:
            if value is None or _is_nan(value):
                return missing()
            if isinstance(value, str | int | float | np.number | np.bool_):
                # Same rule as core.data.encode_features: match on str(value), unknown categories become NaN.
                return index.get(str(value), math.nan)
            raise _BadValueError(f"must be a category string, got {_show(value)}")

        return category

    if spec.dtype == BOOLEAN:

        def boolean(value: Any) -> float:
            if value is None or _is_nan(value):
                return missing()
            if isinstance(value, bool | np.bool_):
                return float(value)
            if isinstance(value, numbers.Real) and value in (0, 1):
                return float(value)
            raise _BadValueError(f"must be true/false (or 0/1), got {_show(value)}")

        return boolean

    def number(value: Any) -> float:
        kind = type(value)
        if kind is float or kind is int:  # the common case first: plain JSON numbers
            try:
                x = float(value)
            except OverflowError:  # an int beyond float range (from the Python API; JSON cannot carry one)
                raise _BadValueError(f"is out of range: {_show(value)}") from None
        elif value is None:
            return missing()
        elif isinstance(value, bool | np.bool_):
            # bool is an int in Python; a JSON true in a numeric column is almost always a client mix-up.
            raise _BadValueError(f"must be a number, got boolean {_show(value)}")
        elif isinstance(value, numbers.Real):
            try:
                x = float(value)
            except OverflowError:
                raise _BadValueError(f"is out of range: {_show(value)}") from None
        else:
            raise _BadValueError(f"must be a number, got {type(value).__name__} {_show(value)}")
        if math.isnan(x):
            return missing()
        if not math.isfinite(x) or abs(x) > _FLOAT32_MAX:
            # The model computes in float32: anything beyond its range would silently become infinite.
            raise _BadValueError(f"must be finite, got {_show(value)}")
        return x

    return number


class BundlePredictor:
    """A loaded model bundle that validates every request against its schema before scoring it.

    Args:
        bundle: the bundle's manifest (from :func:`hybridml.core.model.read_bundle`).
        estimator: the loaded estimator of that bundle.
        max_rows: largest batch accepted; larger ones raise :class:`PayloadTooLargeError`.
    """

    def __init__(
        self,
        bundle: Bundle,
        estimator: Classifier | None,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        booster: NativeBooster | None = None,
    ) -> None:
        if max_rows < 1:
            raise InvalidInputError(f"max_rows must be at least 1, got {max_rows}")
        if estimator is None and booster is None:
            raise InvalidInputError("a predictor needs an estimator or a native booster")
        self.bundle = bundle
        self.estimator = estimator
        self.max_rows = max_rows
        self._converters = [_converter(spec) for spec in bundle.schema.features]
        self._feature_names = tuple(bundle.schema.names)
        self._position = {name: i for i, name in enumerate(self._feature_names)}
        # Columns left out at training (identifiers such as a row number, or dropped on request): a client that
        # sends whole rows of the training table includes them, so they are accepted and ignored.
        self._ignored = frozenset(bundle.schema.dropped)
        # Positions of category features: unknown categories are encoded as missing, told apart afterwards.
        self._category_columns = tuple(i for i, spec in enumerate(bundle.schema.features) if spec.dtype == CATEGORY)
        self._category_index = np.array(self._category_columns, dtype=np.intp)
        # Schemas of plain numbers only can take the vectorised fast path of encode().
        self._all_numeric = all(spec.dtype not in (CATEGORY, BOOLEAN) for spec in bundle.schema.features)
        self._nullable = np.array([spec.nullable for spec in bundle.schema.features], dtype=bool)
        self._native = booster
        self._booster: Any = booster
        if booster is None and bundle.model_type == XGBOOST and estimator is not None:
            self._booster = _logistic_booster(estimator)

    @classmethod
    def load(cls, model_dir: str | Path, *, max_rows: int = DEFAULT_MAX_ROWS) -> BundlePredictor:
        """Read and load the bundle in ``model_dir``.

        XGBoost models with a probability objective are loaded through libxgboost directly (fast start);
        everything else through :func:`hybridml.core.model.load_estimator`.

        Raises:
            InvalidInputError: the directory is not a valid bundle or its model file cannot be loaded.
        """
        bundle = read_bundle(model_dir)
        if bundle.model_type == XGBOOST:
            try:
                native = NativeBooster(bundle.path / bundle.model_file)
            except InvalidInputError as exc:
                raise InvalidInputError(f"cannot load model file {bundle.path / bundle.model_file}: {exc}") from exc
            if native.objective in PROBABILITY_OBJECTIVES:
                if native.n_features != len(bundle.schema.features):
                    raise InvalidInputError(
                        f"model file has {native.n_features} features, its schema {len(bundle.schema.features)}"
                    )
                return cls(bundle, None, max_rows=max_rows, booster=native)
        try:
            estimator = load_estimator(bundle)
        except InvalidInputError:
            raise
        except Exception as exc:  # xgboost/skops raise many types for a corrupt file; all mean "bad bundle"
            raise InvalidInputError(f"cannot load model file {bundle.path / bundle.model_file}: {exc}") from exc
        return cls(bundle, estimator, max_rows=max_rows)

    @property
    def schema(self) -> FeatureSchema:
        """The feature schema requests are checked against."""
        return self.bundle.schema

    @property
    def feature_names(self) -> list[str]:
        """Feature names in model input order."""
        return self.bundle.schema.names

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in model input order (one shared tuple, no copy per call)."""
        return self._feature_names

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return len(self.bundle.schema.features)

    def check_batch_size(self, n: int) -> None:
        """Raise for an empty batch (400) or one above ``max_rows`` (413)."""
        if n == 0:
            raise InvalidInputError("request has no rows")
        if n > self.max_rows:
            raise PayloadTooLargeError(f"request has {n} rows, at most {self.max_rows} are accepted per request")

    def _convert(self, value: Any, row: int, feature: int) -> float:
        try:
            return self._converters[feature](value)
        except _BadValueError as exc:
            spec = self.bundle.schema.features[feature]
            raise InvalidInputError(f"row {row}, feature {spec.name!r} ({spec.dtype}) {exc}") from None

    def encode(self, rows: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Validate ``rows`` and return the float32 matrix the model takes.

        Args:
            rows: a list of rows, each either a list of exactly ``n_features`` values in schema order
                or a dict mapping every feature name to its value.

        Raises:
            InvalidInputError: naming the first problem found (shape, names, types, missing or infinite values).
            PayloadTooLargeError: more than ``max_rows`` rows.
        """
        if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Sequence | np.ndarray):
            raise InvalidInputError(f"rows must be a list of lists or a list of objects, got {type(rows).__name__}")
        n, width = len(rows), self.n_features
        self.check_batch_size(n)
        fast = self._encode_plain(rows, width) if self._all_numeric else None
        if fast is not None:
            return fast
        matrix = np.empty((n, width), dtype=np.float64)
        for r, row in enumerate(rows):
            if isinstance(row, Mapping):
                matrix[r] = self._encode_named(row, r)
            elif isinstance(row, list | tuple | np.ndarray):
                if len(row) != width:
                    raise InvalidInputError(f"row {r} has {len(row)} values, model expects {width} features")
                matrix[r] = [self._convert(v, r, j) for j, v in enumerate(row)]
            else:
                raise InvalidInputError(f"row {r} must be a list of values or an object of named values: {_show(row)}")
        return matrix.astype(np.float32)

    def _encode_plain(self, rows: Sequence[Any], width: int) -> np.ndarray | None:
        """The matrix of ``rows`` if every row is a list of ``width`` plain finite JSON numbers, else None.

        Checks in bulk what :meth:`_convert` checks per value; anything unusual (null, bool, strings, ragged
        rows, huge values) returns None so the per-value path produces the exact error message.
        """
        if any(type(row) is not list or len(row) != width for row in rows):
            return None
        if {type(v) for row in rows for v in row} - _PLAIN_NUMBERS:
            return None
        return self.plain_matrix(rows, (len(rows), width))

    def plain_matrix(self, values: Sequence[Any] | np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
        """Float32 matrix of already type-checked plain numbers (nested rows or flat), or None if out of range."""
        try:
            matrix = np.array(values, dtype=np.float64).reshape(shape)
        except (OverflowError, ValueError):
            return None
        # One reduction checks range and finiteness: NaN fails the comparison, +-inf is above the bound.
        if matrix.size and not np.abs(matrix).max() <= _FLOAT32_MAX:
            return None
        return matrix.astype(np.float32)

    @property
    def all_numeric(self) -> bool:
        """Whether every feature is a plain number (no category or boolean), so a single matrix can carry them."""
        return self._all_numeric

    def _encode_named(self, row: Mapping[str, Any], r: int) -> list[float]:
        unknown = [str(k) for k in row if k not in self._position and k not in self._ignored]
        if unknown:
            raise InvalidInputError(f"row {r} has unknown features {_names(unknown)}")
        missing = [n for n in self._feature_names if n not in row]
        if missing:
            raise InvalidInputError(f"row {r} is missing features {_names(missing)}")
        return [self._convert(row[name], r, j) for j, name in enumerate(self._feature_names)]

    def encode_columns(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Validate one value list per feature (V2 per-feature tensors) and return the float32 model matrix.

        Raises:
            InvalidInputError: unknown or missing feature names, columns of different lengths, or bad values.
            PayloadTooLargeError: more than ``max_rows`` rows.
        """
        if not isinstance(columns, Mapping):
            raise InvalidInputError(f"columns must map feature names to values, got {type(columns).__name__}")
        unknown = [str(k) for k in columns if k not in self._position and k not in self._ignored]
        if unknown:
            raise InvalidInputError(f"unknown features {_names(unknown)}")
        columns = {name: values for name, values in columns.items() if name in self._position}
        for name, values in columns.items():
            if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence | np.ndarray):
                raise InvalidInputError(f"feature {name!r} must be a list of values, got {type(values).__name__}")
        missing = [n for n in self.feature_names if n not in columns]
        if missing:
            raise InvalidInputError(f"missing features {_names(missing)}")
        lengths = {name: len(values) for name, values in columns.items()}
        n = lengths[self.feature_names[0]]
        uneven = [name for name, length in lengths.items() if length != n]
        if uneven:
            raise InvalidInputError(
                f"features have different numbers of values: {self.feature_names[0]!r} has {n},"
                f" {uneven[0]!r} has {lengths[uneven[0]]}"
            )
        self.check_batch_size(n)
        matrix = np.empty((n, self.n_features), dtype=np.float64)
        for j, name in enumerate(self.feature_names):
            matrix[:, j] = [self._convert(v, r, j) for r, v in enumerate(columns[name])]
        return matrix.astype(np.float32)

    @property
    def category_features(self) -> tuple[int, ...]:
        """Schema positions of the category features."""
        return self._category_columns

    def unknown_categories(self, matrix: np.ndarray, sent: SentValues) -> Sequence[tuple[int, int]]:
        """(row, feature position) of every category value sent that the schema does not know.

        Such values are encoded as missing (as in training); a missing cell whose sent value is not null/NaN is
        one. Only the few missing category cells are looked at, so a request without gaps costs one ``isnan``.

        Args:
            matrix: the encoded matrix of the request.
            sent: the request's values as sent, with ``value(row, feature)``.
        """
        if not self._category_columns:
            return ()
        missing = np.isnan(matrix[:, self._category_index])
        if not missing.any():
            return ()
        found = []
        for r, c in zip(*np.nonzero(missing), strict=True):
            j = self._category_columns[c]
            value = sent.value(int(r), j)
            if value is not None and not _is_nan(value):
                found.append((int(r), j))
        return found

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """Positive-class probabilities for an already validated matrix from :meth:`encode`."""
        if self._native is not None:
            return self._native.predict(matrix)
        if self._booster is not None:
            return np.asarray(self._booster.inplace_predict(matrix, validate_features=False), dtype=np.float64)
        assert self.estimator is not None  # __init__ requires one of the two
        # predict_proba(...)[:, 1] is a strided view; the encoders (orjson, binary output) need contiguous data.
        return np.ascontiguousarray(positive_scores(self.estimator, matrix), dtype=np.float64)

    def predict(self, rows: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]) -> list[float]:
        """Validate ``rows`` (see :meth:`encode`) and return the positive-class probability of each."""
        return [float(p) for p in self.scores(self.encode(rows))]


def _logistic_booster(estimator: Classifier) -> Any:
    """The XGBoost booster if its raw output already is the positive-class probability, else None.

    ``inplace_predict`` skips the DMatrix copy ``predict_proba`` would make, but returns the objective's raw
    output; only ``binary:logistic`` gives probabilities directly.
    """
    booster = estimator.get_booster()  # type: ignore[attr-defined]
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    return booster if objective == "binary:logistic" else None
