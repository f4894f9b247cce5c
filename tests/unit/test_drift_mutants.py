"""Drift math the mutation run (issue 12) found unasserted: the statistics against scipy as the oracle, hand-made
sketch cases at a heavy value, every field of an untested feature, how category values are counted, and the
boundaries of the decision for predictions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from hybridml.core.data import infer_schema
from hybridml.core.drift import (
    CHI2,
    KS,
    NO_TEST,
    UNKNOWN_CELL,
    DriftConfig,
    _chi2_gof,
    _chi2_homogeneity,
    _ks_p,
    _sketch_ks,
    adjust,
    compute_drift,
)
from hybridml.core.profile import CategoricalProfile, NumericProfile, ReferenceProfile, build_profile
from hybridml.errors import InvalidInputError

pytestmark = pytest.mark.unit

# x: three bins with 20 %, 30 % and 50 % of 100 values; a sketch of three distinct values, so it is tested by
# chi-square over its bins (KS needs more distinct sketch values than bins). c: two categories. Scores: KS.
X = NumericProfile(
    edges=(0.0, 1.0, 2.0, 3.0),
    shares=(0.2, 0.3, 0.5),
    missing=0.1,
    quantiles=(0.5,) * 20 + (1.5,) * 30 + (2.5,) * 51,
    count=100,
)
C = CategoricalProfile(shares={"a": 0.6, "b": 0.4}, missing=0.2, count=100)
SCORES = NumericProfile(
    edges=(0.0, 0.5, 1.0), shares=(0.5, 0.5), missing=0.0, quantiles=tuple(np.linspace(0, 1, 101)), count=1000
)
PROFILE = ReferenceProfile(format_version=2, numeric={"x": X}, categorical={"c": C}, scores=SCORES)


def window(x: list[Any], c: list[Any]) -> dict[str, list[Any]]:
    return {"x": x, "c": c}


# ------------------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(
    ("reference", "current"),
    [([20, 30, 50], [30, 30, 40]), ([0, 30, 70], [1, 49, 50]), ([10, 20], [20, 10]), ([5, 0, 7], [9, 0, 1])],
)
def test_chi2_homogeneity_agrees_with_scipy(reference: list[int], current: list[int]) -> None:
    table = np.array([reference, current])
    table = table[:, table.sum(axis=0) > 0]
    expected = stats.chi2_contingency(table, correction=False)
    statistic, p_value = _chi2_homogeneity(np.array(reference, dtype=float), np.array(current, dtype=float))
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-9)


@pytest.mark.parametrize(("reference", "current"), [([0, 0, 0], [1, 2, 3]), ([4, 5], [0, 0]), ([0, 9, 0], [0, 3, 0])])
def test_chi2_homogeneity_without_two_cells_and_two_rows_is_no_evidence(
    reference: list[int], current: list[int]
) -> None:
    assert _chi2_homogeneity(np.array(reference, dtype=float), np.array(current, dtype=float)) == (0.0, 1.0)


def test_chi2_goodness_of_fit_agrees_with_scipy() -> None:
    statistic, p_value = _chi2_gof(np.array([0.2, 0.8]), np.array([30.0, 70.0]))
    expected = stats.chisquare([30, 70], f_exp=[20, 80])
    assert (statistic, p_value) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
    statistic, p_value = _chi2_gof(np.array([0.0, 0.5, 0.5]), np.array([1.0, 4.0, 5.0]))
    floor = np.array([1e-4, 0.5, 0.5]) / 1.0001 * 10
    expected = stats.chisquare([1, 4, 5], f_exp=floor)
    assert (statistic, p_value) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
    assert _chi2_gof(np.array([1.0]), np.array([7.0])) == (0.0, 1.0)


def test_the_ks_p_value_is_exact_up_to_1000_effective_rows_and_limiting_above() -> None:
    assert _ks_p(0.05, 2000, 2000) == float(stats.kstwo.sf(0.05, 1000))  # exactly 1000: still exact
    assert _ks_p(0.05, 2002, 2002) == float(special.kolmogorov(math.sqrt(1001) * 0.05))
    assert _ks_p(0.5, 1, 1) == float(stats.kstwo.sf(0.5, 1))  # 0.5 effective rows: at least one


def test_at_a_heavy_value_the_sketch_allows_its_whole_interval() -> None:
    # Sketch [0, 1, 1] (points at 0 %, 50 %, 100 %): 0 is met once, at 0 %; 1 is heavy, from 50 % to 100 %, so the
    # reference CDF just below 1 is anywhere in [0, 0.5] and at 1 in [1, 1].
    sketch = np.array([0.0, 1.0, 1.0])
    distinct = np.array([0.0, 1.0])
    # All current values are 1: the CDF below 1 is 0, inside [0, 0.5]; at 0 it is 0, as the sketch says.
    assert _sketch_ks(sketch, distinct, np.array([1.0, 1.0, 1.0, 1.0])) == 0.0
    # One value in four is 0: at 0 the current CDF is 0.25 where the reference's is exactly 0 (0 is not heavy).
    assert _sketch_ks(sketch, distinct, np.array([0.0, 1.0, 1.0, 1.0])) == 0.25


# ------------------------------------------------------------------------------------------------ the window


def test_a_numeric_feature_over_few_values_is_tested_by_chi2_with_reference_counts() -> None:
    x = [0.5] * 30 + [1.5] * 30 + [2.5] * 40
    result = compute_drift(PROFILE, window(x, ["a"] * 100)).features["x"]
    expected = stats.chi2_contingency([[20, 30, 50], [30, 30, 40]], correction=False)
    assert result.test == CHI2
    assert result.current_shares == (0.3, 0.3, 0.4)
    assert (result.statistic, result.p_value) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))


def test_a_constant_feature_is_one_bin_and_still_tested() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"k": np.full(200, 2.0), "z": rng.normal(size=200), "y": rng.choice(["a", "b"], 200)})
    profile = build_profile(frame, infer_schema(frame, "y"), rng.random(200))
    k = compute_drift(profile, frame.drop(columns="y")).features["k"]
    assert (k.test, k.labels, k.reference_shares, k.current_shares, k.psi, k.present) == (
        CHI2,
        ("[2, 2]",),
        (1.0,),
        (1.0,),
        0.0,
        200,
    )


def test_an_untested_feature_reports_every_field_as_no_evidence() -> None:
    result = compute_drift(PROFILE, window([None, math.nan, None], [None, math.nan, None]))
    for name, kind, missing_reference in (("x", "numeric", 0.1), ("c", "category", 0.2)):
        f = result.features[name]
        assert (f.name, f.kind, f.test, f.psi, f.statistic, f.p_value, f.adjusted_p, f.drifted) == (
            name,
            kind,
            NO_TEST,
            0.0,
            0.0,
            1.0,
            1.0,
            False,
        )
        assert (f.present, f.labels, f.reference_shares, f.current_shares, f.unknown_rate) == (0, (), (), (), 0.0)
        assert (f.missing_reference, f.missing_current) == (missing_reference, 1.0)
        assert f.missing_change == pytest.approx(1.0 - missing_reference)
    assert result.notes[-1] == "not tested (no value in the window or in the reference): ['x', 'c']"


def test_category_values_are_counted_as_text_and_missing_values_left_out() -> None:
    # 1 and "1" are one category; None and NaN are missing; a known category absent from the window has share 0.
    profile = ReferenceProfile(
        format_version=2,
        numeric={},
        categorical={"c": CategoricalProfile(shares={"1": 0.5, "2": 0.5}, missing=0.0, count=10)},
        scores=SCORES,
    )
    c = compute_drift(profile, {"c": [1, "1", "1", None, math.nan]}).features["c"]
    assert (c.labels, c.current_shares, c.present, c.missing_current) == (
        ("1", "2", UNKNOWN_CELL),
        (1.0, 0.0, 0.0),
        3,
        0.4,
    )
    assert c.test == CHI2


def test_pandas_missing_values_are_missing_not_a_category() -> None:
    values = pd.Series(["a", pd.NA, "b", pd.NA], dtype="string")
    c = compute_drift(PROFILE, {"x": [0.5] * 4, "c": values}).features["c"]
    assert (c.present, c.missing_current, c.unknown_rate) == (2, 0.5, 0.0)
    assert c.current_shares == (0.5, 0.5, 0.0)


def test_one_present_category_value_is_tested() -> None:
    c = compute_drift(PROFILE, window([0.5, 0.5], ["a", None])).features["c"]
    assert (c.test, c.present, c.current_shares) == (CHI2, 1, (1.0, 0.0, 0.0))


def test_a_window_without_columns_names_every_missing_feature() -> None:
    with pytest.raises(InvalidInputError) as caught:
        compute_drift(PROFILE, {})
    assert str(caught.value) == "the window has no column for feature(s) ['x', 'c']"


def test_the_missing_change_is_current_less_reference() -> None:
    x = compute_drift(PROFILE, window([0.5, 1.5, None, None], ["a"] * 4)).features["x"]
    assert (x.missing_reference, x.missing_current) == (0.1, 0.5)
    assert x.missing_change == pytest.approx(0.4)


def test_the_result_carries_the_config_and_holm_is_applied() -> None:
    # Two p-values close enough (about 0.50 and 0.38) that Holm (0.76, 0.76) and BH (0.50, 0.50) differ.
    x = [0.5] * 14 + [1.5] * 30 + [2.5] * 56
    c = ["a"] * 66 + ["b"] * 34
    config = DriftConfig(alpha=0.2, min_psi=0.05, correction="holm", min_rows=1)
    result = compute_drift(PROFILE, window(x, c), config=config)
    assert (result.alpha, result.min_psi, result.correction, result.rows) == (0.2, 0.05, "holm", 100)
    p = [result.features["x"].p_value, result.features["c"].p_value]
    assert [result.features["x"].adjusted_p, result.features["c"].adjusted_p] == list(adjust(p, "holm"))
    assert list(adjust(p, "holm")) != list(adjust(p, "bh"))


def test_a_window_of_one_row_is_judged_when_min_rows_is_one() -> None:
    assert DriftConfig(min_rows=1).min_rows == 1
    result = compute_drift(PROFILE, window([0.5], ["a"]), config=DriftConfig(min_rows=1))
    assert not any("fewer than the minimum" in note for note in result.notes)


def test_the_format_1_note_is_one_exact_sentence() -> None:
    old = ReferenceProfile(
        format_version=1,
        numeric={"x": NumericProfile(X.edges, X.shares, X.missing)},
        categorical={"c": CategoricalProfile(C.shares, C.missing)},
        scores=NumericProfile(SCORES.edges, SCORES.shares, 0.0),
    )
    result = compute_drift(old, window([0.5, 1.5], ["a", "b"]), config=DriftConfig(min_rows=1))
    assert result.notes == (
        "reference profile format 1 has no quantile sketch or counts: numeric features and scores are tested by"
        " chi-square goodness of fit over the profile's bins, not KS (retrain the model for a format-2 profile)",
    )


def test_prediction_drift_needs_p_below_alpha_and_psi_at_least_min_psi() -> None:
    rows = window([0.5] * 200, ["a"] * 200)
    scores = np.concatenate([np.full(130, 0.2), np.full(70, 0.8)])
    first = compute_drift(PROFILE, rows, scores, DriftConfig(alpha=0.5, min_psi=0.0)).prediction
    assert first is not None and first.test == KS and 0.0 < first.p_value < 0.5 and first.psi > 0.0

    def drifted(alpha: float, min_psi: float) -> bool:
        prediction = compute_drift(PROFILE, rows, scores, DriftConfig(alpha=alpha, min_psi=min_psi)).prediction
        assert prediction is not None
        return prediction.drifted

    assert drifted(first.p_value, 0.0) is False
    assert drifted(math.nextafter(first.p_value, 1.0), 0.0) is True
    assert drifted(0.5, first.psi) is True
    assert drifted(0.5, math.nextafter(first.psi, 1.0)) is False


def test_adjust_defaults_to_bh_and_gives_floats() -> None:
    p = [0.01, 0.04, 0.03]
    assert list(adjust(p)) == list(adjust(p, "bh"))
    holm = adjust([0, 1], "holm")
    assert holm.dtype == np.float64 and list(holm) == [0.0, 1.0]


def test_one_p_value_with_an_unknown_correction_is_refused_too() -> None:
    with pytest.raises(InvalidInputError) as caught:
        adjust([0.5], "none")
    assert str(caught.value) == "correction must be one of bh, holm, got 'none'"


def test_a_feature_without_reference_values_is_not_tested() -> None:
    empty_x = NumericProfile(edges=(), shares=(), missing=1.0, quantiles=(), count=0)
    empty_c = CategoricalProfile(shares={"a": 0.0, "b": 0.0}, missing=1.0, count=0)  # categories from the schema
    profile = ReferenceProfile(format_version=2, numeric={"x": empty_x}, categorical={"c": empty_c}, scores=SCORES)
    result = compute_drift(profile, window([0.5, 1.5], ["a", "b"]))
    for name in ("x", "c"):
        f = result.features[name]
        assert (f.test, f.present, f.psi, f.p_value, f.labels) == (NO_TEST, 2, 0.0, 1.0, ())


@pytest.mark.parametrize(("distinct", "test"), [(10, CHI2), (11, KS)])
def test_ks_needs_more_distinct_sketch_values_than_bins(distinct: int, test: str) -> None:
    # 101 sketch points over `distinct` values 0..distinct-1, ten bins over [0, distinct - 1].
    quantiles = tuple(float(v) for v in np.floor(np.linspace(0, distinct - 0.001, 101)))
    edges = tuple(float(e) for e in np.linspace(0, distinct - 1, 11))
    x = NumericProfile(edges=edges, shares=(0.1,) * 10, missing=0.0, quantiles=quantiles, count=1000)
    assert len(set(quantiles)) == distinct
    profile = ReferenceProfile(format_version=2, numeric={"x": x}, categorical={}, scores=SCORES)
    assert compute_drift(profile, {"x": [float(v % distinct) for v in range(50)]}).features["x"].test == test
