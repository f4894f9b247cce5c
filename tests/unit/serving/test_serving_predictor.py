"""BundlePredictor: strict validation against the schema, and the same scores as the estimator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridml.core.data import encode_features, infer_schema
from hybridml.core.model import load_estimator, positive_scores, read_bundle
from hybridml.errors import InvalidInputError, PayloadTooLargeError
from hybridml.serving.predictor import BundlePredictor

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def xgb(xgb_bundle: Path) -> BundlePredictor:
    return BundlePredictor.load(xgb_bundle)


@pytest.fixture(scope="module")
def rows(cancer: tuple[pd.DataFrame, str], xgb: BundlePredictor) -> list[list[float]]:
    frame, _ = cancer
    return frame[xgb.feature_names].head(50).to_numpy().tolist()


def test_xgboost_scores_equal_estimator(
    xgb_bundle: Path, xgb: BundlePredictor, cancer: tuple[pd.DataFrame, str]
) -> None:
    frame, _ = cancer
    expected = positive_scores(load_estimator(read_bundle(xgb_bundle)), encode_features(frame, xgb.schema))
    got = xgb.predict(frame[xgb.feature_names].to_numpy().tolist())
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert xgb._booster is not None  # the fast inplace_predict path was taken


def test_named_rows_equal_positional_rows(xgb: BundlePredictor, rows: list[list[float]]) -> None:
    named = [dict(zip(xgb.feature_names, r, strict=True)) for r in rows]
    assert xgb.predict(named) == xgb.predict(rows)


def test_columns_equal_rows(xgb: BundlePredictor, rows: list[list[float]]) -> None:
    columns = {name: [r[j] for r in rows] for j, name in enumerate(xgb.feature_names)}
    np.testing.assert_array_equal(xgb.encode_columns(columns), xgb.encode(rows))


def test_sklearn_bundle_scores_equal_estimator(hgb_bundle: Path, mixed_frame: pd.DataFrame) -> None:
    predictor = BundlePredictor.load(hgb_bundle)
    schema = infer_schema(mixed_frame, "label")
    expected = positive_scores(load_estimator(read_bundle(hgb_bundle)), encode_features(mixed_frame, schema))
    records = mixed_frame.drop(columns=["label"]).to_dict(orient="records")
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in records]
    np.testing.assert_allclose(predictor.predict(records), expected, atol=1e-6)


def test_unknown_category_is_nan_like_training_encoding(hgb_bundle: Path) -> None:
    predictor = BundlePredictor.load(hgb_bundle)
    row = {"amount": 100.0, "count": 3, "flag": True, "color": "purple"}
    assert math.isnan(predictor.encode([row])[0, 3])
    assert len(predictor.predict([row])) == 1


def test_nullable_feature_accepts_null(hgb_bundle: Path) -> None:
    predictor = BundlePredictor.load(hgb_bundle)  # "amount" had gaps in training
    row = {"amount": None, "count": 3, "flag": False, "color": "red"}
    assert math.isnan(predictor.encode([row])[0, 0])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: [r[:3]], "row 0 has 3 values, model expects 30 features"),
        (lambda r: [r[0], [*r[1], 1.0]], "row 1 has 31 values, model expects 30 features"),
        (lambda r: [[*r[0][:-1], "abc"]], "feature 'worst_fractal_dimension' (float) must be a number, got str 'abc'"),
        (lambda r: [[*r[0][:-1], "1.5"]], "must be a number, got str '1.5'"),
        (lambda r: [[*r[0][:-1], True]], "must be a number, got boolean True"),
        (lambda r: [[*r[0][:-1], [1.0]]], "must be a number, got list"),
        (lambda r: [[math.inf, *r[0][1:]]], "row 0, feature 'mean_radius' (float) must be finite, got inf"),
        (lambda r: [[-math.inf, *r[0][1:]]], "must be finite"),
        (lambda r: [[1e39, *r[0][1:]]], "must be finite"),
        (lambda r: [[math.nan, *r[0][1:]]], "feature 'mean_radius' (float) is missing (null/NaN)"),
        (lambda r: [[None, *r[0][1:]]], "is missing (null/NaN), but the model was trained without missing values"),
        (lambda r: [r[0], 5], "row 1 must be a list of values or an object of named values: 5"),
        (lambda r: [], "request has no rows"),
        (lambda r: "not rows", "rows must be a list"),
        (lambda r: {"mean_radius": [1.0]}, "rows must be a list"),
    ],
)
def test_positional_rows_rejected(xgb: BundlePredictor, rows: list[list[float]], mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError) as caught:
        xgb.predict(mutate(rows))
    assert message in str(caught.value)


def test_unknown_and_missing_names_are_named(xgb: BundlePredictor, rows: list[list[float]]) -> None:
    named = dict(zip(xgb.feature_names, rows[0], strict=True))
    with pytest.raises(InvalidInputError, match=r"row 0 has unknown features 'bogus'"):
        xgb.predict([{**named, "bogus": 1.0}])
    del named["mean_radius"], named["worst_area"]
    with pytest.raises(InvalidInputError, match=r"row 0 is missing features 'mean_radius', 'worst_area'"):
        xgb.predict([named])


def test_column_errors(xgb: BundlePredictor, rows: list[list[float]]) -> None:
    columns = {name: [r[j] for r in rows] for j, name in enumerate(xgb.feature_names)}
    with pytest.raises(InvalidInputError, match="missing features 'mean_radius'"):
        xgb.encode_columns({k: v for k, v in columns.items() if k != "mean_radius"})
    with pytest.raises(InvalidInputError, match="'mean_texture' has 49"):
        xgb.encode_columns({**columns, "mean_texture": columns["mean_texture"][:-1]})
    with pytest.raises(InvalidInputError, match="row 2, feature 'mean_area'"):
        xgb.encode_columns({**columns, "mean_area": [*columns["mean_area"][:2], "x", *columns["mean_area"][3:]]})
    with pytest.raises(InvalidInputError, match="feature 'mean_area' must be a list"):
        xgb.encode_columns({**columns, "mean_area": 3.0})


def test_typed_features(hgb_bundle: Path) -> None:
    predictor = BundlePredictor.load(hgb_bundle)
    good = {"amount": 100.0, "count": 3, "flag": True, "color": "red"}
    assert predictor.encode([{**good, "flag": 1}])[0, 2] == 1.0
    with pytest.raises(InvalidInputError, match=r"'flag' \(bool\) must be true/false"):
        predictor.predict([{**good, "flag": "yes"}])
    with pytest.raises(InvalidInputError, match=r"'color' \(category\) is missing"):
        predictor.predict([{**good, "color": None}])
    with pytest.raises(InvalidInputError, match=r"'color' \(category\) must be a category string"):
        predictor.predict([{**good, "color": {"a": 1}}])


def test_batch_limit(xgb_bundle: Path, rows: list[list[float]]) -> None:
    small = BundlePredictor.load(xgb_bundle, max_rows=10)
    assert len(small.predict(rows[:10])) == 10
    with pytest.raises(PayloadTooLargeError, match="11 rows, at most 10"):
        small.predict(rows[:11])
    default = BundlePredictor.load(xgb_bundle)
    with pytest.raises(PayloadTooLargeError, match="at most 10000"):
        default.encode([rows[0]] * 10_001)


def test_load_rejects_bad_bundles(tmp_path: Path, xgb_bundle: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a hybridml model"):
        BundlePredictor.load(tmp_path)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "hybridml.json").write_text((xgb_bundle / "hybridml.json").read_text())
    (corrupt / "model.json").write_text("{not xgboost")
    with pytest.raises(InvalidInputError, match="cannot load model file"):
        BundlePredictor.load(corrupt)


def test_native_booster_reused_proxy_gives_fresh_results(xgb: BundlePredictor, rows: list[list[float]]) -> None:
    # The native booster reuses one proxy DMatrix: calls of different sizes, with missing values, in any order,
    # must give what a fresh prediction of the same rows gives, and never share an output buffer.
    import xgboost

    assert xgb._native is not None
    reference = xgboost.Booster(model_file=str(xgb.bundle.path / xgb.bundle.model_file))
    matrix = np.asarray(rows, dtype=np.float32)
    matrix[3, 2] = np.nan
    earlier = xgb.scores(matrix[:1])
    for size in (1, 7, 50, 2, 1, 33):
        got = xgb.scores(matrix[:size])
        assert got.dtype == np.float64 and got.shape == (size,)
        np.testing.assert_array_equal(got, reference.inplace_predict(matrix[:size]).astype(np.float64))
    np.testing.assert_array_equal(earlier, xgb.scores(matrix[:1]))


def test_plain_matrix_rejects_non_finite_and_out_of_float32_range(xgb: BundlePredictor) -> None:
    width = xgb.n_features
    for bad in (math.nan, math.inf, -math.inf, 3.5e38, -1e39, 10**400):
        assert xgb.plain_matrix([bad] + [0.0] * (width - 1), (1, width)) is None
    edge = xgb.plain_matrix([3.4e38, -3.4e38] + [0] * (width - 2), (1, width))
    assert edge is not None and edge.dtype == np.float32 and np.isfinite(edge).all()


def test_columns_dropped_at_training_are_accepted_and_ignored(tmp_path: Path) -> None:
    from hybridml.core.data import encode_labels
    from hybridml.core.model import fit, save_bundle

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"rownames": np.arange(1, 201), "x": rng.normal(size=200), "z": rng.normal(size=200)})
    frame["y"] = (frame["x"] > 0).astype(int)
    schema = infer_schema(frame, "y", drop=["z"])
    assert set(schema.dropped) == {"rownames", "z"} and schema.names == ["x"]
    model = fit("xgboost", {"n_estimators": 5}, encode_features(frame, schema), encode_labels(frame, schema))
    predictor = BundlePredictor.load(save_bundle(model, "xgboost", {}, schema, tmp_path / "b").path)
    whole_rows = frame.drop(columns=["y"]).head(3).to_dict(orient="records")
    expected = predictor.predict([[row["x"]] for row in whole_rows])
    np.testing.assert_allclose(predictor.predict(whole_rows), expected)
    columns = {name: [row[name] for row in whole_rows] for name in ("rownames", "x", "z")}
    np.testing.assert_allclose(predictor.scores(predictor.encode_columns(columns)), expected)
    # Only the dropped columns are forgiven: anything else unknown is still refused by name.
    with pytest.raises(InvalidInputError, match="unknown features 'w'"):
        predictor.encode([{**whole_rows[0], "w": 1.0}])
    with pytest.raises(InvalidInputError, match="unknown features 'w'"):
        predictor.encode_columns({**columns, "w": [1.0, 2.0, 3.0]})
