"""Reference profile: what the training data and the model's test scores looked like, for drift monitoring.

Computed once per model, on the training split (features) and the test split (predicted scores), and saved in
the model bundle as ``profile.json``. A monitor recomputes the same shares on live inputs with
:func:`bin_shares`, :func:`category_shares` and :func:`missing_share` and compares them. The format is
documented in ``docs/reference-profile.md``.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported only where a profile is built: the predictor image has no pandas
    import pandas as pd

from hybridml.core.schema import CATEGORY, FeatureSchema
from hybridml.errors import InvalidInputError

PROFILE_FORMAT_VERSION = 2
# Versions this code reads: 1 (bins only) and 2 (bins, a quantile sketch and the count of values).
READABLE_VERSIONS = (1, 2)
N_BINS = 10
# Points of the quantile sketch (0%, 1%, ..., 100%): the reference CDF a Kolmogorov-Smirnov test needs.
QUANTILE_POINTS = 101
# Fixed edges for predicted scores, written as i/10 so they print exactly (0.3, not 0.30000000000000004).
SCORE_EDGES: tuple[float, ...] = tuple(i / N_BINS for i in range(N_BINS + 1))
# Shares are floats written as JSON; they sum to 1 up to this tolerance.
_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class NumericProfile:
    """Binned distribution of one numeric feature (or of the predicted scores).

    ``edges`` are ``len(shares) + 1`` non-decreasing finite numbers; bin ``i`` is ``[edges[i], edges[i+1])`` and
    the last bin is closed. ``shares`` are the share of non-missing values in each bin (they sum to 1);
    ``missing`` is the share of rows with no value. Both are empty when the split held no value at all.
    ``quantiles`` (format 2) are the values at 0%, 1%, ..., 100% of the non-missing values (empty when there were
    none) and ``count`` the number of non-missing values; both are ``()``/``None`` in a format-1 profile.
    """

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    missing: float
    quantiles: tuple[float, ...] = ()
    count: int | None = None


@dataclass(frozen=True)
class CategoricalProfile:
    """Distribution of one categorical feature: share of non-missing values per category, and missing share.

    ``count`` (format 2) is the number of non-missing values; ``None`` in a format-1 profile.
    """

    shares: dict[str, float]
    missing: float
    count: int | None = None


@dataclass(frozen=True)
class ReferenceProfile:
    """Per-feature distributions of the training split and the distribution of test-split scores."""

    format_version: int
    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    scores: NumericProfile

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``profile.json`` holds), in this profile's own format version."""
        sketch = self.format_version >= 2  # a format-1 profile read back is written back as it was
        return {
            "format_version": self.format_version,
            "numeric": {name: _numeric_dict(p, sketch) for name, p in self.numeric.items()},
            "categorical": {name: _categorical_dict(p, sketch) for name, p in self.categorical.items()},
            "scores": _numeric_dict(self.scores, sketch),
        }

    @property
    def has_sketch(self) -> bool:
        """Whether the profile carries quantile sketches and counts (format 2 and later)."""
        return self.format_version >= 2

    @classmethod
    def from_dict(cls, raw: Any) -> ReferenceProfile:
        """Rebuild a profile from :meth:`to_dict` output, refusing anything malformed.

        Raises:
            InvalidInputError: naming the first malformed field, e.g. ``numeric['age'].shares``.
        """
        if not isinstance(raw, Mapping):
            raise InvalidInputError(f"malformed reference profile: expected an object, got {type(raw).__name__}")
        version = raw.get("format_version")
        if type(version) is not int:
            raise InvalidInputError(f"malformed reference profile: format_version must be an integer, got {version!r}")
        if version not in READABLE_VERSIONS:
            raise InvalidInputError(
                f"reference profile format_version {version} is not supported (this hybridml reads"
                f" {', '.join(map(str, READABLE_VERSIONS))})"
            )
        sketch = version >= 2
        numeric = _mapping(raw, "numeric", "numeric")
        categorical = _mapping(raw, "categorical", "categorical")
        if "scores" not in raw:
            raise InvalidInputError("malformed reference profile: scores is missing")
        return cls(
            format_version=version,
            numeric={str(n): _numeric_from(p, f"numeric[{n!r}]", sketch) for n, p in numeric.items()},
            categorical={str(n): _categorical_from(p, f"categorical[{n!r}]", sketch) for n, p in categorical.items()},
            scores=_numeric_from(raw["scores"], "scores", sketch),
        )


