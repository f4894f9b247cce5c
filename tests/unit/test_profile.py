"""Reference profile: bin edges and shares, category shares, missing shares, the dict format and the bundle file."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hybridml.core import data, model
from hybridml.core.profile import (
    PROFILE_FORMAT_VERSION,
    QUANTILE_POINTS,
    SCORE_EDGES,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    bin_shares,
    build_profile,
    category_shares,
    missing_share,
    numeric_edges,
    numeric_profile,
    quantile_sketch,
)
from hybridml.core.schema import FeatureSchema
from hybridml.errors import InvalidInputError

# ------------------------------------------------------------------------------------------------ bin_shares


def test_bin_shares_put_each_value_in_one_bin_with_the_last_bin_closed() -> None:
    edges = (0.0, 1.0, 2.0, 3.0)
    # -5 is below e0 (first bin), 1.0 opens the second bin, 3.0 is the closed end, 9 is above (last bin).
    values = [-5.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 9.0]
    assert bin_shares(values, edges) == (3 / 8, 2 / 8, 3 / 8)
    assert bin_shares([2.999], edges) == (0.0, 0.0, 1.0)
    assert bin_shares([0.999], edges) == (1.0, 0.0, 0.0)


def test_bin_shares_sum_to_one_and_leave_missing_values_out() -> None:
    rng = np.random.default_rng(1)
    values: list[float | None] = [*rng.normal(size=500).tolist(), None, math.nan, None]
    shares = bin_shares(values, (-1.0, 0.0, 1.0))
    assert math.isclose(sum(shares), 1.0)
    assert len(shares) == 2
    assert bin_shares([None, math.nan], (0.0, 1.0, 2.0)) == (0.0, 0.0)
    assert bin_shares(np.array([1, 2, 3]), (0.0, 2.0, 4.0)) == (1 / 3, 2 / 3)
    assert bin_shares(pd.Series([1, None, 3], dtype="Int64"), (0.0, 2.0, 4.0)) == (0.5, 0.5)
    assert bin_shares([True, False, True], (0.0, 0.5, 1.0)) == (1 / 3, 2 / 3)


@pytest.mark.parametrize(
    "edges", [(), (1.0,), (2.0, 1.0), (0.0, math.nan, 1.0), (0.0, math.inf)], ids=["none", "one", "down", "nan", "inf"]
)
def test_bin_shares_refuse_bad_edges(edges: tuple[float, ...]) -> None:
    with pytest.raises(InvalidInputError, match="bin edges must be at least 2 finite, non-decreasing numbers"):
        bin_shares([1.0], edges)


def test_bin_shares_refuse_text() -> None:
    with pytest.raises(InvalidInputError, match="values must be numbers or None"):
        bin_shares([1.0, "red"], (0.0, 1.0))  # type: ignore[list-item]


def test_missing_share_counts_none_and_nan() -> None:
    assert missing_share([1.0, None, math.nan, 2.0]) == 0.5
    assert missing_share(["a", None, "b", "c"]) == 0.25
    assert missing_share(pd.Series([1, None, None, None], dtype="Int64")) == 0.75
    assert missing_share([]) == 0.0
    assert missing_share([0.0, math.inf]) == 0.0  # infinite is a value, not a missing one


# ------------------------------------------------------------------------------------------------ edges


def test_a_constant_column_has_one_closed_bin() -> None:
    profile = numeric_profile([7.0] * 20 + [None] * 5)
    assert profile == NumericProfile(
        edges=(7.0, 7.0), shares=(1.0,), missing=0.2, quantiles=(7.0,) * QUANTILE_POINTS, count=20
    )
    assert bin_shares([7.0, 8.0, 6.0], profile.edges) == (1.0,)


def test_an_integer_column_gets_one_bin_per_value() -> None:
    values = [0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4]
    profile = numeric_profile(values)
    assert profile.edges == (0.0, 0.5, 1.5, 2.5, 3.5, 4.0)
    assert profile.shares == (1 / 15, 2 / 15, 3 / 15, 4 / 15, 5 / 15)
    assert numeric_edges([0, 1, 0, 1]) == (0.0, 0.5, 1.0)  # a flag keeps two bins, not one [0, 1]
    assert numeric_edges(list(range(10))) == (0.0, *(i + 0.5 for i in range(9)), 9.0)  # 10 values: still 1 each


def test_a_continuous_column_gets_decile_bins() -> None:
    values = np.random.default_rng(2).normal(size=1000)
    profile = numeric_profile(values)
    assert len(profile.edges) == 11
    assert profile.edges[0] == values.min() and profile.edges[-1] == values.max()
    assert all(math.isclose(s, 0.1, abs_tol=0.002) for s in profile.shares)
    assert profile.missing == 0.0


def test_a_heavy_value_gets_a_bin_of_its_own() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([np.zeros(800), rng.uniform(1.0, 5.0, size=200)])  # 80% zeros
    profile = numeric_profile(values)
    zero_bin = profile.edges.index(0.0)
    assert profile.edges[zero_bin + 1] < values[values > 0].min()  # closed before the first non-zero value
    assert profile.shares[zero_bin] == 0.8
    assert math.isclose(sum(profile.shares), 1.0)
    # The same at the top: a heavy maximum is not mixed with the values below it.
    below = rng.uniform(0.0, 4.0, size=200)
    top = numeric_profile(np.concatenate([np.full(800, 5.0), below]))
    assert top.shares[-1] == 0.8
    assert below.max() < top.edges[-2] < 5.0 == top.edges[-1]


def test_no_values_means_no_bins() -> None:
    assert numeric_profile([None, None]) == NumericProfile(edges=(), shares=(), missing=1.0, quantiles=(), count=0)


def test_the_quantile_sketch_holds_the_percentiles_of_present_values() -> None:
    values = [*range(201), None, math.nan]  # 0..200: the k-th percentile is exactly 2k
    sketch = quantile_sketch(values)
    assert QUANTILE_POINTS == 101
    assert sketch == pytest.approx([2.0 * k for k in range(101)], abs=1e-9)
    assert quantile_sketch([None]) == ()
    profile = numeric_profile(values)
    assert profile.quantiles == sketch
    assert profile.count == 201


# ------------------------------------------------------------------------------------------------ categories


def test_category_shares_cover_known_categories_and_name_unknown_ones() -> None:
    shares = category_shares(["red", "red", "blue", None, "pink"], ("blue", "green", "red"))
    assert shares == {"blue": 0.25, "green": 0.0, "pink": 0.25, "red": 0.5}
    assert category_shares([1, 1, 2]) == {"1": 2 / 3, "2": 1 / 3}  # compared as text, like the schema
    assert category_shares([None], ("a",)) == {"a": 0.0}


# ------------------------------------------------------------------------------------------------ build


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    n = 200
    return pd.DataFrame(
        {
            "x": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "k": rng.integers(0, 3, size=n),
            "flag": rng.random(n) < 0.25,
            "color": rng.choice(["red", "green", None], size=n, p=[0.5, 0.3, 0.2]),
            "y": rng.choice(["no", "yes"], size=n),
        }
    )


def test_build_profile_describes_each_feature_and_the_scores(table: pd.DataFrame) -> None:
    schema = data.infer_schema(table, "y")
    scores = [0.05, 0.15, 0.15, 0.95, 1.0, math.nan]
    profile = build_profile(table, schema, scores)
    assert profile.format_version == PROFILE_FORMAT_VERSION == 2
    assert profile.has_sketch
    assert profile.numeric["x"].count == int(table["x"].notna().sum())
    assert profile.numeric["x"].quantiles == quantile_sketch(table["x"])
    assert profile.scores.count == 5  # the NaN score is missing
    assert set(profile.numeric) == {"x", "k", "flag"}
    assert set(profile.categorical) == {"color"}
    assert profile.numeric["x"].missing == float(table["x"].isna().mean())
    assert profile.numeric["k"].edges == (0.0, 0.5, 1.5, 2.0)
    assert profile.numeric["k"].shares == tuple(float((table["k"] == v).mean()) for v in (0, 1, 2))
    assert profile.numeric["flag"].edges == (0.0, 0.5, 1.0)  # booleans as 0/1
    assert profile.numeric["flag"].shares[1] == float(table["flag"].mean())
    color = profile.categorical["color"]
    present = table["color"].dropna()
    assert color == CategoricalProfile(
        shares={"green": float((present == "green").mean()), "red": float((present == "red").mean())},
        missing=float(table["color"].isna().mean()),
        count=int(present.size),
    )
    assert profile.scores.edges == SCORE_EDGES == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert profile.scores.shares == (0.2, 0.4, 0, 0, 0, 0, 0, 0, 0, 0.4)
    assert profile.scores.missing == 1 / 6


def test_build_profile_names_a_missing_feature(table: pd.DataFrame) -> None:
    schema = data.infer_schema(table, "y")
    with pytest.raises(InvalidInputError, match="feature column 'k' is not in the training split"):
        build_profile(table.drop(columns=["k"]), schema, [0.5])


# ------------------------------------------------------------------------------------------------ format


def test_round_trip_through_json(table: pd.DataFrame) -> None:
    profile = build_profile(table, data.infer_schema(table, "y"), np.linspace(0, 1, 7))
    raw = json.loads(json.dumps(profile.to_dict()))
    assert raw["format_version"] == 2
    assert set(raw) == {"format_version", "numeric", "categorical", "scores"}
    assert set(raw["numeric"]["x"]) == {"edges", "shares", "missing", "quantiles", "count"}
    assert len(raw["numeric"]["x"]["quantiles"]) == QUANTILE_POINTS
    assert set(raw["scores"]) == {"edges", "shares", "missing", "quantiles", "count"}
    assert set(raw["categorical"]["color"]) == {"shares", "missing", "count"}
    assert ReferenceProfile.from_dict(raw) == profile


def test_a_format_1_profile_is_read_without_sketches_and_written_back_unchanged() -> None:
    raw = _valid_v1()
    profile = ReferenceProfile.from_dict(copy.deepcopy(raw))
    assert profile.format_version == 1
    assert not profile.has_sketch
    assert profile.numeric["x"] == NumericProfile(edges=(0.0, 1.0, 2.0), shares=(0.25, 0.75), missing=0.1)
    assert profile.numeric["x"].quantiles == () and profile.numeric["x"].count is None
    assert profile.categorical["c"].count is None
    assert profile.to_dict() == raw


def _valid_v1() -> dict[str, Any]:
    return {
        "format_version": 1,
        "numeric": {"x": {"edges": [0.0, 1.0, 2.0], "shares": [0.25, 0.75], "missing": 0.1}},
        "categorical": {"c": {"shares": {"a": 0.5, "b": 0.5}, "missing": 0.0}},
        "scores": {"edges": [0.0, 0.5, 1.0], "shares": [1.0, 0.0], "missing": 0.0},
    }


def _sketch(low: float, high: float) -> list[float]:
    return [low + (high - low) * k / (QUANTILE_POINTS - 1) for k in range(QUANTILE_POINTS)]


def _valid() -> dict[str, Any]:
    return {
        "format_version": 2,
        "numeric": {
            "x": {
                "edges": [0.0, 1.0, 2.0],
                "shares": [0.25, 0.75],
                "missing": 0.1,
                "quantiles": _sketch(0.0, 2.0),
                "count": 40,
            }
        },
        "categorical": {"c": {"shares": {"a": 0.5, "b": 0.5}, "missing": 0.0, "count": 10}},
        "scores": {
            "edges": [0.0, 0.5, 1.0],
            "shares": [1.0, 0.0],
            "missing": 0.0,
            "quantiles": _sketch(0.0, 0.4),
            "count": 9,
        },
    }


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return mutate


_DELETE = object()

MALFORMED = {
    "no version": (_set(("format_version",), _DELETE), "format_version must be an integer, got None"),
    "newer version": (
        _set(("format_version",), 3),
        r"^reference profile format_version 3 is not supported \(this hybridml reads 1, 2\)$",
    ),
    "no quantiles": (_set(("numeric", "x", "quantiles"), _DELETE), r"numeric\['x'\].quantiles is missing"),
    "quantiles not a list": (
        _set(("scores", "quantiles"), {}),
        r"scores.quantiles must be a list, got dict",
    ),
    "too few quantiles": (
        _set(("numeric", "x", "quantiles"), [0.0, 2.0]),
        r"numeric\['x'\].quantiles must hold 101 values for count 40, got 2",
    ),
    "decreasing quantiles": (
        _set(("numeric", "x", "quantiles", 100), -1.0),
        r"numeric\['x'\].quantiles must be non-decreasing",
    ),
    "text quantile": (
        _set(("numeric", "x", "quantiles", 3), "1"),
        r"numeric\['x'\].quantiles\[3\] must be a finite number",
    ),
    "no count": (_set(("numeric", "x", "count"), _DELETE), r"numeric\['x'\].count is missing"),
    "float count": (
        _set(("categorical", "c", "count"), 10.0),
        r"categorical\['c'\].count must be a whole number of 0 or more, got 10.0",
    ),
    "negative count": (
        _set(("scores", "count"), -1),
        r"scores.count must be a whole number of 0 or more, got -1",
    ),
    "bool count": (_set(("scores", "count"), True), r"scores.count must be a whole number of 0 or more, got True"),
    "no categorical count": (_set(("categorical", "c", "count"), _DELETE), r"categorical\['c'\].count is missing"),
    "zero count with bins": (
        _set(("numeric", "x", "count"), 0),
        r"numeric\['x'\].count must be 0 exactly when there are no bins, got 0 for 2 bins",
    ),
    "numeric not an object": (_set(("numeric",), []), "numeric must be an object, got list"),
    "no scores": (_set(("scores",), _DELETE), "scores is missing"),
    "no edges": (_set(("numeric", "x", "edges"), _DELETE), r"numeric\['x'\].edges is missing"),
    "edges not a list": (_set(("numeric", "x", "edges"), "0,1"), r"numeric\['x'\].edges must be a list, got str"),
    "text edge": (_set(("numeric", "x", "edges", 1), "1"), r"numeric\['x'\].edges\[1\] must be a finite number"),
    "one edge": (
        _set(("numeric", "x"), {"edges": [1.0], "shares": [], "missing": 0.0}),
        r"numeric\['x'\].edges must hold at least 2 edges",
    ),
    "decreasing edges": (
        _set(("numeric", "x", "edges"), [0.0, 2.0, 1.0]),
        r"numeric\['x'\].edges must be non-decreasing",
    ),
    "shares count": (
        _set(("numeric", "x", "shares"), [1.0]),
        r"numeric\['x'\].shares must hold 2 values for 3 edges, got 1",
    ),
    "shares sum": (_set(("numeric", "x", "shares"), [0.5, 0.6]), r"numeric\['x'\].shares must sum to 1, got 1.1"),
    "share above 1": (_set(("scores", "shares"), [1.5, -0.5]), r"scores.shares\[0\] must be between 0 and 1, got 1.5"),
    "missing as bool": (_set(("numeric", "x", "missing"), True), r"numeric\['x'\].missing must be a finite number"),
    "no categorical missing": (
        _set(("categorical", "c", "missing"), _DELETE),
        r"categorical\['c'\].missing is missing",
    ),
    "category shares a list": (
        _set(("categorical", "c", "shares"), [0.5, 0.5]),
        r"categorical\['c'\].shares must be an object of category: share",
    ),
    "category shares sum": (
        _set(("categorical", "c", "shares", "b"), 0.1),
        r"categorical\['c'\].shares must sum to 1, got 0.6",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_profiles_are_refused_naming_the_field(case: str) -> None:
    mutate, message = MALFORMED[case]
    raw = _valid()
    assert ReferenceProfile.from_dict(copy.deepcopy(raw)).numeric["x"].shares == (0.25, 0.75)
    mutate(raw)
    with pytest.raises(InvalidInputError, match=message) as refused:
        ReferenceProfile.from_dict(raw)
    assert refused.value.message.startswith(("malformed reference profile: ", "reference profile format_version"))


def test_a_profile_must_be_an_object() -> None:
    with pytest.raises(InvalidInputError, match="malformed reference profile: expected an object, got list"):
        ReferenceProfile.from_dict([])


def test_all_missing_features_may_have_zero_shares() -> None:
    raw = _valid()
    raw["categorical"]["c"] = {"shares": {"a": 0.0}, "missing": 1.0}
    raw["categorical"]["c"]["count"] = 0
    raw["numeric"]["x"] = {"edges": [], "shares": [], "missing": 1.0, "quantiles": [], "count": 0}
    profile = ReferenceProfile.from_dict(raw)
    assert profile.categorical["c"].shares == {"a": 0.0}
    assert profile.numeric["x"].edges == ()


# ------------------------------------------------------------------------------------------------ bundle


@pytest.fixture
def fitted(table: pd.DataFrame) -> tuple[Any, FeatureSchema, ReferenceProfile]:
    schema = data.infer_schema(table, "y")
    X, y = data.encode_features(table, schema), data.encode_labels(table, schema)
    estimator = model.fit("xgboost", {"n_estimators": 3}, X, y)
    return estimator, schema, build_profile(table, schema, model.positive_scores(estimator, X))


def test_bundle_saves_and_reads_the_profile(
    fitted: tuple[Any, FeatureSchema, ReferenceProfile], tmp_path: Path
) -> None:
    estimator, schema, profile = fitted
    saved = model.save_bundle(estimator, "xgboost", {}, schema, tmp_path / "b", profile=profile)
    assert saved.profile == profile
    assert json.loads((tmp_path / "b" / model.PROFILE_FILE).read_text()) == profile.to_dict()
    assert model.PROFILE_FILE == "profile.json"
    assert model.read_bundle(tmp_path / "b").profile == profile
    # A bundle saved without a profile reads back with none.
    model.save_bundle(estimator, "xgboost", {}, schema, tmp_path / "bare")
    assert not (tmp_path / "bare" / model.PROFILE_FILE).exists()
    assert model.read_bundle(tmp_path / "bare").profile is None


def test_bundle_refuses_a_broken_or_mismatched_profile(
    fitted: tuple[Any, FeatureSchema, ReferenceProfile], tmp_path: Path
) -> None:
    estimator, schema, profile = fitted
    model.save_bundle(estimator, "xgboost", {}, schema, tmp_path, profile=profile)
    path = tmp_path / model.PROFILE_FILE
    raw = profile.to_dict()
    raw["numeric"]["x"]["shares"] = raw["numeric"]["x"]["shares"][:-1]
    path.write_text(json.dumps(raw))
    with pytest.raises(InvalidInputError, match=rf"numeric\['x'\].shares must hold .* \({path}\)$"):
        model.read_bundle(tmp_path)
    path.write_text("{not json")
    with pytest.raises(InvalidInputError, match=f"malformed reference profile {path}"):
        model.read_bundle(tmp_path)
    other = ReferenceProfile(format_version=2, numeric={}, categorical={}, scores=numeric_profile([0.5], SCORE_EDGES))
    with pytest.raises(
        InvalidInputError, match=r"describes features \[\], the schema has \['x', 'k', 'flag', 'color'\]"
    ):
        model.save_bundle(estimator, "xgboost", {}, schema, tmp_path / "other", profile=other)
    assert not (tmp_path / "other").exists()
