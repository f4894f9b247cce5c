"""Reference profile behaviour that mutation testing (issue 12) found unasserted.

Each test states a promise of ``core/profile.py``: the field a refusal names, the boundary of the share-sum rule,
the exact bin edges a heavy value gets, and the categories a profile lists. See docs/reference-profile.md.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from hybridml.core.profile import (
    NumericProfile,
    ReferenceProfile,
    bin_shares,
    build_profile,
    category_shares,
    missing_share,
    numeric_edges,
    numeric_profile,
)
from hybridml.core.schema import CATEGORY, FeatureSchema, FeatureSpec
from hybridml.errors import InvalidInputError


def _valid() -> dict[str, Any]:
    return {
        "format_version": 1,
        "numeric": {"x": {"edges": [0.0, 1.0, 2.0], "shares": [0.25, 0.75], "missing": 0.1}},
        "categorical": {"c": {"shares": {"a": 0.5, "b": 0.5}, "missing": 0.0}},
        "scores": {"edges": [0.0, 0.5, 1.0], "shares": [1.0, 0.0], "missing": 0.0},
    }


def _refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(InvalidInputError) as refused:
        ReferenceProfile.from_dict(raw)
    return str(refused.value.message)


# ------------------------------------------------------------------------------------------ refusals name the field


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        (None, "categorical", [], "malformed reference profile: categorical must be an object, got list"),
        ("numeric", "x", [1.0], "malformed reference profile: numeric['x'] must be an object, got list"),
        ("categorical", "c", "a", "malformed reference profile: categorical['c'] must be an object, got str"),
        ("scores", None, 0.5, "malformed reference profile: scores must be an object, got float"),
    ],
)
def test_a_part_that_is_not_an_object_is_named_with_its_type(
    section: str | None, key: str | None, value: Any, expected: str
) -> None:
    raw = _valid()
    if section is None:
        raw[str(key)] = value
    elif key is None:
        raw[section] = value
    else:
        raw[section][key] = value
    assert _refusal(raw) == expected


def test_shares_that_are_not_a_list_are_named() -> None:
    raw = _valid()
    raw["numeric"]["x"]["shares"] = "0.25,0.75"
    assert _refusal(raw) == "malformed reference profile: numeric['x'].shares must be a list, got str"


def test_category_shares_that_are_not_an_object_are_named_with_their_type() -> None:
    raw = _valid()
    raw["categorical"]["c"]["shares"] = [0.5, 0.5]
    assert _refusal(raw).endswith("categorical['c'].shares must be an object of category: share, got list")


def test_a_bad_category_share_and_missing_share_name_their_field() -> None:
    raw = _valid()
    raw["categorical"]["c"]["shares"]["a"] = 1.5
    assert _refusal(raw) == "malformed reference profile: categorical['c'].shares['a'] must be between 0 and 1, got 1.5"
    raw = _valid()
    raw["categorical"]["c"]["missing"] = -0.5
    assert _refusal(raw) == "malformed reference profile: categorical['c'].missing must be between 0 and 1, got -0.5"


# ------------------------------------------------------------------------------------------------ share-sum rule


@pytest.mark.parametrize(
    ("shares", "missing"),
    [([0.0, 0.0], 0.5), ([0.25, 0.25], 1.0)],
    ids=["zero shares with values present", "half the shares with every row missing"],
)
def test_shares_may_sum_to_zero_only_when_every_row_is_missing(shares: list[float], missing: float) -> None:
    raw = _valid()
    raw["numeric"]["x"] = {"edges": [0.0, 1.0, 2.0], "shares": shares, "missing": missing}
    assert re.fullmatch(r"malformed reference profile: numeric\['x'\]\.shares must sum to 1, got .*", _refusal(raw))


def test_equal_edges_of_a_constant_column_round_trip() -> None:
    profile = numeric_profile([3.0, 3.0, None])
    assert profile.edges == (3.0, 3.0)
    raw = _valid()
    raw["numeric"]["x"] = {"edges": list(profile.edges), "shares": list(profile.shares), "missing": profile.missing}
    assert ReferenceProfile.from_dict(raw).numeric["x"] == NumericProfile(profile.edges, profile.shares, 1 / 3)
    whole = ReferenceProfile(format_version=2, numeric={"x": profile}, categorical={}, scores=profile)
    assert ReferenceProfile.from_dict(json.loads(json.dumps(whole.to_dict()))) == whole


# ------------------------------------------------------------------------------------------------ heavy values


def test_a_heavy_value_in_the_middle_gets_a_bin_closed_half_way_to_the_next_value() -> None:
    # 21 values: the deciles fall on values (up to rounding), so only the heavy rule can add an edge between them.
    values = [0.0] * 11 + [float(v) for v in range(1, 11)]
    assert numeric_edges(values) == pytest.approx((0.0, 0.5, 2.0, 4.0, 6.0, 8.0, 10.0))
    assert numeric_profile(values).shares[0] == 11 / 21  # the zeros, and nothing else


def test_a_value_filling_exactly_two_deciles_is_heavy() -> None:
    values = [0.0] * 3 + [float(v) for v in range(1, 19)]
    assert numeric_edges(values) == pytest.approx((0.0, 0.5, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0))


def test_a_heavy_value_just_below_the_maximum_is_closed_before_the_maximum() -> None:
    values = [float(v) for v in range(9)] + [9.0] * 11 + [10.0]
    edges = numeric_edges(values)
    assert edges == pytest.approx((0.0, 2.0, 4.0, 6.0, 8.0, 9.0, 9.5, 10.0))
    assert numeric_profile(values).shares[edges.index(9.0)] == 11 / 21


def test_a_heavy_maximum_opens_its_bin_half_way_from_the_value_below() -> None:
    values = [float(v) for v in range(10)] + [10.0] * 11
    edges = numeric_edges(values)
    assert edges == pytest.approx((0.0, 2.0, 4.0, 6.0, 8.0, 9.5, 10.0))
    assert numeric_profile(values).shares[-1] == 11 / 21


# ------------------------------------------------------------------------------------------------ pure helpers


def test_text_in_an_array_is_refused_as_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="values must be numbers or None"):
        bin_shares(np.array(["a", "b"]), (0.0, 1.0))
    with pytest.raises(InvalidInputError, match="values must be numbers or None"):
        bin_shares(np.array([0.5, "b"], dtype=object), (0.0, 1.0))


def test_a_missing_edge_is_refused_as_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="bin edges must be at least 2 finite"):
        bin_shares([0.5], [0.0, None, 1.0])


def test_missing_share_of_a_tuple() -> None:
    assert missing_share((1.0, None, float("nan"), 4.0)) == 0.5


def test_integer_categories_are_compared_as_their_text() -> None:
    assert category_shares([1, 2, 2, None], ["1", "2", "3"]) == {"1": 1 / 3, "2": 2 / 3, "3": 0.0}


def test_build_profile_lists_every_schema_category_even_unseen_in_training() -> None:
    spec = FeatureSpec(name="color", dtype=CATEGORY, nullable=False, categories=("blue", "red"))
    schema = FeatureSchema(target="y", classes=("no", "yes"), features=(spec,), n_rows=2, data_hash="h")
    pd = pytest.importorskip("pandas")
    profile = build_profile(pd.DataFrame({"color": ["red", "red"], "y": ["no", "yes"]}), schema, [0.5])
    assert profile.categorical["color"].shares == {"blue": 0.0, "red": 1.0}


def test_build_profile_counts_text_in_a_numeric_feature_as_missing() -> None:
    spec = FeatureSpec(name="x", dtype="float", nullable=True)
    schema = FeatureSchema(target="y", classes=("no", "yes"), features=(spec,), n_rows=4, data_hash="h")
    pd = pytest.importorskip("pandas")
    train = pd.DataFrame({"x": ["1.5", "oops", None, "2.5"], "y": ["no", "yes", "no", "yes"]})
    profile = build_profile(train, schema, [0.5])
    assert profile.numeric["x"].missing == 0.5
    assert profile.numeric["x"].edges == (1.5, 2.0, 2.5)
    assert profile.numeric["x"].shares == (0.5, 0.5)
