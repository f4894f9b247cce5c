"""The online-quality statistics: DeLong AUC and interval, difference tests, sample sizes (hybridml.core.quality)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from hybridml.core.quality import (
    Z95,
    AucEstimate,
    aucs_sample_size,
    compare_aucs,
    hanley_mcneil_variance,
    non_inferiority_p,
    proportions_sample_size,
    roc_auc_delong,
    still_needed,
    two_proportions,
    unit_variance,
)
from hybridml.errors import InvalidInputError

# Positives 0.9, 0.8, 0.4 and negatives 0.7, 0.3, 0.2, 0.1: 11 of 12 pairs ordered right. By hand, the
# placements of the positives are 1, 1, 3/4 (variance 1/48) and of the negatives 2/3, 1, 1, 1 (variance
# 1/36), so DeLong's variance is (1/48)/3 + (1/36)/4 = 1/72.
HAND_LABELS = [1, 1, 1, 0, 0, 0, 0]
HAND_SCORES = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]


def test_delong_on_a_hand_made_case() -> None:
    estimate = roc_auc_delong(HAND_LABELS, HAND_SCORES)
    assert estimate is not None
    assert estimate.auc == pytest.approx(11 / 12)
    assert estimate.se == pytest.approx(math.sqrt(1 / 72))
    assert estimate.low == pytest.approx(11 / 12 - Z95 * math.sqrt(1 / 72))
    assert estimate.high == 1.0  # 0.916 + 0.231 is clipped
    assert (estimate.positives, estimate.negatives, estimate.n) == (3, 4, 7)


def test_ties_count_one_half() -> None:
    # Positive 0.5 ties negative 0.5: pairs (0.5,0.5)=1/2, (0.5,0.1)=1, (0.9,*)=1+1 -> 3.5 of 4.
    estimate = roc_auc_delong([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1])
    assert estimate is not None
    assert estimate.auc == pytest.approx(3.5 / 4)
    # Placements (ties one half): positive 0.9 outranks both negatives (1), positive 0.5 ties one and outranks
    # one (3/4); negative 0.5 is outranked by 1.5 of 2 positives (3/4), negative 0.1 by both (1). Each pair has
    # variance 1/32, so DeLong's variance is (1/32)/2 + (1/32)/2.
    assert estimate.se == pytest.approx(math.sqrt((1 / 32) / 2 + (1 / 32) / 2))


def test_agrees_with_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(size=500) + y, 1)  # rounded: many ties
    estimate = roc_auc_delong(y, scores)
    assert estimate is not None
    assert estimate.auc == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_the_interval_covers_the_true_auc_about_95_percent_of_the_time() -> None:
    # Scores N(0,1) for negatives and N(1,1) for positives: the true AUC is Phi(1/sqrt(2)).
    true_auc = float(norm.cdf(1 / math.sqrt(2)))
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(300):
        y = rng.integers(0, 2, 150)
        estimate = roc_auc_delong(y, rng.normal(size=150) + y)
        assert estimate is not None
        covered += estimate.low <= true_auc <= estimate.high
    assert 0.91 <= covered / 300 <= 0.98


def test_a_missing_class_gives_no_auc_and_one_member_no_interval() -> None:
    assert roc_auc_delong([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert roc_auc_delong([0, 0], [0.1, 0.2]) is None
    assert roc_auc_delong([], []) is None
    single = roc_auc_delong([1, 0, 0], [0.9, 0.1, 0.95])
    assert single == AucEstimate(0.5, None, 0.0, 1.0, 1, 2)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([1, 0], [0.1], "one length"),
        ([1, 2], [0.1, 0.2], "0 or 1"),
        ([1, 0], [0.1, float("nan")], "finite"),
    ],
)
def test_bad_inputs_are_refused(labels: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        roc_auc_delong(labels, scores)


def test_two_independent_aucs() -> None:
    a = AucEstimate(0.80, 0.03, 0.0, 1.0, 50, 50)
    b = AucEstimate(0.90, 0.04, 0.0, 1.0, 50, 50)
    test = compare_aucs(a, b)
    assert test.diff == pytest.approx(0.10)
    assert test.se == pytest.approx(0.05)
    assert test.z == pytest.approx(2.0)
    assert test.p_value == pytest.approx(2 * norm.sf(2.0))
    assert test.p_b_higher == pytest.approx(norm.sf(2.0))
    assert test.p_b_lower == pytest.approx(norm.cdf(2.0))
    assert (test.low, test.high) == (pytest.approx(0.10 - Z95 * 0.05), pytest.approx(0.10 + Z95 * 0.05))
    # Non-inferiority at margin 0.02: z = (0.10 + 0.02) / 0.05 = 2.4.
    assert non_inferiority_p(test, 0.02) == pytest.approx(norm.sf(2.4))
    with pytest.raises(InvalidInputError, match="margin"):
        non_inferiority_p(test, -0.01)
    with pytest.raises(InvalidInputError, match="two labels of each class"):
        compare_aucs(a, AucEstimate(0.5, None, 0.0, 1.0, 1, 5))


def test_two_exact_aucs_decide_on_the_sign_alone() -> None:
    perfect = AucEstimate(1.0, 0.0, 1.0, 1.0, 5, 5)
    tied = AucEstimate(0.5, 0.0, 0.5, 0.5, 5, 5)
    worse = compare_aucs(perfect, tied)
    assert (worse.diff, worse.p_value, worse.p_b_lower, worse.p_b_higher) == (-0.5, 0.0, 0.0, 1.0)
    same = compare_aucs(perfect, perfect)
    assert (same.diff, same.p_value, same.p_b_lower, same.p_b_higher) == (0.0, 1.0, 1.0, 1.0)
    assert non_inferiority_p(worse, 0.6) == 0.0
    assert non_inferiority_p(worse, 0.5) == 1.0


def test_two_proportions_by_hand() -> None:
    # 5/100 against 15/100: pooled 0.1, se sqrt(0.1*0.9*0.02) = 0.042426, z = 2.357.
    test = two_proportions(5, 100, 15, 100)
    assert test.z == pytest.approx(0.1 / math.sqrt(0.1 * 0.9 * 0.02))
    assert test.p_value == pytest.approx(2 * norm.sf(test.z))
    wald = math.sqrt(0.05 * 0.95 / 100 + 0.15 * 0.85 / 100)
    assert test.se == pytest.approx(wald)
    assert test.low == pytest.approx(0.1 - Z95 * wald)
    # All failures in both groups: no evidence of a difference.
    none = two_proportions(0, 50, 0, 70)
    assert (none.diff, none.p_value, none.p_b_higher) == (0.0, 1.0, 1.0)
    # Everything failed on one side only: the difference is exact and significant.
    broken = two_proportions(0, 50, 50, 50)
    assert broken.p_b_higher < 1e-20 and (broken.low, broken.high) == (1.0, 1.0)


@pytest.mark.parametrize(("k_a", "n_a", "k_b", "n_b"), [(0, 0, 1, 2), (3, 2, 1, 2), (-1, 2, 1, 2), (1, 2, 1, 0)])
def test_two_proportions_refuse_impossible_counts(k_a: int, n_a: int, k_b: int, n_b: int) -> None:
    with pytest.raises(InvalidInputError, match="successes"):
        two_proportions(k_a, n_a, k_b, n_b)


def test_proportions_sample_size_known_value() -> None:
    # Fleiss without continuity correction, 5 % vs 10 %, alpha 0.05 two-sided, power 0.8: 434.2 -> 435.
    assert proportions_sample_size(0.05, 0.10) == 435
    assert proportions_sample_size(0.10, 0.05) == 435
    assert proportions_sample_size(0.05, 0.10, two_sided=False) < 435
    assert proportions_sample_size(0.05, 0.10, power=0.9) > 435
    assert proportions_sample_size(0.2, 0.2) is None
    with pytest.raises(InvalidInputError, match="alpha"):
        proportions_sample_size(0.1, 0.2, alpha=0)
    with pytest.raises(InvalidInputError, match="power"):
        proportions_sample_size(0.1, 0.2, power=1)
    with pytest.raises(InvalidInputError, match="proportions"):
        proportions_sample_size(0.1, 1.2)


def test_the_planned_auc_sample_size_reaches_the_planned_power() -> None:
    # Simulate at the planned size: the test must reject about `power` of the time.
    rng = np.random.default_rng(11)

    def sample(shift: float, n: int) -> AucEstimate:
        y = rng.integers(0, 2, n)
        estimate = roc_auc_delong(y, rng.normal(size=n) + shift * y)
        assert estimate is not None
        return estimate

    pilot_a, pilot_b = sample(1.0, 400), sample(1.4, 400)
    effect = float(norm.cdf(1.4 / math.sqrt(2)) - norm.cdf(1 / math.sqrt(2)))
    n = aucs_sample_size(unit_variance(pilot_a), unit_variance(pilot_b), effect)
    assert n is not None and 300 < n < 1500
    rejected = sum(compare_aucs(sample(1.0, n), sample(1.4, n)).p_value < 0.05 for _ in range(120))
    assert 0.65 <= rejected / 120 <= 0.93


def test_auc_sample_size_formula_and_edges() -> None:
    z = norm.ppf(0.975) + norm.ppf(0.8)
    assert aucs_sample_size(1.0, 2.0, 0.1) == math.ceil(z**2 * 3.0 / 0.01)
    assert aucs_sample_size(1.0, 2.0, -0.1) == aucs_sample_size(1.0, 2.0, 0.1)
    assert aucs_sample_size(1.0, 2.0, 0.0) is None
    with pytest.raises(InvalidInputError, match="variances"):
        aucs_sample_size(-1.0, 2.0, 0.1)


def test_unit_variance_uses_delong_else_hanley_mcneil() -> None:
    observed = AucEstimate(0.8, 0.05, 0.0, 1.0, 40, 60)
    assert unit_variance(observed) == pytest.approx(0.05**2 * 100)
    exact = AucEstimate(1.0, 0.0, 1.0, 1.0, 40, 60)
    assert unit_variance(exact) == pytest.approx(hanley_mcneil_variance(0.99, 40, 60) * 100)
    # Hanley & McNeil by hand at A = 0.8, 40 positives, 60 negatives.
    q1, q2 = 0.8 / 1.2, 2 * 0.64 / 1.8
    by_hand = (0.8 * 0.2 + 39 * (q1 - 0.64) + 59 * (q2 - 0.64)) / (40 * 60)
    assert hanley_mcneil_variance(0.8, 40, 60) == pytest.approx(by_hand)
    with pytest.raises(InvalidInputError):
        hanley_mcneil_variance(1.0, 40, 60)


def test_still_needed() -> None:
    assert still_needed(100, 40) == 60
    assert still_needed(100, 100) == 0
    assert still_needed(100, 140) == 0
    assert still_needed(None, 10) is None
