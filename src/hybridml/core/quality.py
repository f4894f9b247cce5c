"""Online-quality statistics: ROC AUC with DeLong's interval, difference tests, and the sample size still needed.

Pure functions over arrays and counts (numpy and scipy only), shared by the feedback join, the canary
analysis and the A/B report.

* **AUC and its interval** — DeLong, DeLong & Clarke-Pearson (1988), computed with the midrank algorithm of
  Sun & Xu (2014): the AUC is the Mann-Whitney statistic, its variance the sum of the variances of the
  per-positive and per-negative placement values divided by the class sizes. The 95 % interval is the normal
  one, ``auc ± 1.96 se``, clipped to [0, 1] (as R's pROC does).
* **Two independent AUCs** (canary vs stable, A vs B: different requests, so no covariance term):
  ``z = (auc_b - auc_a) / sqrt(se_a² + se_b²)``.
* **Two proportions** (error rate, a business metric such as a conversion rate): the pooled z-test
  ``z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b))`` with ``p`` the pooled rate; the interval of the
  difference is the unpooled (Wald) one.
* **Sample size** (per group, equal groups), for a test at level ``alpha`` with power ``power``:
  two proportions (Fleiss, without continuity correction)
  ``n = (z_a sqrt(2 p̄ (1 - p̄)) + z_b sqrt(p_a (1 - p_a) + p_b (1 - p_b)))² / (p_a - p_b)²``;
  two AUCs ``n = (z_a + z_b)² (V_a + V_b) / δ²`` where ``V`` is the variance of one AUC per labelled request,
  taken from the DeLong variance observed now (``se² · n``: the variance falls as 1/n) or, before there is
  one, from Hanley & McNeil (1982) at the expected AUC and prevalence. ``z_a`` is ``z_{1-alpha/2}``
  (two-sided) or ``z_{1-alpha}`` (one-sided), ``z_b = z_{power}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

from hybridml.errors import InvalidInputError

Z95 = float(norm.ppf(0.975))


@dataclass(frozen=True)
class AucEstimate:
    """ROC AUC of one sample with its DeLong standard error and 95 % interval.

    Attributes:
        auc: the ROC AUC (ties between a positive and a negative count one half).
        se: DeLong standard error; None when a class has a single member (no variance can be estimated).
        low: lower end of the 95 % interval (0.0 when ``se`` is None).
        high: upper end of the 95 % interval (1.0 when ``se`` is None).
        positives: labelled positives.
        negatives: labelled negatives.
    """

    auc: float
    se: float | None
    low: float
    high: float
    positives: int
    negatives: int

    @property
    def n(self) -> int:
        """Labelled samples."""
        return self.positives + self.negatives


@dataclass(frozen=True)
class Comparison:
    """A difference ``b - a`` between two independent estimates, with its test.

    Attributes:
        a: estimate of the first group (stable, variant A).
        b: estimate of the second group (canary, variant B).
        diff: ``b - a``.
        se: standard error of ``diff`` (unpooled); 0.0 when both estimates are exact.
        low: lower end of the 95 % interval of ``diff``.
        high: upper end of the 95 % interval of ``diff``.
        z: the test statistic (positive when ``b`` is larger); 0.0 when there is no variance at all.
        p_value: two-sided p-value of "no difference".
        p_b_lower: one-sided p-value of "b is not lower than a" (small: b is significantly lower).
        p_b_higher: one-sided p-value of "b is not higher than a" (small: b is significantly higher).
    """

    a: float
    b: float
    diff: float
    se: float
    low: float
    high: float
    z: float
    p_value: float
    p_b_lower: float
    p_b_higher: float


def roc_auc_delong(labels: np.ndarray | list[int], scores: np.ndarray | list[float]) -> AucEstimate | None:
    """ROC AUC of ``scores`` against 0/1 ``labels`` with DeLong's standard error and 95 % interval.

    Args:
        labels: 1 for the positive class, 0 for the negative one.
        scores: higher means more likely positive; one per label.

    Returns:
        The estimate, or None when a class is missing (no AUC exists).

    Raises:
        InvalidInputError: lengths differ, a label is not 0/1, or a score is not finite.
    """
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise InvalidInputError(f"labels and scores must be two 1-d arrays of one length, got {y.shape} and {s.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise InvalidInputError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise InvalidInputError("scores must be finite numbers")
    positives, negatives = s[y == 1], s[y == 0]
    m, n = positives.size, negatives.size
    if m == 0 or n == 0:
        return None
    # Midranks (ties share the mean rank): within the positives, within the negatives and over both.
    combined = rankdata(np.concatenate([positives, negatives]))
    rank_pos, rank_neg = rankdata(positives), rankdata(negatives)
    # Placement values: for each positive, the share of negatives it outranks (ties one half), and for
    # each negative, the share of positives that outrank it. Their means are both the AUC.
    v_pos = (combined[:m] - rank_pos) / n
    v_neg = 1.0 - (combined[m:] - rank_neg) / m
    auc = float(v_pos.mean())
    if m < 2 or n < 2:
        return AucEstimate(auc, None, 0.0, 1.0, m, n)
    variance = float(np.var(v_pos, ddof=1) / m + np.var(v_neg, ddof=1) / n)
    se = math.sqrt(max(variance, 0.0))
    return AucEstimate(auc, se, max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se), m, n)


def _comparison(a: float, b: float, se: float, z: float) -> Comparison:
    """The comparison of ``b`` with ``a``; ``se == z == 0`` means both are exact (no sampling error)."""
    diff = b - a
    if se == 0.0 and z == 0.0:
        # Exact values: any difference is certain, none is certainly none.
        p_two_sided = 1.0 if diff == 0 else 0.0
        p_lower = 0.0 if diff < 0 else 1.0
        p_higher = 0.0 if diff > 0 else 1.0
        return Comparison(a, b, diff, 0.0, diff, diff, 0.0, p_two_sided, p_lower, p_higher)
    return Comparison(
        a=a,
        b=b,
        diff=diff,
        se=se,
        low=diff - Z95 * se,
        high=diff + Z95 * se,
        z=z,
        p_value=float(min(1.0, 2 * norm.sf(abs(z)))),
        p_b_lower=float(norm.cdf(z)),
        p_b_higher=float(norm.sf(z)),
    )


def compare_aucs(a: AucEstimate, b: AucEstimate) -> Comparison:
    """Test the difference ``b.auc - a.auc`` of two AUCs measured on independent samples.

    Raises:
        InvalidInputError: an estimate without a standard error (a class with a single member).
    """
    if a.se is None or b.se is None:
        raise InvalidInputError("comparing AUCs needs at least two labels of each class in both groups")
    se = math.sqrt(a.se**2 + b.se**2)
    diff = b.auc - a.auc
    if se == 0.0:
        return _comparison(a.auc, b.auc, 0.0, 0.0)
    return _comparison(a.auc, b.auc, se, diff / se)


def non_inferiority_p(comparison: Comparison, margin: float) -> float:
    """One-sided p-value of "b is worse than a by ``margin`` or more" (small: b is shown non-inferior).

    Args:
        comparison: the difference ``b - a`` and its standard error.
        margin: how much lower ``b`` may be and still count as no worse (0 or more).
    """
    if margin < 0:
        raise InvalidInputError(f"margin must be 0 or more, got {margin}")
    shifted = comparison.diff + margin
    if comparison.se == 0.0:
        return 0.0 if shifted > 0 else 1.0
    return float(norm.sf(shifted / comparison.se))


def two_proportions(successes_a: int, n_a: int, successes_b: int, n_b: int) -> Comparison:
    """Pooled two-proportion z-test of ``successes_b / n_b - successes_a / n_a``.

    Raises:
        InvalidInputError: an empty group, or counts outside [0, n].
    """
    for label, k, n in (("a", successes_a, n_a), ("b", successes_b, n_b)):
        if n <= 0 or not 0 <= k <= n:
            raise InvalidInputError(f"group {label}: need 0 <= successes <= n and n > 0, got {k} of {n}")
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    se_wald = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    if se_pooled == 0.0:  # both groups all successes or all failures: no evidence of a difference
        return _comparison(p_a, p_b, 0.0, 0.0)
    # The test uses the pooled error (the null hypothesis: one rate); the interval the unpooled one.
    return _comparison(p_a, p_b, se_wald, (p_b - p_a) / se_pooled)


def _z_alpha(alpha: float, two_sided: bool) -> float:
    if not 0 < alpha < 1:
        raise InvalidInputError(f"alpha must be in (0, 1), got {alpha}")
    return float(norm.ppf(1 - alpha / 2 if two_sided else 1 - alpha))


def _z_power(power: float) -> float:
    if not 0 < power < 1:
        raise InvalidInputError(f"power must be in (0, 1), got {power}")
    return float(norm.ppf(power))


def proportions_sample_size(
    p_a: float, p_b: float, *, alpha: float = 0.05, power: float = 0.8, two_sided: bool = True
) -> int | None:
    """Requests per group to detect ``p_a`` vs ``p_b`` (Fleiss' formula, no continuity correction).

    Returns:
        The smallest integer n per group, or None when ``p_a == p_b`` (no finite sample detects no difference).
    """
    for p in (p_a, p_b):
        if not 0 <= p <= 1:
            raise InvalidInputError(f"proportions must be in [0, 1], got {p}")
    if p_a == p_b:
        return None
    z_a, z_b = _z_alpha(alpha, two_sided), _z_power(power)
    mean = (p_a + p_b) / 2
    numerator = z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))
    return math.ceil(numerator**2 / (p_a - p_b) ** 2)


def hanley_mcneil_variance(auc: float, positives: float, negatives: float) -> float:
    """Variance of an AUC estimate by Hanley & McNeil (1982), from the AUC and the class sizes alone."""
    if not 0 < auc < 1 or positives <= 0 or negatives <= 0:
        raise InvalidInputError(f"need 0 < auc < 1 and both classes present, got {auc}, {positives}, {negatives}")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    return (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )


def aucs_sample_size(
    unit_variance_a: float,
    unit_variance_b: float,
    effect: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = True,
) -> int | None:
    """Labelled requests per group to detect an AUC difference ``effect``: ``(z_a + z_b)² (V_a + V_b) / δ²``.

    Args:
        unit_variance_a: variance of group a's AUC times its number of labels (``se² · n``; see
            :func:`unit_variance`).
        unit_variance_b: the same for group b.
        effect: the difference to detect (its sign does not matter).

    Returns:
        The smallest integer n per group, or None when ``effect`` is 0.
    """
    if unit_variance_a < 0 or unit_variance_b < 0:
        raise InvalidInputError("variances must be 0 or more")
    if effect == 0:
        return None
    z = _z_alpha(alpha, two_sided) + _z_power(power)
    return max(1, math.ceil(z**2 * (unit_variance_a + unit_variance_b) / effect**2))


def unit_variance(estimate: AucEstimate) -> float:
    """Variance of one AUC per labelled request: DeLong's ``se² · n`` if there is one, else Hanley-McNeil's.

    The Hanley-McNeil fallback is taken at the observed AUC (kept inside [0.5, 0.99] so a tiny sample's 1.0
    still plans for a finite variance) and the observed prevalence.
    """
    if estimate.se is not None and estimate.se > 0:
        return estimate.se**2 * estimate.n
    auc = min(max(estimate.auc, 0.5), 0.99)
    prevalence = estimate.positives / estimate.n
    n = estimate.n
    return hanley_mcneil_variance(auc, prevalence * n, (1 - prevalence) * n) * n


def still_needed(required_per_group: int | None, have: int) -> int | None:
    """How many more samples a group needs (0 when it has enough; None when no sample size decides)."""
    if required_per_group is None:
        return None
    return max(0, required_per_group - have)
