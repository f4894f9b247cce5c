"""BundlePredictor behaviour the mutation run (issue 12) found unasserted: value conversion per dtype, message
quoting, name lists, column checks, unknown categories, construction and loading refusals."""

from __future__ import annotations

import json
import math
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybridml.core.model import load_estimator, positive_scores, read_bundle
from hybridml.errors import InvalidInputError, PayloadTooLargeError
from hybridml.serving.predictor import BundlePredictor
from hybridml.serving.protocol import SentRows

pytestmark = pytest.mark.unit

GOOD = {"amount": 100.0, "count": 3, "flag": True, "color": "red"}


# Function scope on purpose: mutmut maps each mutant to the tests that ran its function, and a predictor built once
# per module would count only for the first test (the value converters are made when the predictor is built).
@pytest.fixture
def xgb(xgb_bundle: Path) -> BundlePredictor:
    return BundlePredictor.load(xgb_bundle)


@pytest.fixture
def hgb(hgb_bundle: Path) -> BundlePredictor:
    return BundlePredictor.load(hgb_bundle)


def refusal(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidInputError) as caught:
        call(*args)
    return str(caught.value)


def first_row(xgb: BundlePredictor, value: Any) -> list[Any]:
    return [value] + [1.0] * (xgb.n_features - 1)


# --------------------------------------------------------------------------------------------- number features


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(2.5), 2.5),
        (np.int64(7), 7.0),
        (np.uint8(255), 255.0),
        (Fraction(1, 4), 0.25),
        (3.4e38, np.float32(3.4e38)),
        (-3.4e38, np.float32(-3.4e38)),
        (0, 0.0),
    ],
)
def test_numbers_of_any_real_type_are_accepted(xgb: BundlePredictor, value: Any, expected: float) -> None:
    assert xgb.encode([first_row(xgb, value)])[0, 0] == np.float32(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.bool_(True), "must be a number, got boolean np.True_"),
        (False, "must be a number, got boolean False"),
        ("1", "must be a number, got str '1'"),
        (b"1", "must be a number, got bytes b'1'"),
        (np.float64(np.inf), "must be finite, got "),
        (np.float64(4e38), "must be finite, got "),
        (Fraction(10**400), "is out of range: Fraction("),
        (np.float32(np.nan), "is missing (null/NaN), but the model was trained without missing values for it"),
    ],
)
def test_numbers_refused_with_the_reason(xgb: BundlePredictor, value: Any, expected: str) -> None:
    text = refusal(xgb.encode, [first_row(xgb, value)])
    assert text.startswith(f"row 0, feature {xgb.names[0]!r} (float) {expected}")


def test_a_huge_python_int_is_refused_as_out_of_range(xgb: BundlePredictor) -> None:
    assert "is out of range" in refusal(xgb.encode, [first_row(xgb, 10**400)])


def test_long_values_are_quoted_cut_to_forty_characters(xgb: BundlePredictor) -> None:
    long = "x" * 50
    text = refusal(xgb.encode, [first_row(xgb, long)])
    assert text.endswith(f"must be a number, got str {repr(long)[:37]}...")
    exact = "y" * 38  # its repr is exactly 40 characters: shown whole
    assert refusal(xgb.encode, [first_row(xgb, exact)]).endswith(f"got str {exact!r}")
    assert refusal(xgb.encode, [[1.0] * 30, "z" * 60]) == (
        f"row 1 must be a list of values or an object of named values: {repr('z' * 60)[:37]}..."
    )


# ------------------------------------------------------------------------------------- bool and category features


@pytest.mark.parametrize(("value", "expected"), [(True, 1.0), (False, 0.0), (np.bool_(True), 1.0), (1, 1.0), (0.0, 0.0),
                                                 (np.int8(1), 1.0)])  # fmt: skip
def test_booleans_accept_true_false_and_0_1(hgb: BundlePredictor, value: Any, expected: float) -> None:
    assert hgb.encode([{**GOOD, "flag": value}])[0, 2] == expected


@pytest.mark.parametrize("value", [2, -1, 0.5, "true", [True]])
def test_booleans_refuse_anything_else(hgb: BundlePredictor, value: Any) -> None:
    assert refusal(hgb.encode, [{**GOOD, "flag": value}]) == (
        f"row 0, feature 'flag' (bool) must be true/false (or 0/1), got {value!r}"
    )


