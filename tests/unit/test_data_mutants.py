"""Data-loading and schema-inference behaviour that mutation testing (issue 12) found unasserted.

Every field of every inferred feature, the boundaries of the identifier rules, the file suffixes and column
selection of the readers, the messages of their refusals, and the stability of the content hash.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from hybridml.core import data
from hybridml.core.schema import BOOLEAN, CATEGORY, INTEGER, NUMERIC, FeatureSchema, FeatureSpec
from hybridml.errors import InvalidInputError

# ------------------------------------------------------------------------------------------------ feature statistics


def test_every_field_of_every_inferred_feature() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.0, 2.0, None, 4.0],
            "n": [1, 2, 3, 5],
            "b": [True, False, True, True],
            "c": ["a", None, "b", "a"],
            "y": ["p", "q", "p", "q"],
        }
    )
    x, n, b, c = (data._feature_spec(name, frame[name]) for name in "xnbc")
    # Population statistics (ddof=0) of the values present.
    assert (x.dtype, x.nullable, x.nan_fraction, x.min, x.max) == (NUMERIC, True, 0.25, 1.0, 4.0)
    assert x.mean == pytest.approx(7 / 3) and x.std == pytest.approx(math.sqrt(42 / 27))
    assert x.quantiles == pytest.approx((1.2, 1.4, 1.6, 1.8, 2.0, 2.4, 2.8, 3.2, 3.6))
    assert (n.dtype, n.nullable, n.nan_fraction, n.min, n.max, n.mean) == (INTEGER, False, 0.0, 1.0, 5.0, 2.75)
    assert n.std == pytest.approx(math.sqrt(2.1875))
    assert (b.dtype, b.nullable, b.min, b.max, b.mean) == (BOOLEAN, False, 0.0, 1.0, 0.75)
    assert b.std == pytest.approx(math.sqrt(0.1875))
    assert c == FeatureSpec(name="c", dtype=CATEGORY, nullable=True, nan_fraction=0.25, categories=("a", "b"))


# ------------------------------------------------------------------------------------------------ identifiers


def test_two_different_texts_are_an_identifier_one_is_not() -> None:
    assert data.identifier_reason("name", pd.Series(["ann", "bob"])) is not None
    assert data.identifier_reason("name", pd.Series(["ann", None])) is None


def test_booleans_are_never_identifiers() -> None:
    assert data.identifier_reason("flag_id", pd.Series([True, False])) is None


def test_unique_integers_with_a_missing_value_are_not_a_row_number() -> None:
    assert data.identifier_reason("row_id", pd.Series([1, 2, None, 4], dtype="Int64")) is None


def test_unique_text_present_in_exactly_half_the_rows_is_an_identifier() -> None:
    assert data.identifier_reason("code", pd.Series(["a", "b", None, None])) is not None
    assert data.identifier_reason("code", pd.Series(["a", "b", None, None, None])) is None


def test_identifiers_after_the_target_column_are_found() -> None:
    frame = pd.DataFrame({"y": ["a", "b", "a"], "row": [0, 1, 2], "x": [0.5, 0.1, 0.5]})
    assert data.find_identifiers(frame, "y") == {"row": "row number: consecutive integers 0..2, one per row"}


# ------------------------------------------------------------------------------------------------ readers


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "y": [0, 1]})


@pytest.mark.parametrize("suffix", [".txt", ".TXT", ".csv"])
def test_csv_and_txt_files_are_read_with_only_the_asked_columns(
    table: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"t{suffix}"
    table.to_csv(path, index=False)
    assert data.read_header(path) == ["a", "b", "y"]
    pd.testing.assert_frame_equal(data.load_table(path), table)
    assert list(data.load_table(path, columns=["y"]).columns) == ["y"]


@pytest.mark.parametrize("suffix", [".pq", ".PQ", ".parquet"])
def test_parquet_files_are_read_with_only_the_asked_columns(table: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    table.to_parquet(path, index=False)
    assert data.read_header(path) == ["a", "b", "y"]
    pd.testing.assert_frame_equal(data.load_table(path), table)
    assert list(data.load_table(path, columns=["y"]).columns) == ["y"]


def test_read_header_of_a_header_only_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n")
    assert data.read_header(path) == ["a", "b", "y"]


def test_reader_refusals_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidInputError, match=f"^data file is empty: {empty}$"):
        data.read_header(empty)
    other = tmp_path / "t.json"
    other.write_text("{}")
    with pytest.raises(InvalidInputError, match=r"^unsupported data format '\.json' for .*t\.json \(use \.csv or"):
        data.read_header(other)
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    for read in (data.read_header, data.load_table):
        with pytest.raises(InvalidInputError, match=f"^cannot read {broken}: "):
            read(broken)


# ------------------------------------------------------------------------------------------------ messages, hash


def test_a_long_bad_column_list_is_quoted_up_to_80_characters() -> None:
    text = "[" + ", ".join(["1"] * 60) + "]"
    with pytest.raises(InvalidInputError) as refused:
        data.parse_columns(text, "drop")
    assert refused.value.message.endswith("got " + text[:80])


def test_a_missing_target_message_shows_the_first_ten_columns() -> None:
    columns = [f"c{i}" for i in range(12)]
    with pytest.raises(InvalidInputError) as refused:
        data.check_columns(columns, "y")
    assert refused.value.message == f"target column 'y' not found (columns: {', '.join(columns[:10])} ...)"


def test_content_hash_is_stable_and_ignores_the_index() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    # A recorded value: lineage compares hashes written by earlier runs, so the hash must not drift.
    assert data.content_hash(frame) == "sha256:df695a6bf16078b7603e6a6a5f5595543d573f7967c3a88be44650a0f07b31ad"
    assert data.content_hash(frame.set_axis([10, 20])) == data.content_hash(frame)


def test_builtin_breast_cancer_columns_have_no_spaces() -> None:
    frame, target = data.builtin_breast_cancer()
    assert target == "target"
    assert "mean_radius" in frame.columns and not any(" " in c for c in frame.columns)


# ---------------------------------------------------------------------------------------------- labels, encoding, split


def _labelled(n_yes: int, n_no: int) -> pd.DataFrame:
    return pd.DataFrame({"x": [float(i) for i in range(n_yes + n_no)], "y": ["yes"] * n_yes + ["no"] * n_no})


def test_exactly_the_minimum_rows_of_a_class_is_enough() -> None:
    minimum = data.MIN_ROWS_PER_CLASS
    assert data.check_labels(_labelled(minimum, 20)["y"], "y") == ("no", "yes")
    with pytest.raises(InvalidInputError, match=f"has only {minimum - 1} rows of class 'yes'"):
        data.check_labels(_labelled(minimum - 1, 20)["y"], "y")


def test_an_empty_positive_class_means_the_default() -> None:
    assert data.check_labels(_labelled(6, 6)["y"], "y", "") == ("no", "yes")


def test_too_many_classes_are_listed_up_to_five() -> None:
    labels = pd.Series([f"c{i}" for i in range(7)] * 5)
    with pytest.raises(InvalidInputError) as refused:
        data.check_labels(labels, "y")
    assert refused.value.message == (
        "target column 'y' must have exactly 2 classes, found 7: ['c0', 'c1', 'c2', 'c3', 'c4']"
    )


def test_table_level_refusal_messages() -> None:
    with pytest.raises(InvalidInputError, match=r"^table has no rows$"):
        data.infer_schema(pd.DataFrame({"x": [], "y": []}), "y")
    with pytest.raises(InvalidInputError, match=r"^table has duplicate column names$"):
        data.check_columns(["x", "x", "y"], "y")
    with pytest.raises(InvalidInputError, match=r"^table has no feature columns besides the target$"):
        data.infer_schema(_labelled(6, 6)[["y"]], "y")


def test_encoding_every_value_of_every_kind() -> None:
    frame = pd.DataFrame({"c": ["b", "a", "zzz", None], "n": [1, 2, 3, 4], "y": ["no", "yes", "no", "yes"]})
    spec_c = FeatureSpec("c", CATEGORY, nullable=True, categories=("a", "b"))
    spec_n = FeatureSpec("n", INTEGER, nullable=False)
    schema = FeatureSchema(target="y", classes=("no", "yes"), features=(spec_c, spec_n), n_rows=4, data_hash="h")
    X = data.encode_features(frame, schema)
    assert X.dtype.name == "float32" and X.shape == (4, 2)
    assert X[:2].tolist() == [[1.0, 1.0], [0.0, 2.0]]  # a category is its index in the schema
    assert math.isnan(X[2, 0]) and math.isnan(X[3, 0])  # unknown and missing categories are NaN
    labels = data.encode_labels(frame, schema)
    assert labels.dtype.name == "int32" and labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(InvalidInputError, match=r"^missing feature column 'n'$"):
        data.encode_features(frame.drop(columns=["n"]), schema)
    with pytest.raises(InvalidInputError, match=r"^feature column 'n' is not numeric: "):
        data.encode_features(frame.assign(n=["1", "two", "3", "4"]), schema)
    no_features = FeatureSchema(target="y", classes=("no", "yes"), features=(), n_rows=4, data_hash="h")
    empty = data.encode_features(frame, no_features)
    assert empty.shape == (4, 0) and empty.dtype.name == "float32"


@pytest.mark.parametrize(
    ("name", "value"), [("test_size", 0.0), ("test_size", 0.5), ("valid_size", 0.0), ("valid_size", 0.5)]
)
def test_split_sizes_must_be_strictly_between_zero_and_a_half(name: str, value: float) -> None:
    frame = _labelled(20, 20)
    schema = data.infer_schema(frame, "y")
    with pytest.raises(InvalidInputError) as refused:
        data.split(frame, schema, seed=1, **{name: value})
    assert refused.value.message == f"{name} must be in (0, 0.5), got {value}"


def test_a_category_without_missing_values_is_not_nullable() -> None:
    assert not data._feature_spec("c", pd.Series(["a", "b", "a"])).nullable


@pytest.mark.parametrize(("n_columns", "more"), [(10, ""), (11, " ...")])
def test_the_column_list_is_cut_after_ten(n_columns: int, more: str) -> None:
    columns = [f"c{i}" for i in range(n_columns)]
    with pytest.raises(InvalidInputError) as refused:
        data.check_columns(columns, "y")
    assert refused.value.message == f"target column 'y' not found (columns: {', '.join(columns[:10])}{more})"