def _numeric_dict(profile: NumericProfile, sketch: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"edges": list(profile.edges), "shares": list(profile.shares), "missing": profile.missing}
    if sketch:
        out.update(quantiles=list(profile.quantiles), count=profile.count)
    return out


def _categorical_dict(profile: CategoricalProfile, sketch: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"shares": dict(profile.shares), "missing": profile.missing}
    if sketch:
        out["count"] = profile.count
    return out


def _bad(field: str, problem: str) -> InvalidInputError:
    return InvalidInputError(f"malformed reference profile: {field} {problem}")


def _mapping(raw: Mapping[str, Any], key: str, field: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if not isinstance(value, Mapping):
        raise _bad(field, f"must be an object, got {type(value).__name__}")
    return value


def _number(value: Any, field: str) -> float:
    # bool is an int subclass; a JSON true where a number belongs is a malformed file, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(field, f"must be a finite number, got {value!r}")
    return float(value)


def _share(value: Any, field: str) -> float:
    share = _number(value, field)
    if not 0.0 <= share <= 1.0:
        raise _bad(field, f"must be between 0 and 1, got {share}")
    return share


def _count(raw: Mapping[str, Any], field: str) -> int:
    if "count" not in raw:
        raise _bad(f"{field}.count", "is missing")
    value = raw["count"]
    if type(value) is not int or value < 0:
        raise _bad(f"{field}.count", f"must be a whole number of 0 or more, got {value!r}")
    return value


def _quantiles(raw: Mapping[str, Any], field: str, count: int) -> tuple[float, ...]:
    if "quantiles" not in raw:
        raise _bad(f"{field}.quantiles", "is missing")
    values = raw["quantiles"]
    if not isinstance(values, list | tuple):
        raise _bad(f"{field}.quantiles", f"must be a list, got {type(values).__name__}")
    quantiles = tuple(_number(q, f"{field}.quantiles[{i}]") for i, q in enumerate(values))
    expected = QUANTILE_POINTS if count else 0
    if len(quantiles) != expected:
        raise _bad(f"{field}.quantiles", f"must hold {expected} values for count {count}, got {len(quantiles)}")
    if any(b < a for a, b in itertools.pairwise(quantiles)):
        raise _bad(f"{field}.quantiles", "must be non-decreasing")
    return quantiles


def _check_sum(shares: Iterable[float], missing: float, field: str) -> None:
    total = math.fsum(shares)
    # Shares are of non-missing values: they sum to 1, or to 0 when every row was missing.
    if abs(total - 1.0) > _SUM_TOLERANCE and not (total == 0.0 and missing == 1.0):
        raise _bad(f"{field}.shares", f"must sum to 1, got {total}")


def _numeric_from(raw: Any, field: str, sketch: bool) -> NumericProfile:
    if not isinstance(raw, Mapping):
        raise _bad(field, f"must be an object, got {type(raw).__name__}")
    for key in ("edges", "shares", "missing"):
        if key not in raw:
            raise _bad(f"{field}.{key}", "is missing")
    edges_raw, shares_raw = raw["edges"], raw["shares"]
    for key, value in (("edges", edges_raw), ("shares", shares_raw)):
        if not isinstance(value, list | tuple):
            raise _bad(f"{field}.{key}", f"must be a list, got {type(value).__name__}")
    edges = tuple(_number(e, f"{field}.edges[{i}]") for i, e in enumerate(edges_raw))
    shares = tuple(_share(s, f"{field}.shares[{i}]") for i, s in enumerate(shares_raw))
    missing = _share(raw["missing"], f"{field}.missing")
    if len(edges) == 1:
        raise _bad(f"{field}.edges", "must hold at least 2 edges (or none when there were no values)")
    if any(b < a for a, b in itertools.pairwise(edges)):
        raise _bad(f"{field}.edges", f"must be non-decreasing, got {list(edges)}")
    n_bins = max(len(edges) - 1, 0)
    if len(shares) != n_bins:
        raise _bad(f"{field}.shares", f"must hold {n_bins} values for {len(edges)} edges, got {len(shares)}")
    _check_sum(shares, missing, field)
    if not sketch:
        return NumericProfile(edges=edges, shares=shares, missing=missing)
    count = _count(raw, field)
    if (count == 0) != (n_bins == 0):
        raise _bad(f"{field}.count", f"must be 0 exactly when there are no bins, got {count} for {n_bins} bins")
    return NumericProfile(
        edges=edges, shares=shares, missing=missing, quantiles=_quantiles(raw, field, count), count=count
    )


def _categorical_from(raw: Any, field: str, sketch: bool) -> CategoricalProfile:
    if not isinstance(raw, Mapping):
        raise _bad(field, f"must be an object, got {type(raw).__name__}")
    for key in ("shares", "missing"):
        if key not in raw:
            raise _bad(f"{field}.{key}", "is missing")
    shares_raw = raw["shares"]
    if not isinstance(shares_raw, Mapping):
        raise _bad(f"{field}.shares", f"must be an object of category: share, got {type(shares_raw).__name__}")
    shares = {str(c): _share(s, f"{field}.shares[{c!r}]") for c, s in shares_raw.items()}
    missing = _share(raw["missing"], f"{field}.missing")
    _check_sum(shares.values(), missing, field)
    return CategoricalProfile(shares=shares, missing=missing, count=_count(raw, field) if sketch else None)


# ------------------------------------------------------------------------------------------------ pure helpers


def _floats(values: Sequence[float | None] | np.ndarray | pd.Series) -> np.ndarray:
    """Values as float64, with None (and NaN) as NaN."""
    pd = sys.modules.get("pandas")  # a Series can only exist where pandas was imported
    if pd is not None and isinstance(values, pd.Series) and values.dtype == np.float64:
        return values.to_numpy()  # already NaN-for-missing floats: no copy (drift reads 100k-row columns)
    if pd is not None and isinstance(values, pd.Series) and pd.api.types.is_numeric_dtype(values.dtype):
        # Nullable dtypes (Int64, boolean, Float64) hold pd.NA, which numpy cannot cast on its own.
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64)
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"values must be numbers or None: {exc}") from exc