@pytest.mark.parametrize("value", [None, math.nan, np.float64("nan")])
def test_a_missing_boolean_or_category_is_refused_when_training_had_none(hgb: BundlePredictor, value: Any) -> None:
    for name, dtype in (("flag", "bool"), ("color", "category")):
        assert refusal(hgb.encode, [{**GOOD, name: value}]) == (
            f"row 0, feature {name!r} ({dtype}) is missing (null/NaN), but the model was trained without missing"
            " values for it"
        )


def test_categories_are_matched_by_their_text(hgb: BundlePredictor) -> None:
    categories = next(f.categories for f in hgb.schema.features if f.name == "color")
    for i, category in enumerate(categories):
        assert hgb.encode([{**GOOD, "color": category}])[0, 3] == i
        assert hgb.encode([{**GOOD, "color": np.str_(category)}])[0, 3] == i
    for unknown in (1, 2.5, np.int64(3), True, np.bool_(False), "RED", ""):
        assert math.isnan(hgb.encode([{**GOOD, "color": unknown}])[0, 3])
    assert refusal(hgb.encode, [{**GOOD, "color": ["red"]}]) == (
        "row 0, feature 'color' (category) must be a category string, got ['red']"
    )


def test_a_nullable_number_takes_null_and_nan_as_missing(hgb: BundlePredictor) -> None:
    for value in (None, math.nan, np.float32("nan")):
        assert math.isnan(hgb.encode([{**GOOD, "amount": value}])[0, 0])


# ------------------------------------------------------------------------------------------------ rows and names


def test_rows_of_any_sequence_type_give_the_same_matrix(xgb: BundlePredictor) -> None:
    row = [float(i) / 7 for i in range(30)]
    expected = np.array([row], dtype=np.float32)
    for rows in ([row], [tuple(row)], [np.array(row)], (row,), np.array([row])):
        got = xgb.encode(rows)
        assert got.dtype == np.float32 and got.shape == (1, 30)
        np.testing.assert_array_equal(got, expected)


def test_names_beyond_five_are_counted(xgb: BundlePredictor) -> None:
    named = dict(zip(xgb.names, [1.0] * 30, strict=True))
    unknown = {f"u{i}": 1.0 for i in range(7)}
    assert refusal(xgb.encode, [{**named, **unknown}]) == (
        "row 0 has unknown features 'u0', 'u1', 'u2', 'u3', 'u4' and 2 more"
    )
    five = {f"u{i}": 1.0 for i in range(5)}
    assert refusal(xgb.encode, [{**named, **five}]) == "row 0 has unknown features 'u0', 'u1', 'u2', 'u3', 'u4'"
    missing = {k: v for k, v in named.items() if k not in xgb.names[:6]}
    assert refusal(xgb.encode, [named, missing]) == (
        f"row 1 is missing features {', '.join(repr(n) for n in xgb.names[:5])} and 1 more"
    )


def test_columns_refusals_are_exact(xgb: BundlePredictor) -> None:
    columns = {name: [1.0, 2.0] for name in xgb.names}
    assert refusal(xgb.encode_columns, [[1.0] * 30]) == "columns must map feature names to values, got list"
    assert refusal(xgb.encode_columns, {**columns, "bogus": [1.0, 2.0]}) == "unknown features 'bogus'"
    for bad in ("ab", b"ab", {"a": 1}, 3):
        assert refusal(xgb.encode_columns, {**columns, xgb.names[2]: bad}) == (
            f"feature {xgb.names[2]!r} must be a list of values, got {type(bad).__name__}"
        )
    del columns[xgb.names[1]]
    assert refusal(xgb.encode_columns, columns) == f"missing features {xgb.names[1]!r}"
    columns = {name: [1.0, 2.0] for name in xgb.names}
    columns[xgb.names[4]] = [1.0, 2.0, 3.0]
    assert refusal(xgb.encode_columns, columns) == (
        f"features have different numbers of values: {xgb.names[0]!r} has 2, {xgb.names[4]!r} has 3"
    )
    assert refusal(xgb.encode_columns, {name: [] for name in xgb.names}) == "request has no rows"


def test_columns_in_any_order_and_as_arrays_give_the_matrix(xgb: BundlePredictor) -> None:
    columns = {name: np.array([float(j), -float(j)]) for j, name in reversed(list(enumerate(xgb.names)))}
    got = xgb.encode_columns(columns)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([range(30), [-j for j in range(30)]], dtype=np.float32))


