"""Drift math: PSI, the tests per feature, multiple-testing control, the decision rule and its refusals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hybridml.core.data import infer_schema
from hybridml.core.drift import (
    CHI2,
    CHI2_GOF,
    DEFAULT_ALPHA,
    DEFAULT_MIN_PSI,
    KS,
    NO_TEST,
    PSI_EPSILON,
    UNKNOWN_CELL,
    DriftConfig,
    adjust,
    compute_drift,
    psi,
)
from hybridml.core.profile import ReferenceProfile, build_profile
from hybridml.errors import InvalidInputError

N = 4000


def _table(rng: np.random.Generator, n: int = N, n_numeric: int = 3) -> pd.DataFrame:
    columns: dict[str, Any] = {f"x{i}": rng.normal(size=n) for i in range(n_numeric)}
    columns["flag"] = rng.random(n) < 0.3
    columns["color"] = rng.choice(["red", "green", "blue"], size=n, p=[0.5, 0.3, 0.2])
    columns["y"] = rng.choice(["no", "yes"], size=n)
    return pd.DataFrame(columns)


def _profile(frame: pd.DataFrame, scores: np.ndarray | None = None) -> ReferenceProfile:
    scores = np.random.default_rng(99).beta(2, 5, size=len(frame)) if scores is None else scores
    return build_profile(frame, infer_schema(frame, "y"), scores)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _table(np.random.default_rng(1))


@pytest.fixture(scope="module")
def profile(reference: pd.DataFrame) -> ReferenceProfile:
    return _profile(reference)


# ------------------------------------------------------------------------------------------------ PSI


def test_psi_of_identical_shares_is_zero_and_of_a_hand_made_case_is_known() -> None:
    assert psi([0.1, 0.2, 0.7], [0.1, 0.2, 0.7]) == 0.0
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.25 ln 2 + 0.25 ln 1.5
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5), abs=1e-12)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.2746530722, abs=1e-9)


def test_psi_counts_an_empty_cell_as_epsilon_so_it_stays_finite() -> None:
    expected = (0.5 - PSI_EPSILON) * math.log(0.5 / PSI_EPSILON) + (0.5 - 1.0) * math.log(0.5 / 1.0)
    assert psi([0.0, 1.0], [0.5, 0.5]) == pytest.approx(expected, rel=1e-12)
    assert PSI_EPSILON == 1e-4


def test_psi_refuses_shares_over_different_cells() -> None:
    with pytest.raises(InvalidInputError, match="PSI needs shares over the same cells, got 2 and 3"):
        psi([0.5, 0.5], [0.2, 0.3, 0.5])


# ------------------------------------------------------------------------------------------------ correction


def test_adjust_bh_and_holm() -> None:
    p = [0.01, 0.04, 0.03]
    assert adjust(p, "bh") == pytest.approx([0.03, 0.04, 0.04])  # p * m / rank, then the running minimum
    assert adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06])  # p * (m - rank + 1), then the running maximum
    assert adjust([0.6, 0.9], "holm") == pytest.approx([1.0, 1.0])  # capped at 1
    assert adjust([], "bh").size == 0
    with pytest.raises(InvalidInputError, match="correction must be one of bh, holm, got 'none'"):
        adjust(p, "none")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha must be between 0 and 1 \\(exclusive\\), got 0.0"),
        ({"alpha": 1.0}, "alpha must be between 0 and 1 \\(exclusive\\), got 1.0"),
        ({"min_psi": -0.1}, "min PSI must be a finite number of 0 or more, got -0.1"),
        ({"min_psi": math.inf}, "min PSI must be a finite number of 0 or more, got inf"),
        ({"correction": "bonferroni"}, "correction must be one of bh, holm, got 'bonferroni'"),
        ({"min_rows": 0}, "min rows must be a positive integer, got 0"),
        ({"min_rows": True}, "min rows must be a positive integer, got True"),
        ({"min_rows": 2.5}, "min rows must be a positive integer, got 2.5"),
    ],
)
def test_bad_configs_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{message}$"):
        DriftConfig(**kwargs)


def test_defaults_are_documented_values() -> None:
    assert (DEFAULT_ALPHA, DEFAULT_MIN_PSI) == (0.05, 0.1)
    assert DriftConfig() == DriftConfig(alpha=0.05, min_psi=0.1, correction="bh", min_rows=100)


def test_a_window_below_the_minimum_rows_is_measured_but_never_judged(profile: ReferenceProfile) -> None:
    shifted = _table(np.random.default_rng(3))
    shifted["x0"] = shifted["x0"] + 10.0  # plainly drifted, whatever the window's size
    scores = np.full(len(shifted), 0.99)
    rows = len(shifted)
    at_minimum = compute_drift(profile, shifted, scores, DriftConfig(min_rows=rows))
    assert at_minimum.drift is True and "x0" in at_minimum.drifted_features
    assert at_minimum.prediction is not None and at_minimum.prediction.drifted is True
    assert not any("minimum" in note for note in at_minimum.notes)
    below = compute_drift(profile, shifted, scores, DriftConfig(min_rows=rows + 1))
    assert below.drift is False and below.drifted_features == []
    assert below.prediction is not None and below.prediction.drifted is False
    assert below.features["x0"].psi == at_minimum.features["x0"].psi  # the figures are still there
    assert below.features["x0"].adjusted_p == at_minimum.features["x0"].adjusted_p
    assert f"the window has {rows} rows, fewer than the minimum of {rows + 1}: none judged drifted" in below.notes


# ------------------------------------------------------------------------------------------------ decisions


def test_a_window_from_the_reference_distribution_does_not_drift(profile: ReferenceProfile) -> None:
    window = _table(np.random.default_rng(2))
    result = compute_drift(profile, window)
    assert result.drift is False
    assert result.drifted_features == []
    assert result.rows == N
    assert set(result.features) == {"x0", "x1", "x2", "flag", "color"}
    assert {name: f.test for name, f in result.features.items()} == {
        "x0": KS,
        "x1": KS,
        "x2": KS,
        "flag": CHI2,  # two distinct values: tested over its one-bin-per-value bins
        "color": CHI2,
    }
    assert all(f.psi < DEFAULT_MIN_PSI for f in result.features.values())
    assert result.prediction is None
    assert result.notes == ()


def test_one_shifted_feature_among_30_is_found_and_the_others_are_not_flagged() -> None:
    rng = np.random.default_rng(7)
    profile = _profile(_table(rng, n_numeric=28))  # 28 numeric + flag + color = 30 features
    window = _table(rng, n_numeric=28)
    window["x13"] = window["x13"] + 0.5  # half a standard deviation
    result = compute_drift(profile, window)
    assert len(result.features) == 30
    assert result.drift is True
    assert result.drifted_features == ["x13"]
    shifted = result.features["x13"]
    assert shifted.adjusted_p < 0.05 and shifted.psi >= 0.1
    others = [f for name, f in result.features.items() if name != "x13"]
    assert all(not f.drifted for f in others)
    assert all(f.adjusted_p >= f.p_value for f in result.features.values())


def test_the_ks_statistic_from_the_sketch_is_within_one_percentile_of_the_exact_one() -> None:
    rng = np.random.default_rng(3)
    reference = _table(rng)
    window = _table(rng)
    window["x0"] = window["x0"] * 1.3 + 0.1
    result = compute_drift(_profile(reference), window)
    exact = stats.ks_2samp(reference["x0"], window["x0"])
    assert result.features["x0"].statistic == pytest.approx(exact.statistic, abs=0.011)
    assert result.features["x0"].p_value < 1e-6 and exact.pvalue < 1e-6
    same = stats.ks_2samp(reference["x1"], window["x1"])
    assert result.features["x1"].statistic == pytest.approx(same.statistic, abs=0.011)


def test_at_a_heavy_value_the_sketch_statistic_never_exceeds_the_exact_one() -> None:
    rng = np.random.default_rng(21)

    def zero_inflated(n: int) -> pd.DataFrame:
        frame = _table(rng, n)
        frame["x0"] = np.where(rng.random(n) < 0.6, 0.0, rng.exponential(2.0, size=n))
        return frame

    reference = zero_inflated(20_000)
    profile = _profile(reference)
    for _ in range(5):
        window = zero_inflated(5000)
        ours = compute_drift(profile, window).features["x0"]
        exact = stats.ks_2samp(reference["x0"], window["x0"]).statistic
        assert ours.test == KS
        assert ours.statistic <= exact + 1e-12
        assert ours.statistic >= exact - 0.011
    moved = zero_inflated(5000)
    moved["x0"] = np.where(rng.random(5000) < 0.4, 0.0, rng.exponential(2.0, size=5000))  # 40 % zeros, not 60 %
    found = compute_drift(profile, moved).features["x0"]
    assert found.statistic == pytest.approx(stats.ks_2samp(reference["x0"], moved["x0"]).statistic, abs=0.011)
    assert found.drifted is True


def test_alpha_and_min_psi_are_boundaries(profile: ReferenceProfile) -> None:
    window = _table(np.random.default_rng(4))
    window["x0"] = window["x0"] + 0.12
    first = compute_drift(profile, window, config=DriftConfig(alpha=0.5, min_psi=0.0)).features["x0"]
    assert 0.0 < first.adjusted_p < 0.5 and first.psi > 0.0
    at_alpha = compute_drift(profile, window, config=DriftConfig(alpha=first.adjusted_p, min_psi=0.0))
    assert at_alpha.features["x0"].drifted is False  # adjusted p must be below alpha, not equal
    above = DriftConfig(alpha=math.nextafter(first.adjusted_p, 1.0), min_psi=0.0)
    assert compute_drift(profile, window, config=above).features["x0"].drifted is True
    at_psi = DriftConfig(alpha=0.5, min_psi=first.psi)
    assert compute_drift(profile, window, config=at_psi).features["x0"].drifted is True  # PSI >= min_psi
    over_psi = DriftConfig(alpha=0.5, min_psi=math.nextafter(first.psi, 1.0))
    assert compute_drift(profile, window, config=over_psi).features["x0"].drifted is False


def test_a_large_window_with_a_negligible_shift_is_not_flagged() -> None:
    rng = np.random.default_rng(5)
    profile = _profile(_table(rng, n=50_000))
    window = _table(rng, n=50_000)
    window["x0"] = window["x0"] + 0.05
    result = compute_drift(profile, window)
    x0 = result.features["x0"]
    assert x0.adjusted_p < 0.05  # the test sees it...
    assert x0.psi < 0.1  # ...but it is too small to matter
    assert result.drift is False


def test_missing_rate_change_is_reported(profile: ReferenceProfile, reference: pd.DataFrame) -> None:
    window = _table(np.random.default_rng(6))
    window["x1"] = window["x1"].where(np.arange(N) % 10 >= 3)  # 30 % missing
    window.loc[: N // 5 - 1, "color"] = None  # 20 % missing
    result = compute_drift(profile, window)
    x1, color = result.features["x1"], result.features["color"]
    assert x1.missing_reference == 0.0
    assert x1.missing_current == pytest.approx(0.3)
    assert x1.missing_change == pytest.approx(0.3)
    assert x1.present == int(N * 0.7)
    assert color.missing_current == pytest.approx(0.2)
    assert color.missing_change == pytest.approx(0.2)
    assert x1.unknown_rate == 0.0


def test_unknown_categories_count_as_their_own_cell(profile: ReferenceProfile) -> None:
    window = _table(np.random.default_rng(8))
    window.loc[: N // 4 - 1, "color"] = "purple"  # 25 % of rows hold a category the model never saw
    color = compute_drift(profile, window).features["color"]
    assert color.unknown_rate == pytest.approx(0.25)
    assert color.labels == ("blue", "green", "red", UNKNOWN_CELL)
    assert color.reference_shares[-1] == 0.0
    assert color.current_shares[-1] == pytest.approx(0.25)
    assert color.missing_current == 0.0  # unknown is not missing
    assert color.drifted is True
    assert color.psi > 1.0


def test_prediction_drift(profile: ReferenceProfile) -> None:
    window = _table(np.random.default_rng(9))
    same = compute_drift(profile, window, scores=np.random.default_rng(10).beta(2, 5, size=N))
    assert same.prediction is not None
    assert same.prediction.test == KS
    assert same.prediction.drifted is False
    assert same.prediction.present == N
    shifted = compute_drift(profile, window, scores=np.random.default_rng(10).beta(5, 2, size=N))
    assert shifted.prediction is not None
    assert shifted.prediction.drifted is True
    assert shifted.prediction.psi > 1.0
    assert shifted.prediction.labels[0] == "[0, 0.1)" and shifted.prediction.labels[-1] == "[0.9, 1]"
    assert shifted.drift is False  # predictions alone do not set drift: the features did not move


def test_a_format_1_profile_falls_back_to_a_binned_test_and_says_so(
    profile: ReferenceProfile, reference: pd.DataFrame
) -> None:
    raw = profile.to_dict()
    raw["format_version"] = 1
    for part in (*raw["numeric"].values(), *raw["categorical"].values(), raw["scores"]):
        part.pop("quantiles", None)
        part.pop("count")
    old = ReferenceProfile.from_dict(raw)
    window = _table(np.random.default_rng(11))
    window["x2"] = window["x2"] - 0.6
    result = compute_drift(old, window, scores=np.random.default_rng(12).beta(2, 5, size=N))
    assert {f.test for f in result.features.values()} == {CHI2_GOF}
    assert result.prediction is not None and result.prediction.test == CHI2_GOF
    assert result.drifted_features == ["x2"]
    assert len(result.notes) == 1
    assert result.notes[0].startswith("reference profile format 1 has no quantile sketch or counts")


def test_a_feature_with_no_value_in_the_window_is_not_tested(profile: ReferenceProfile) -> None:
    window = _table(np.random.default_rng(13))
    window["x0"] = np.nan
    result = compute_drift(profile, window)
    x0 = result.features["x0"]
    assert (x0.test, x0.psi, x0.p_value, x0.adjusted_p, x0.drifted) == (NO_TEST, 0.0, 1.0, 1.0, False)
    assert x0.missing_current == 1.0
    assert result.notes == ("not tested (no value in the window or in the reference): ['x0']",)


def test_a_mapping_of_lists_is_a_window(profile: ReferenceProfile) -> None:
    frame = _table(np.random.default_rng(14), n=300)
    window = {name: frame[name].tolist() for name in ("x0", "x1", "x2", "flag", "color")}
    window["x0"][0] = None
    from_lists = compute_drift(profile, window)
    frame.loc[0, "x0"] = np.nan
    from_frame = compute_drift(profile, frame)
    assert from_lists.to_dict() == from_frame.to_dict()


def test_an_empty_window_and_a_missing_feature_are_refused(profile: ReferenceProfile) -> None:
    window = _table(np.random.default_rng(15))
    with pytest.raises(InvalidInputError, match=r"^the window is empty: drift needs at least one row$"):
        compute_drift(profile, window.iloc[:0])
    with pytest.raises(InvalidInputError, match=r"^the window has no column for feature\(s\) \['x1', 'color'\]$"):
        compute_drift(profile, window.drop(columns=["x1", "color"]))
    with pytest.raises(InvalidInputError, match=r"^window columns differ in length: \[1, 2\]$"):
        compute_drift(profile, {"x0": [1.0], "x1": [1.0, 2.0], "x2": [1.0], "flag": [1], "color": ["red"]})
    with pytest.raises(InvalidInputError, match="values must be numbers or None"):
        compute_drift(profile, {"x0": ["a"], "x1": [1.0], "x2": [1.0], "flag": [1], "color": ["red"]})


def test_to_dict_holds_every_field(profile: ReferenceProfile) -> None:
    window = _table(np.random.default_rng(16))
    result = compute_drift(profile, window, scores=np.full(N, 0.2))
    raw = result.to_dict()
    assert set(raw) == {
        "drift",
        "rows",
        "alpha",
        "min_psi",
        "correction",
        "drifted_features",
        "features",
        "prediction",
        "notes",
    }
    assert set(raw["features"]["x0"]) == {
        "kind",
        "test",
        "psi",
        "statistic",
        "p_value",
        "adjusted_p",
        "drifted",
        "present",
        "missing_reference",
        "missing_current",
        "missing_change",
        "unknown_rate",
    }
    assert raw["features"]["color"]["kind"] == "category" and raw["features"]["x0"]["kind"] == "numeric"
    assert set(raw["prediction"]) == {"test", "psi", "statistic", "p_value", "drifted", "present"}
    with_cells = result.to_dict(cells=True)
    assert with_cells["features"]["flag"]["labels"] == ("[0, 0.5)", "[0.5, 1]")
    assert len(with_cells["features"]["flag"]["reference_shares"]) == 2
