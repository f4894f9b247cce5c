"""A/B report: choosing the variants, the test per metric, the sample size still needed, the verdict."""

from __future__ import annotations

import pytest

from hybridml.core.quality import aucs_sample_size, compare_aucs, proportions_sample_size, unit_variance
from hybridml.errors import InvalidInputError
from hybridml.monitoring.ab import A_BETTER, B_BETTER, UNDECIDED, ab_report, parse_key, pick_variants
from hybridml.monitoring.feedback_join import OnlineQuality


def q(auc: float | None, se: float | None, n: int, positives: int) -> OnlineQuality:
    if auc is None or se is None:
        return OnlineQuality(None, None, None, n, positives, n - positives)
    return OnlineQuality(auc, auc - 1.96 * se, auc + 1.96 * se, n, positives, n - positives, se=se)


QUALITY = {
    ("1", "stable"): q(0.80, 0.02, 400, 200),
    ("2", "canary"): q(0.90, 0.015, 380, 190),
    ("3", "canary"): q(0.70, 0.05, 40, 20),
    ("9", "shadow"): q(0.81, 0.02, 400, 200),
}


def test_parse_key() -> None:
    assert parse_key("3:canary") == ("3", "canary")
    assert parse_key("model-2:shadow") == ("model-2", "shadow")
    for bad in ("3", "3:", ""):
        with pytest.raises(InvalidInputError, match="VERSION:VARIANT"):
            parse_key(bad)


def test_pick_variants_defaults_and_refusals() -> None:
    assert pick_variants(QUALITY) == (("1", "stable"), ("2", "canary"))  # the canary with more labels
    assert pick_variants(QUALITY, b=("9", "shadow")) == (("1", "stable"), ("9", "shadow"))
    no_canary = {k: v for k, v in QUALITY.items() if k[1] != "canary"}
    assert pick_variants(no_canary) == (("1", "stable"), ("9", "shadow"))
    with pytest.raises(InvalidInputError, match=r"variant B \(no default\).*found: 1:stable"):
        pick_variants({("1", "stable"): QUALITY[("1", "stable")]})
    with pytest.raises(InvalidInputError, match=r"variant A \(7:stable\)"):
        pick_variants(QUALITY, a=("7", "stable"))
    with pytest.raises(InvalidInputError, match="the same group"):
        pick_variants(QUALITY, a=("2", "canary"))


def test_auc_report_b_better() -> None:
    report = ab_report(QUALITY, ("1", "stable"), ("2", "canary"))
    a, b = QUALITY[("1", "stable")].estimate(), QUALITY[("2", "canary")].estimate()
    assert a is not None and b is not None
    test = compare_aucs(a, b)
    assert report["verdict"] == B_BETTER
    assert report["difference"] == pytest.approx(0.10)
    assert report["p_value"] == pytest.approx(test.p_value)
    assert (report["low"], report["high"]) == (pytest.approx(test.low), pytest.approx(test.high))
    assert report["a"] == {"version": "1", "variant": "stable", "n": 400, "positives": 200, "value": 0.80,
                           "low": pytest.approx(0.7608), "high": pytest.approx(0.8392)}  # fmt: skip
    required = aucs_sample_size(unit_variance(a), unit_variance(b), 0.10)
    assert required is not None and report["needed_per_variant"] == max(0, required - 380)
    swapped = ab_report(QUALITY, ("2", "canary"), ("1", "stable"))
    assert swapped["verdict"] == A_BETTER


def test_auc_report_no_difference_yet_says_how_many_more() -> None:
    report = ab_report(QUALITY, ("1", "stable"), ("9", "shadow"))
    assert report["verdict"] == UNDECIDED
    assert report["p_value"] > 0.05
    a, b = QUALITY[("1", "stable")].estimate(), QUALITY[("9", "shadow")].estimate()
    assert a is not None and b is not None
    required = aucs_sample_size(unit_variance(a), unit_variance(b), 0.01)
    assert required is not None and report["needed_per_variant"] == required - 400 > 0
    planned = ab_report(QUALITY, ("1", "stable"), ("9", "shadow"), effect=0.05)
    assert planned["needed_per_variant"] == max(0, (aucs_sample_size(unit_variance(a), unit_variance(b), 0.05) or 0)
                                                - 400)  # fmt: skip


def test_auc_report_without_both_classes_is_undecided() -> None:
    quality = {("1", "stable"): q(None, None, 30, 30), ("2", "canary"): QUALITY[("2", "canary")]}
    report = ab_report(quality, ("1", "stable"), ("2", "canary"))
    assert (report["verdict"], report["p_value"], report["needed_per_variant"]) == (UNDECIDED, None, None)
    assert report["reason"] == "an AUC needs at least two labels of each class in both variants"


def test_positive_rate_report() -> None:
    quality = {("1", "stable"): q(None, None, 1000, 100), ("2", "canary"): q(None, None, 1000, 150)}
    report = ab_report(quality, ("1", "stable"), ("2", "canary"), metric="positive_rate")
    assert report["verdict"] == B_BETTER
    assert (report["a"]["value"], report["b"]["value"]) == (0.1, 0.15)
    assert report["difference"] == pytest.approx(0.05)
    required = proportions_sample_size(0.10, 0.15)
    assert required is not None and report["needed_per_variant"] == max(0, required - 1000)
    small = {("1", "stable"): q(None, None, 100, 10), ("2", "canary"): q(None, None, 100, 12)}
    undecided = ab_report(small, ("1", "stable"), ("2", "canary"), metric="positive_rate")
    assert undecided["verdict"] == UNDECIDED
    assert undecided["needed_per_variant"] == (proportions_sample_size(0.10, 0.12) or 0) - 100
    empty = {("1", "stable"): q(None, None, 0, 0), ("2", "canary"): q(None, None, 10, 1)}
    assert ab_report(empty, ("1", "stable"), ("2", "canary"), metric="positive_rate")["verdict"] == UNDECIDED
    with pytest.raises(InvalidInputError, match="unknown metric"):
        ab_report(small, ("1", "stable"), ("2", "canary"), metric="revenue")