def test_batch_limits_of_columns(xgb_bundle: Path) -> None:
    small = BundlePredictor.load(xgb_bundle, max_rows=2)
    names = small.names
    assert small.encode_columns({n: [1.0, 2.0] for n in names}).shape == (2, 30)
    with pytest.raises(PayloadTooLargeError, match=r"^request has 3 rows, at most 2 are accepted per request$"):
        small.encode_columns({n: [1.0, 2.0, 3.0] for n in names})


# ------------------------------------------------------------------------------------------ unknown categories


def test_unknown_categories_are_told_apart_from_missing_ones(hgb_bundle: Path) -> None:
    rows = [
        {**GOOD, "color": "purple"},
        {**GOOD, "amount": None},
        {**GOOD, "color": "green"},
        {**GOOD, "color": 7},
    ]
    predictor = BundlePredictor.load(hgb_bundle)
    matrix = predictor.encode(rows)
    assert predictor.category_features == (3,)
    assert list(predictor.unknown_categories(matrix, SentRows(rows, predictor.names))) == [(0, 3), (3, 3)]
    known = predictor.encode(rows[1:3])
    assert list(predictor.unknown_categories(known, SentRows(rows[1:3], predictor.names))) == []


def test_unknown_categories_of_a_model_without_categories(xgb: BundlePredictor) -> None:
    matrix = np.full((1, 30), np.nan, dtype=np.float32)
    assert xgb.category_features == ()
    assert list(xgb.unknown_categories(matrix, SentRows([[None] * 30], xgb.names))) == []


# --------------------------------------------------------------------------------------- properties and loading


def test_properties(hgb: BundlePredictor, xgb: BundlePredictor) -> None:
    assert hgb.names == ("amount", "count", "flag", "color") and hgb.feature_names == list(hgb.names)
    assert hgb.n_features == 4 and hgb.schema is hgb.bundle.schema
    assert not hgb.all_numeric and xgb.all_numeric
    assert hgb.max_rows == 10_000


def test_construction_refusals(hgb_bundle: Path) -> None:
    bundle = read_bundle(hgb_bundle)
    estimator = load_estimator(bundle)
    assert BundlePredictor(bundle, estimator, max_rows=1).max_rows == 1
    with pytest.raises(InvalidInputError, match=r"^max_rows must be at least 1, got 0$"):
        BundlePredictor(bundle, estimator, max_rows=0)
    with pytest.raises(InvalidInputError, match=r"^a predictor needs an estimator or a native booster$"):
        BundlePredictor(bundle, None)


def test_sklearn_scores_are_contiguous_float64(hgb: BundlePredictor, hgb_bundle: Path) -> None:
    matrix = hgb.encode([GOOD, {**GOOD, "color": "blue", "amount": None}])
    scores = hgb.scores(matrix)
    assert scores.dtype == np.float64 and scores.flags["C_CONTIGUOUS"]
    expected = positive_scores(load_estimator(read_bundle(hgb_bundle)), matrix)
    np.testing.assert_array_equal(scores, expected)
    assert hgb.predict([GOOD]) == [float(expected[0])]


def test_a_schema_that_does_not_match_the_model_file_is_refused(tmp_path: Path, xgb_bundle: Path) -> None:
    broken = tmp_path / "b"
    shutil.copytree(xgb_bundle, broken)
    (broken / "profile.json").unlink(missing_ok=True)
    manifest = json.loads((broken / "hybridml.json").read_text())
    manifest["schema"]["features"] = manifest["schema"]["features"][:-1]
    (broken / "hybridml.json").write_text(json.dumps(manifest))
    assert refusal(BundlePredictor.load, broken) == "model file has 30 features, its schema 29"


def test_an_unreadable_model_file_names_the_file(tmp_path: Path, xgb_bundle: Path) -> None:
    broken = tmp_path / "b"
    shutil.copytree(xgb_bundle, broken)
    (broken / "model.json").write_text("{not xgboost")
    assert refusal(BundlePredictor.load, broken).startswith(f"cannot load model file {broken / 'model.json'}: ")


def test_xgboost_estimator_path_scores_like_the_native_one(xgb_bundle: Path, xgb: BundlePredictor) -> None:
    bundle = read_bundle(xgb_bundle)
    via_estimator = BundlePredictor(bundle, load_estimator(bundle))
    matrix = xgb.encode([[float(j) for j in range(30)], [1.0] * 30])
    np.testing.assert_allclose(via_estimator.scores(matrix), xgb.scores(matrix), rtol=1e-6)
    assert via_estimator.scores(matrix).dtype == np.float64


