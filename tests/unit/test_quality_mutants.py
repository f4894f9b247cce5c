"""Online-quality statistics the mutation run (issue 12) found unasserted: the refusals word for word, every range at
its ends, every field of an exact comparison, and the interval when it is not clipped."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from hybridml.core.quality import (
    Z95,
    AucEstimate,
    aucs_sample_size,
    compare_aucs,
    hanley_mcneil_variance,
    non_inferiority_p,
    proportions_sample_size,
    roc_auc_delong,
    two_proportions,
    unit_variance,
)
from hybridml.errors import InvalidInputError

pytestmark = pytest.mark.unit


def message(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(InvalidInputError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(caught.value)


def test_refusals_are_exact_lines() -> None:
    assert message(roc_auc_delong, [1, 2], [0.1, 0.2]) == "labels must be 0 or 1"
    assert message(roc_auc_delong, [1, 0], [0.1, math.inf]) == "scores must be finite numbers"
    single = AucEstimate(0.5, None, 0.0, 1.0, 1, 5)
    assert message(compare_aucs, single, single) == (
        "comparing AUCs needs at least two labels of each class in both groups"
    )
    assert message(two_proportions, 1, 0, 1, 2) == "group a: need 0 <= successes <= n and n > 0, got 1 of 0"
    assert message(two_proportions, 1, 2, 3, 2) == "group b: need 0 <= successes <= n and n > 0, got 3 of 2"
    assert message(aucs_sample_size, 1.0, -0.1, 0.1) == "variances must be 0 or more"
    assert message(hanley_mcneil_variance, 0.8, 0, 5) == "need 0 < auc < 1 and both classes present, got 0.8, 0, 5"
    assert message(proportions_sample_size, 0.1, 0.2, alpha=1.0) == "alpha must be in (0, 1), got 1.0"
    assert message(proportions_sample_size, 0.1, 0.2, power=0.0) == "power must be in (0, 1), got 0.0"
    assert message(proportions_sample_size, -0.1, 0.2) == "proportions must be in [0, 1], got -0.1"


def test_the_interval_is_auc_plus_or_minus_z_se_when_not_clipped() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    estimate = roc_auc_delong(y, rng.normal(size=400) + 0.5 * y)
    assert estimate is not None and estimate.se is not None
    assert 0.0 < estimate.low < estimate.auc < estimate.high < 1.0
    assert estimate.high == pytest.approx(estimate.auc + Z95 * estimate.se)
    assert estimate.low == pytest.approx(estimate.auc - Z95 * estimate.se)


def test_equal_aucs_with_an_error_are_tested_not_called_exact() -> None:
    a = AucEstimate(0.8, 0.03, 0.0, 1.0, 50, 50)
    b = AucEstimate(0.8, 0.04, 0.0, 1.0, 50, 50)
    test = compare_aucs(a, b)
    assert (test.a, test.b, test.diff, test.z) == (0.8, 0.8, 0.0, 0.0)
    assert test.se == pytest.approx(0.05)
    assert (test.low, test.high) == (pytest.approx(-Z95 * 0.05), pytest.approx(Z95 * 0.05))
    assert (test.p_value, test.p_b_lower, test.p_b_higher) == (1.0, 0.5, 0.5)


def test_an_exact_comparison_holds_every_field() -> None:
    tied = AucEstimate(0.5, 0.0, 0.5, 0.5, 5, 5)
    perfect = AucEstimate(1.0, 0.0, 1.0, 1.0, 5, 5)
    better = compare_aucs(tied, perfect)
    assert (better.a, better.b, better.diff, better.se, better.low, better.high, better.z) == (
        0.5,
        1.0,
        0.5,
        0.0,
        0.5,
        0.5,
        0.0,
    )
    assert (better.p_value, better.p_b_lower, better.p_b_higher) == (0.0, 1.0, 0.0)
    slightly = compare_aucs(AucEstimate(0.7, 0.0, 0.7, 0.7, 5, 5), AucEstimate(0.75, 0.0, 0.75, 0.75, 5, 5))
    assert (slightly.p_value, slightly.p_b_lower, slightly.p_b_higher) == (0.0, 1.0, 0.0)
    assert slightly.diff == pytest.approx(0.05)


def test_a_zero_margin_is_allowed() -> None:
    test = compare_aucs(AucEstimate(0.8, 0.03, 0.0, 1.0, 50, 50), AucEstimate(0.9, 0.04, 0.0, 1.0, 50, 50))
    assert non_inferiority_p(test, 0.0) == pytest.approx(norm.sf(2.0))


def test_groups_of_one_are_compared() -> None:
    test = two_proportions(1, 1, 0, 1)
    assert (test.a, test.b, test.diff) == (1.0, 0.0, -1.0)
    assert test.z == pytest.approx(-1.0 / math.sqrt(0.5 * 0.5 * 2))


def test_sample_sizes_at_the_ends_of_their_ranges() -> None:
    assert isinstance(proportions_sample_size(0.0, 0.1), int)
    assert isinstance(proportions_sample_size(0.9, 1.0), int)
    assert proportions_sample_size(0.1, 0.2, alpha=1e-9) is not None
    assert proportions_sample_size(0.1, 0.2, power=1e-9) is not None
    z = norm.ppf(0.975) + norm.ppf(0.8)
    assert aucs_sample_size(0.0, 2.0, 0.1) == math.ceil(z**2 * 2.0 / 0.01)
    assert aucs_sample_size(2.0, 0.0, 0.1) == math.ceil(z**2 * 2.0 / 0.01)
    assert aucs_sample_size(0.0, 0.0, 0.1) == 1  # no variance: one request per group decides


@pytest.mark.parametrize(
    ("auc", "positives", "negatives"), [(0.0, 5, 5), (1.0, 5, 5), (0.8, 0, 5), (0.8, 5, 0), (0.8, -1, 5), (0.8, 5, -1)]
)
def test_hanley_mcneil_refuses_outside_its_domain(auc: float, positives: float, negatives: float) -> None:
    assert message(hanley_mcneil_variance, auc, positives, negatives) == (
        f"need 0 < auc < 1 and both classes present, got {auc}, {positives}, {negatives}"
    )


def test_hanley_mcneil_with_one_member_or_a_fraction_of_one() -> None:
    # A = 0.8, one positive and one negative: only the A(1 - A) term remains.
    assert hanley_mcneil_variance(0.8, 1, 1) == pytest.approx(0.8 * 0.2)
    assert hanley_mcneil_variance(0.8, 0.5, 2) > 0


def test_the_hanley_mcneil_fallback_uses_the_observed_auc_within_its_bounds() -> None:
    low = AucEstimate(0.7, None, 0.0, 1.0, 1, 3)
    assert unit_variance(low) == pytest.approx(hanley_mcneil_variance(0.7, 1, 3) * 4)
    below_chance = AucEstimate(0.2, None, 0.0, 1.0, 3, 1)
    assert unit_variance(below_chance) == pytest.approx(hanley_mcneil_variance(0.5, 3, 1) * 4)