def missing_share(values: Sequence[Any] | np.ndarray | pd.Series) -> float:
    """Share of values that are missing (``None`` or NaN); ``0.0`` for no values."""
    if len(values) == 0:
        return 0.0
    import pandas as pd

    return float(pd.isna(values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)).mean())


def _check_edges(edges: Sequence[float]) -> np.ndarray:
    array = np.asarray(edges, dtype=np.float64)
    if array.ndim != 1 or array.size < 2 or not np.all(np.isfinite(array)) or np.any(np.diff(array) < 0):
        raise InvalidInputError(f"bin edges must be at least 2 finite, non-decreasing numbers, got {list(edges)}")
    return array


def bin_shares(values: Sequence[float | None] | np.ndarray | pd.Series, edges: Sequence[float]) -> tuple[float, ...]:
    """Share of the non-missing ``values`` in each bin of ``edges``.

    Bins are ``[e0, e1), [e1, e2), ..., [e(n-1), en]`` (the last one closed); values below ``e0`` count in the
    first bin and values above ``en`` in the last, so every non-missing value is counted once. ``None`` and NaN
    are missing and left out (see :func:`missing_share`). All shares are 0 when no value is present.

    Raises:
        InvalidInputError: fewer than 2 edges, edges not finite or decreasing, or a value that is not a number.
    """
    bounds = _check_edges(edges)
    array = _floats(values)
    present = array[~np.isnan(array)]
    n_bins = bounds.size - 1
    if present.size == 0:
        return (0.0,) * n_bins
    # side="right": a value equal to an inner edge opens the next bin; clipping sends the outside ones inward.
    index = np.clip(np.searchsorted(bounds, present, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    return tuple(float(c) / present.size for c in counts)


def category_shares(values: Sequence[Any] | pd.Series, categories: Iterable[str] = ()) -> dict[str, float]:
    """Share of the non-missing ``values`` (compared as text) per category.

    Every name in ``categories`` is present (``0.0`` when unseen); values outside them get their own keys, so
    a monitor sees unknown categories too. Keys are sorted. All shares are 0 when no value is present.
    """
    import pandas as pd

    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values, dtype=object)
    present = series[~pd.isna(series)].astype(str)
    counts = present.value_counts()
    keys = sorted(set(categories) | set(counts.index))
    total = int(present.size)
    return {k: (float(counts.get(k, 0)) / total if total else 0.0) for k in keys}


def numeric_edges(values: Sequence[float | None] | np.ndarray | pd.Series) -> tuple[float, ...]:
    """Bin edges for a numeric feature: the deciles of its values, deduplicated, with room for heavy values.

    - At most :data:`N_BINS` distinct values (flags, small integer codes, a constant): one bin per value, with
      edges half-way between neighbours, so a 0/1 column gets ``(0, 0.5, 1)`` and a constant ``c`` gets ``(c, c)``.
    - Otherwise the deciles (min, 10%, ..., max) deduplicated. A value that fills more than a decile (zeros in
      a zero-inflated column) repeats among the deciles; it gets a bin of its own, closed half-way to the
      nearest distinct value, instead of sharing one with the values beside it.
    - No finite value at all: no edges.
    """
    array = _floats(values)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return ()
    distinct = np.unique(finite)
    if distinct.size <= N_BINS:
        middles = (distinct[:-1] + distinct[1:]) / 2
        return tuple(float(e) for e in (distinct[0], *middles, distinct[-1]))
    deciles = np.quantile(finite, np.linspace(0.0, 1.0, N_BINS + 1))
    edges = set(np.unique(deciles).tolist())
    values_at, repeats = np.unique(deciles, return_counts=True)
    for value in values_at[repeats > 1]:
        position = int(np.searchsorted(distinct, value))
        if position >= distinct.size or distinct[position] != value:
            continue  # a repeated decile is a value of the data; anything else is rounding, leave it
        if position + 1 < distinct.size:  # heavy value below the max: close its bin before the next value
            edges.add(float((distinct[position] + distinct[position + 1]) / 2))
        else:  # heavy maximum: open its bin after the value below it
            edges.add(float((distinct[position - 1] + distinct[position]) / 2))
    return tuple(float(e) for e in sorted(edges))


def quantile_sketch(values: Sequence[float | None] | np.ndarray | pd.Series) -> tuple[float, ...]:
    """The values at 0%, 1%, ..., 100% of the non-missing ``values`` (linear interpolation); ``()`` for none."""
    array = _floats(values)
    present = array[~np.isnan(array)]
    if present.size == 0:
        return ()
    return tuple(float(q) for q in np.quantile(present, np.linspace(0.0, 1.0, QUANTILE_POINTS)))


def numeric_profile(
    values: Sequence[float | None] | np.ndarray | pd.Series, edges: Sequence[float] | None = None
) -> NumericProfile:
    """Profile of numeric values; edges from :func:`numeric_edges` unless given (scores use fixed edges)."""
    bounds = tuple(float(e) for e in edges) if edges is not None else numeric_edges(values)
    shares = bin_shares(values, bounds) if bounds else ()
    array = _floats(values)
    return NumericProfile(
        edges=bounds,
        shares=shares,
        missing=missing_share(values),
        quantiles=quantile_sketch(array),
        count=int(np.count_nonzero(~np.isnan(array))),
    )


def build_profile(train: pd.DataFrame, schema: FeatureSchema, scores: Sequence[float] | np.ndarray) -> ReferenceProfile:
    """Profile of the schema's features over the training split and of predicted ``scores`` on the test split.

    Numeric, integer and boolean features are binned (booleans as 0/1); categorical features are shared out
    over the schema's categories (all present, ``0.0`` when the training split has none of one).

    Raises:
        InvalidInputError: a feature of the schema is not a column of ``train``.
    """
    import pandas as pd

    numeric: dict[str, NumericProfile] = {}
    categorical: dict[str, CategoricalProfile] = {}
    for spec in schema.features:
        if spec.name not in train.columns:
            raise InvalidInputError(f"feature column {spec.name!r} is not in the training split")
        column = train[spec.name]
        if spec.dtype == CATEGORY:
            categorical[spec.name] = CategoricalProfile(
                shares=category_shares(column, spec.categories),
                missing=missing_share(column),
                count=int(column.notna().sum()),
            )
        else:
            numeric[spec.name] = numeric_profile(pd.to_numeric(column, errors="coerce"))
    return ReferenceProfile(
        format_version=PROFILE_FORMAT_VERSION,
        numeric=numeric,
        categorical=categorical,
        scores=numeric_profile(_floats(np.asarray(scores, dtype=np.float64)), SCORE_EDGES),
    )