def test_a_value_of_41_characters_is_cut(xgb: BundlePredictor) -> None:
    text = "y" * 39  # repr: 41 characters, one too many
    assert refusal(xgb.encode, [first_row(xgb, text)]).endswith(f"got str {repr(text)[:37]}...")


def test_rows_that_are_not_a_list_are_refused_naming_the_type(xgb: BundlePredictor) -> None:
    for rows, kind in (("abc", "str"), ({"a": [1.0]}, "dict"), (3, "int"), (b"x", "bytes")):
        assert refusal(xgb.encode, rows) == f"rows must be a list of lists or a list of objects, got {kind}"


def test_plain_number_rows_of_a_mixed_model_are_still_checked_per_feature(hgb: BundlePredictor) -> None:
    # Numbers only, but "color" is a category: 0 is not one of its categories (unknown => missing), flag 1 => true.
    matrix = hgb.encode([[1.5, 2, 1, 0]])
    assert matrix[0, :3].tolist() == [1.5, 2.0, 1.0] and math.isnan(matrix[0, 3])
    assert refusal(hgb.encode, [[1.5, 2, 2, 0]]).startswith("row 0, feature 'flag' (bool) must be true/false")


def test_the_bulk_path_and_the_per_value_path_round_alike(xgb: BundlePredictor) -> None:
    # 2**60 + 2**36 + 1 rounds differently straight to float32 than through float64 (as float(value) does).
    tricky = 2**60 + 2**36 + 1
    row = [tricky, -tricky, *range(28)]  # integers only: no float in the row to make the bulk array float64
    bulk = xgb.encode([row])
    one_by_one = xgb.encode([dict(zip(xgb.names, row, strict=True))])
    np.testing.assert_array_equal(bulk, one_by_one)
    assert bulk[0, 0] == np.float32(float(tricky))


def test_max_rows_applies_to_every_model_kind(hgb_bundle: Path) -> None:
    small = BundlePredictor.load(hgb_bundle, max_rows=2)
    assert small.max_rows == 2
    with pytest.raises(PayloadTooLargeError):
        small.encode([GOOD] * 3)


def test_missing_values_of_a_nullable_category_are_not_unknown(tmp_path: Path, hgb_bundle: Path) -> None:
    nullable = tmp_path / "b"
    shutil.copytree(hgb_bundle, nullable)
    manifest = json.loads((nullable / "hybridml.json").read_text())
    for feature in manifest["schema"]["features"]:
        if feature["name"] == "color":
            feature["nullable"] = True
    (nullable / "hybridml.json").write_text(json.dumps(manifest))
    predictor = BundlePredictor.load(nullable)
    rows = [{**GOOD, "color": None}, {**GOOD, "color": math.nan}, {**GOOD, "color": "pink"}, GOOD]
    matrix = predictor.encode(rows)
    assert np.isnan(matrix[:3, 3]).all()
    assert list(predictor.unknown_categories(matrix, SentRows(rows, predictor.names))) == [(2, 3)]


def test_an_xgboost_model_without_a_probability_objective_scores_like_its_estimator(
    tmp_path: Path, hgb_bundle: Path
) -> None:
    from hybridml.core.data import encode_features, encode_labels, infer_schema
    from hybridml.core.model import fit, save_bundle

    rng = np.random.default_rng(0)
    import pandas as pd

    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    frame["y"] = (frame["a"] > 0).astype(int)
    schema = infer_schema(frame, "y")
    params = {"n_estimators": 5, "objective": "binary:logitraw"}
    fitted = fit("xgboost", params, encode_features(frame, schema), encode_labels(frame, schema))
    predictor = BundlePredictor.load(save_bundle(fitted, "xgboost", params, schema, tmp_path / "raw").path)
    matrix = predictor.encode([[2.0, 0.0], [-2.0, 0.0]])
    expected = positive_scores(load_estimator(read_bundle(tmp_path / "raw")), matrix)
    np.testing.assert_allclose(predictor.scores(matrix), expected, rtol=1e-6)


def test_the_float32_range_is_inclusive_on_the_per_value_path(xgb: BundlePredictor) -> None:
    top = float(np.finfo(np.float32).max)
    named = dict(zip(xgb.names, first_row(xgb, top), strict=True))
    assert xgb.encode([named])[0, 0] == np.float32(top)
    assert refusal(xgb.encode, [dict(named, **{xgb.names[0]: math.inf})]) == (
        f"row 0, feature {xgb.names[0]!r} (float) must be finite, got inf"
    )
