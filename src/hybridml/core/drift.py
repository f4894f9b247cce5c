"""Drift of a window of inputs and scores against a model's reference profile (pure: numpy and scipy).

Per numeric feature: the population stability index (PSI) over the profile's bins and a two-sample
Kolmogorov-Smirnov test against the profile's quantile sketch. Per category feature (and per numeric feature with
at most ten distinct values): PSI over the category shares and a chi-square test, with categories unknown to the
model as a cell of their own. The p-values of all features are adjusted together (Benjamini-Hochberg by default,
or Holm), and a feature drifts only when its adjusted p-value is below ``alpha`` **and** its PSI is at least
``min_psi``: the test says the change is real, the PSI that it is large enough to matter, so a huge window does
not flag a negligible shift. Predictions are tested the same way against the profile's scores. See
docs/monitoring.md.
"""

from __future__ import annotations

import collections
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special, stats

from hybridml.core.profile import N_BINS, CategoricalProfile, NumericProfile, ReferenceProfile, _floats
from hybridml.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_ALPHA = 0.05
DEFAULT_MIN_PSI = 0.1
# Below this many rows nothing is judged drifted: on a young window PSI is large by chance alone (about
# (bins - 1) / rows), so the PSI floor stops filtering and every recomputation is a fresh test at level alpha.
DEFAULT_MIN_ROWS = 100
# Shares below this count as this in the PSI, so an empty bin on one side gives a large but finite term.
PSI_EPSILON = 1e-4
CORRECTIONS = ("bh", "holm")
UNKNOWN_CELL = "<unknown>"
_EXACT_KS_ROWS = 1000

# Test names, as reported per feature.
KS = "ks"  # two-sample KS against the reference's quantile sketch (profile format 2)
CHI2 = "chi2"  # chi-square test of homogeneity, reference counts from shares x count (profile format 2)
CHI2_GOF = "chi2-gof"  # chi-square goodness of fit against the reference shares (format 1: no counts)
NO_TEST = "none"  # no value in the window or in the reference: nothing to compare


