"""Data loading, validation, schema inference, hashing and splitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridml.core import data
from hybridml.core.schema import FeatureSchema
from hybridml.errors import InvalidInputError, NotFoundError


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "k": rng.integers(0, 5, size=n),
            "color": rng.choice(["red", "green", "blue"], size=n),
            "y": rng.choice(["no", "yes"], size=n),
        }
    )


def test_infer_schema_describes_columns_and_classes(table: pd.DataFrame) -> None:
    schema = data.infer_schema(table, "y")
    assert schema.names == ["x", "k", "color"]
    assert [f.dtype for f in schema.features] == ["float", "int", "category"]
    assert schema.classes == ("no", "yes")
    assert schema.features[2].categories == ("blue", "green", "red")
    assert len(schema.features[0].quantiles) == 9
    assert schema.n_rows == 200
    assert schema.data_hash.startswith("sha256:")
    assert FeatureSchema.from_dict(schema.to_dict()) == schema


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop(columns=["y"]), "target column 'y' not found"),
        (lambda t: t.assign(y="only"), "exactly 2 classes, found 1"),
        (lambda t: t.assign(y=np.arange(len(t)) % 3), "exactly 2 classes, found 3"),
        (lambda t: t.assign(x=np.nan), "column 'x' contains only missing values"),
        (lambda t: t.iloc[:0], "table has no rows"),
        (lambda t: t[["y"]], "no feature columns"),
        (lambda t: t.assign(y=["a"] * 197 + ["b"] * 3), "only 3 rows of class 'b'"),
        (lambda t: t.assign(y=t["y"].where(t.index > 0)), "1 missing values"),
    ],
)
def test_bad_tables_are_rejected_with_the_problem_named(table: pd.DataFrame, mutate: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        data.infer_schema(mutate(table), "y")  # type: ignore[operator]


def test_hash_ignores_file_format_but_not_content(table: pd.DataFrame, tmp_path: Path) -> None:
    table = table.assign(x=table["x"].round(3))  # values that survive CSV text exactly
    table.to_csv(tmp_path / "t.csv", index=False)
    table.to_parquet(tmp_path / "t.parquet", index=False)
    from_csv, from_parquet = data.load_table(tmp_path / "t.csv"), data.load_table(tmp_path / "t.parquet")
    assert data.content_hash(from_csv) == data.content_hash(from_parquet)
    changed = from_csv.copy()
    changed.loc[0, "x"] += 1
    assert data.content_hash(changed) != data.content_hash(from_csv)


def test_load_table_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="data file not found"):
        data.load_table(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InvalidInputError, match="empty"):
        data.load_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(InvalidInputError, match="no rows"):
        data.load_table(tmp_path / "header.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(InvalidInputError, match="unsupported data format"):
        data.load_table(tmp_path / "t.xlsx")


def test_split_is_stratified_deterministic_and_disjoint(table: pd.DataFrame) -> None:
    schema = data.infer_schema(table, "y")
    first, again = data.split(table, schema, seed=7), data.split(table, schema, seed=7)
    pd.testing.assert_frame_equal(first.test, again.test)
    assert len(first.train) + len(first.valid) + len(first.test) == len(table)
    rate = (table["y"] == "yes").mean()
    for part in (first.train, first.valid, first.test):
        assert abs((part["y"] == "yes").mean() - rate) < 0.05
    other = data.split(table, schema, seed=8)
    assert not other.test.equals(first.test)


def test_encoding_maps_categories_and_labels(table: pd.DataFrame) -> None:
    schema = data.infer_schema(table, "y")
    X = data.encode_features(table.assign(color=["purple", *list(table["color"][1:])]), schema)
    assert X.shape == (200, 3)
    assert X.dtype == np.float32
    assert np.isnan(X[0, 2])
    y = data.encode_labels(table, schema)
    assert set(np.unique(y)) == {0, 1}
    assert y.sum() == (table["y"] == "yes").sum()


def test_schema_differences_name_what_changed(table: pd.DataFrame) -> None:
    registered = data.infer_schema(table, "y")
    assert registered.differences(data.infer_schema(table, "y")) == []
    renamed = data.infer_schema(table.rename(columns={"x": "x2"}), "y")
    assert registered.differences(renamed) == ["missing columns ['x']", "unexpected columns ['x2']"]
    retyped = data.infer_schema(table.assign(k=table["k"].astype(str)), "y")
    assert registered.differences(retyped) == ["column 'k' is category, registered model has int"]


def test_builtin_dataset_needs_no_download() -> None:
    frame, target = data.builtin_breast_cancer()
    assert target == "target"
    assert frame.shape == (569, 31)