@dataclass(frozen=True)
class DriftConfig:
    """When a feature counts as drifted.

    Args:
        alpha: family-wise level for the adjusted p-values (a feature needs adjusted p < alpha).
        min_psi: minimum effect (a feature needs PSI >= min_psi).
        correction: ``bh`` (Benjamini-Hochberg, false discovery rate) or ``holm`` (family-wise error rate).
        min_rows: windows with fewer rows are measured but never judged drifted (a note says so).
    """

    alpha: float = DEFAULT_ALPHA
    min_psi: float = DEFAULT_MIN_PSI
    correction: str = "bh"
    min_rows: int = DEFAULT_MIN_ROWS

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise InvalidInputError(f"alpha must be between 0 and 1 (exclusive), got {self.alpha}")
        if not (math.isfinite(self.min_psi) and self.min_psi >= 0.0):
            raise InvalidInputError(f"min PSI must be a finite number of 0 or more, got {self.min_psi}")
        if self.correction not in CORRECTIONS:
            raise InvalidInputError(f"correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if isinstance(self.min_rows, bool) or not isinstance(self.min_rows, int) or self.min_rows < 1:
            raise InvalidInputError(f"min rows must be a positive integer, got {self.min_rows!r}")


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature.

    ``psi`` and the test compare the non-missing values; ``missing_*`` compare the share of rows with no value
    (``missing_change`` = current - reference). ``unknown_rate`` is the share of the window's rows whose category
    the model does not know (0 for numeric features). ``labels``/``reference_shares``/``current_shares`` are the
    cells the PSI was computed over (bins or categories), for plots.
    """

    name: str
    kind: str
    test: str
    psi: float
    statistic: float
    p_value: float
    adjusted_p: float
    drifted: bool
    present: int
    missing_reference: float
    missing_current: float
    missing_change: float
    unknown_rate: float
    labels: tuple[str, ...]
    reference_shares: tuple[float, ...]
    current_shares: tuple[float, ...]


@dataclass(frozen=True)
class PredictionDrift:
    """Drift of the model's scores against the profile's test-split scores (not adjusted: one test)."""

    test: str
    psi: float
    statistic: float
    p_value: float
    drifted: bool
    present: int
    labels: tuple[str, ...]
    reference_shares: tuple[float, ...]
    current_shares: tuple[float, ...]


@dataclass(frozen=True)
class DriftResult:
    """Drift of one window: ``drift`` is true when at least one feature drifted.

    Prediction drift is reported beside it and does not set ``drift``: scores follow from the inputs, and the
    reference scores are the test split's, so a window of training rows would differ there by overfitting alone.
    """

    drift: bool
    rows: int
    alpha: float
    min_psi: float
    correction: str
    features: dict[str, FeatureDrift]
    prediction: PredictionDrift | None
    notes: tuple[str, ...]

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted features, in profile order."""
        return [name for name, f in self.features.items() if f.drifted]

    def to_dict(self, *, cells: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; ``cells`` adds each feature's labels and shares (for reports)."""
        dropped = () if cells else ("labels", "reference_shares", "current_shares")

        def clean(item: Any) -> dict[str, Any]:
            return {k: v for k, v in asdict(item).items() if k not in dropped and k != "name"}

        return {
            "drift": self.drift,
            "rows": self.rows,
            "alpha": self.alpha,
            "min_psi": self.min_psi,
            "correction": self.correction,
            "drifted_features": self.drifted_features,
            "features": {name: clean(f) for name, f in self.features.items()},
            "prediction": None if self.prediction is None else clean(self.prediction),
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------------------------ statistics


def psi(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> float:
    """Population stability index ``sum((c - r) * ln(c / r))`` over matching cells of two share vectors.

    Shares below :data:`PSI_EPSILON` count as it, so a cell empty on one side adds a large, finite term.
    0 for identical shares; by convention < 0.1 is stable, 0.1-0.25 a moderate and > 0.25 a major shift.

    Raises:
        InvalidInputError: the two vectors differ in length.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.shape != c.shape:
        raise InvalidInputError(f"PSI needs shares over the same cells, got {r.size} and {c.size}")
    r = np.maximum(r, PSI_EPSILON)
    c = np.maximum(c, PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def adjust(p_values: Sequence[float] | np.ndarray, correction: str = "bh") -> np.ndarray:
    """p-values adjusted for testing them together: Benjamini-Hochberg (``bh``) or Holm (``holm``)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    if correction == "bh":
        return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=np.float64)
    if correction == "holm":
        order = np.argsort(p)
        scaled = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
        adjusted = np.empty_like(p)
        adjusted[order] = np.minimum(scaled, 1.0)
        return adjusted
    raise InvalidInputError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")


def _chi2_homogeneity(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Chi-square test that two count vectors over the same cells come from one distribution."""
    table = np.vstack([reference, current]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]  # a cell empty on both sides carries no information
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 0.0, 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, table.shape[1] - 1))


def _chi2_gof(reference_shares: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Chi-square goodness of fit of counts against shares (taken as exact: a format-1 profile has no counts)."""
    if current.size < 2:
        return 0.0, 1.0
    expected = np.maximum(reference_shares, PSI_EPSILON)
    expected = expected / expected.sum() * current.sum()
    result = stats.chisquare(current, f_exp=expected)
    return float(result.statistic), float(result.pvalue)


def _ks_p(statistic: float, n_current: int, n_reference: int) -> float:
    """Two-sample KS p-value for sizes n and m: the one-sample distribution at n*m/(n+m) (as scipy's asymptotic).

    Above 1,000 effective rows the limiting (Kolmogorov) distribution is used: scipy's exact one costs ~6 ms
    there, and the two agree to within 1e-3.
    """
    effective = n_current * n_reference / (n_current + n_reference)
    if effective > _EXACT_KS_ROWS:
        return float(special.kolmogorov(math.sqrt(effective) * statistic))
    return float(stats.kstwo.sf(statistic, max(1, round(effective))))


# ------------------------------------------------------------------------------------------------ per feature


@dataclass(frozen=True)
class _Compared:
    test: str
    psi: float
    statistic: float
    p_value: float
    present: int
    labels: tuple[str, ...]
    reference_shares: tuple[float, ...]
    current_shares: tuple[float, ...]


def _outside(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """How far each ``value`` lies outside ``[low, high]`` (0 inside)."""
    return np.maximum(0.0, np.maximum(value - high, low - value))


def _sketch_ks(sketch: np.ndarray, distinct: np.ndarray, ordered: np.ndarray) -> float:
    """The KS statistic of sorted current values against a reference known by its quantiles at 0%, 1%, ..., 100%.

    At a value ``u`` met once in the sketch, at point k, the reference CDF is k/100. A value met several times
    (from index a to b) is a heavy value: all the sketch says is that the CDF just below ``u`` lies in
    [(a-1)/100, a/100] and at ``u`` in [b/100, (b+1)/100], so the distance counted there is the current CDF's
    distance to that interval. The statistic is thus never above the exact one (between sketch points, or
    inside an interval, it can be below by up to 1/100): the test errs towards no alarm, never towards one.
    """
    step = 1.0 / (sketch.size - 1)
    first = np.searchsorted(sketch, distinct, side="left") * step
    last = (np.searchsorted(sketch, distinct, side="right") - 1) * step
    heavy = last > first
    m = ordered.size
    below = np.searchsorted(ordered, distinct, side="left") / m  # current CDF just below u
    upto = np.searchsorted(ordered, distinct, side="right") / m  # current CDF at u
    left = _outside(below, np.where(heavy, np.maximum(first - step, 0.0), first), first)
    right = _outside(upto, last, np.where(heavy, np.minimum(last + step, 1.0), last))
    return float(max(np.max(left), np.max(right)))


def _bin_labels(edges: Sequence[float]) -> tuple[str, ...]:
    last = len(edges) - 2
    return tuple(f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{']' if i == last else ')'}" for i in range(len(edges) - 1))


def _compare_numeric(reference: NumericProfile, values: np.ndarray) -> _Compared:
    present = values[~np.isnan(values)]
    m = int(present.size)
    edges = np.asarray(reference.edges, dtype=np.float64)
    n_bins = edges.size - 1
    if m == 0 or n_bins < 1:
        return _Compared(NO_TEST, 0.0, 0.0, 1.0, m, (), (), ())
    sketch = np.asarray(reference.quantiles, dtype=np.float64)
    distinct = np.unique(sketch)
    ks = reference.count is not None and distinct.size > N_BINS
    inner = edges[1:-1]
    # Sorting once (SIMD, ~1 ms per 100k values) and searching the few points in it is ~10x faster than
    # searching 100k values among the points.
    ordered = np.sort(present)

    def count_below(at: np.ndarray) -> np.ndarray:
        return np.searchsorted(ordered, at, side="left")

    # bin_shares' rule: values below the first edge count in the first bin and above the last in the last.
    cuts = np.concatenate([[0], count_below(inner), [m]]) if n_bins > 1 else np.array([0, m])
    counts = np.diff(cuts).astype(np.float64)
    current_shares = counts / m
    reference_shares = np.asarray(reference.shares, dtype=np.float64)
    value = psi(reference_shares, current_shares)
    labels = _bin_labels(reference.edges)
    if ks:
        assert reference.count is not None
        statistic = _sketch_ks(sketch, distinct, ordered)
        p_value = _ks_p(statistic, m, reference.count)
        test = KS
    elif reference.count is not None:
        statistic, p_value = _chi2_homogeneity(reference_shares * reference.count, counts)
        test = CHI2
    else:
        statistic, p_value = _chi2_gof(reference_shares, counts)
        test = CHI2_GOF
    return _Compared(
        test, value, statistic, p_value, m, labels, tuple(reference_shares.tolist()), tuple(current_shares.tolist())
    )


def _category_counts(values: Any) -> tuple[dict[str, int], int]:
    """Counts of the non-missing values compared as text (as the profile counted them), and the row count.

    A pandas Series is counted by pandas (hashing in C); other sequences by :class:`collections.Counter`, so a
    window of logged rows needs no pandas (the predictor image has none).
    """
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(values, pd.Series):
        raw: Mapping[Any, int] = values.value_counts(dropna=True).to_dict()
    else:
        raw = collections.Counter(v for v in values if not _is_missing(v))
    counts: dict[str, int] = {}
    # Count the raw values first, then merge the few distinct ones by their text (1 and "1" are one category).
    for key, count in raw.items():
        text = str(key)
        counts[text] = counts.get(text, 0) + int(count)
    return counts, len(values)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _compare_category(reference: CategoricalProfile, values: Any) -> tuple[_Compared, float]:
    counts, n = _category_counts(values)
    m = sum(counts.values())
    known = list(reference.shares)
    unknown = sum(c for k, c in counts.items() if k not in reference.shares)
    unknown_rate = unknown / n if n else 0.0
    if m == 0 or not known or math.fsum(reference.shares.values()) == 0.0:
        return _Compared(NO_TEST, 0.0, 0.0, 1.0, m, (), (), ()), unknown_rate
    labels = (*known, UNKNOWN_CELL)
    current = np.array([counts.get(k, 0) for k in known] + [unknown], dtype=np.float64)
    reference_shares = np.array([reference.shares[k] for k in known] + [0.0], dtype=np.float64)
    current_shares = current / m
    value = psi(reference_shares, current_shares)
    if reference.count is not None:
        statistic, p_value = _chi2_homogeneity(reference_shares * reference.count, current)
        test = CHI2
    else:
        statistic, p_value = _chi2_gof(reference_shares, current)
        test = CHI2_GOF
    compared = _Compared(
        test, value, statistic, p_value, m, labels, tuple(reference_shares.tolist()), tuple(current_shares.tolist())
    )
    return compared, unknown_rate


# ------------------------------------------------------------------------------------------------ the window


def _columns(window: Any) -> tuple[list[str], int]:
    names = [str(c) for c in (window.columns if hasattr(window, "columns") else window)]
    lengths = {len(window[name]) for name in names}
    if len(lengths) > 1:
        raise InvalidInputError(f"window columns differ in length: {sorted(lengths)}")
    return names, lengths.pop() if lengths else 0


def compute_drift(
    profile: ReferenceProfile,
    window: pd.DataFrame | Mapping[str, Sequence[Any] | np.ndarray | pd.Series],
    scores: Sequence[float] | np.ndarray | None = None,
    config: DriftConfig | None = None,
) -> DriftResult:
    """Drift of ``window`` (columns by feature name; extra columns ignored) against ``profile``.

    Args:
        profile: the model's reference profile (format 1 profiles are tested on their bins, and say so).
        window: one column per feature of the profile (a DataFrame or a mapping of name to values); numeric
            features as numbers, booleans or None/NaN, category features as any values compared as text.
        scores: the model's scores on the window's rows, for prediction drift (None: not computed).
        config: thresholds and correction (default :class:`DriftConfig`).

    Raises:
        InvalidInputError: an empty window, a feature of the profile missing from it, columns of different
            lengths, or text in a numeric feature.
    """
    config = config or DriftConfig()
    names, rows = _columns(window)
    wanted = [*profile.numeric, *profile.categorical]
    lacking = [name for name in wanted if name not in names]
    if lacking:
        raise InvalidInputError(f"the window has no column for feature(s) {lacking}")
    if rows == 0:
        raise InvalidInputError("the window is empty: drift needs at least one row")
    notes: list[str] = []
    judged = rows >= config.min_rows
    if not judged:
        notes.append(f"the window has {rows} rows, fewer than the minimum of {config.min_rows}: none judged drifted")
    if not profile.has_sketch:
        notes.append(
            f"reference profile format {profile.format_version} has no quantile sketch or counts: numeric features"
            " and scores are tested by chi-square goodness of fit over the profile's bins, not KS (retrain the"
            " model for a format-2 profile)"
        )
    compared: dict[str, tuple[str, _Compared, float, float, float]] = {}
    for name, numeric in profile.numeric.items():
        values = _floats(window[name])
        missing = float(np.count_nonzero(np.isnan(values))) / rows
        compared[name] = ("numeric", _compare_numeric(numeric, values), numeric.missing, missing, 0.0)
    for name, category in profile.categorical.items():
        result, unknown_rate = _compare_category(category, window[name])
        missing = (rows - result.present) / rows
        compared[name] = ("category", result, category.missing, missing, unknown_rate)
    untested = [name for name, (_, c, *_) in compared.items() if c.test == NO_TEST]
    if untested:
        notes.append(f"not tested (no value in the window or in the reference): {untested}")
    tested = [name for name in compared if name not in untested]
    adjusted = dict(zip(tested, adjust([compared[n][1].p_value for n in tested], config.correction), strict=True))
    features: dict[str, FeatureDrift] = {}
    for name in wanted:
        kind, c, missing_reference, missing_current, unknown_rate = compared[name]
        adjusted_p = float(adjusted.get(name, 1.0))
        features[name] = FeatureDrift(
            name=name,
            kind=kind,
            test=c.test,
            psi=c.psi,
            statistic=c.statistic,
            p_value=c.p_value,
            adjusted_p=adjusted_p,
            drifted=judged and adjusted_p < config.alpha and c.psi >= config.min_psi,
            present=c.present,
            missing_reference=missing_reference,
            missing_current=missing_current,
            missing_change=missing_current - missing_reference,
            unknown_rate=unknown_rate,
            labels=c.labels,
            reference_shares=c.reference_shares,
            current_shares=c.current_shares,
        )
    prediction = None
    if scores is not None:
        s = _compare_numeric(profile.scores, _floats(np.asarray(scores, dtype=np.float64)))
        prediction = PredictionDrift(
            test=s.test,
            psi=s.psi,
            statistic=s.statistic,
            p_value=s.p_value,
            drifted=judged and s.p_value < config.alpha and s.psi >= config.min_psi,
            present=s.present,
            labels=s.labels,
            reference_shares=s.reference_shares,
            current_shares=s.current_shares,
        )
    return DriftResult(
        drift=any(f.drifted for f in features.values()),
        rows=rows,
        alpha=config.alpha,
        min_psi=config.min_psi,
        correction=config.correction,
        features=features,
        prediction=prediction,
        notes=tuple(notes),
    )
