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


# ------------------------------------------------------------------------------------------------ identifiers


@pytest.fixture
def with_ids() -> pd.DataFrame:
    """A table as exported from R or a spreadsheet: a row number and a unique text column beside real features."""
    rng = np.random.default_rng(5)
    n = 300
    return pd.DataFrame(
        {
            "rownames": np.arange(1, n + 1),
            "name": [f"passenger {i}" for i in rng.permutation(n)],
            "f1": rng.normal(size=n),  # a continuous float: unique per row, and a feature
            "f2": rng.normal(size=n),
            "cat": rng.choice(["a", "b", "c"], size=n),
            "label": rng.integers(0, 2, size=n),
        }
    )


def test_row_numbers_and_unique_text_are_dropped_and_named(with_ids: pd.DataFrame) -> None:
    schema = data.infer_schema(with_ids, "label")
    assert schema.names == ["f1", "f2", "cat"]
    assert schema.dropped == {
        "rownames": "row number: consecutive integers 1..300, one per row",
        "name": "identifier: text unique per row (300 rows, each with a different value)",
    }
    assert schema.data_hash == data.content_hash(with_ids)  # the table as given, dropped columns included
    assert FeatureSchema.from_dict(schema.to_dict()) == schema
    assert schema.to_dict()["dropped"] == schema.dropped


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("Unnamed: 0", np.arange(300), "row number: consecutive integers 0..299, one per row"),
        ("n", np.random.default_rng(0).permutation(300) + 1000, "row number: consecutive integers 1000..1299"),
        ("ID", np.arange(300) * 7 + 3, "identifier: named like an ID and its 300 integers are all different"),
        ("customer_id", np.arange(300) ** 2, "identifier: named like an ID"),
        ("code", [f"c{i}" if i % 3 else None for i in range(300)], "identifier: text unique per row (200 rows"),
    ],
)
def test_identifier_like_columns_are_recognised(column: str, values: object, reason: str) -> None:
    frame = pd.DataFrame({column: values, "x": np.linspace(0, 1, 300), "y": ["a", "b"] * 150})
    assert list(data.find_identifiers(frame, "y")) == [column]
    assert data.find_identifiers(frame, "y")[column].startswith(reason)


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("float, unique per row", np.random.default_rng(0).normal(size=300)),
        ("float counting rows", np.arange(300.0)),
        ("float ID", np.arange(300.0)),
        ("integers with a repeat", np.r_[np.arange(299), 5]),
        ("unique integers with gaps", np.arange(300) * 7),
        ("integer row numbers with a missing one", pd.array([*range(299), None], dtype="Int64")),
        ("text with repeats", [f"t{i % 299}" for i in range(300)]),
        ("mostly missing text", [f"t{i}" if i < 100 else None for i in range(300)]),
        ("booleans", [True, False] * 150),
    ],
)
def test_features_are_not_mistaken_for_identifiers(column: str, values: object) -> None:
    frame = pd.DataFrame({column: values, "y": ["a", "b"] * 150})
    assert data.find_identifiers(frame, "y") == {}
    assert data.infer_schema(frame, "y").names == [column]


def test_keep_and_drop_override_the_detection(with_ids: pd.DataFrame) -> None:
    schema = data.infer_schema(with_ids, "label", keep=["name"], drop=["f1"])
    assert schema.names == ["name", "f2", "cat"]
    assert schema.dropped == {
        "rownames": "row number: consecutive integers 1..300, one per row",
        "f1": "dropped on request",
    }
    assert schema.features[0].dtype == "category"
    assert data.infer_schema(with_ids, "label", keep=["rownames", "name"]).dropped == {}


@pytest.mark.parametrize(
    ("drop", "keep", "message"),
    [
        (["nope"], [], r"column 'nope' to drop is not in the table \(columns: rownames, name, f1, f2, cat, label\)"),
        ([], ["nope"], "column 'nope' to keep is not in the table"),
        (["label"], [], "column 'label' to drop is the target column"),
        (["f1"], ["f1"], r"columns \['f1'\] are both to drop and to keep"),
        (
            ["f1", "f2", "cat"],
            [],
            "table has no feature columns besides the target "
            r"\(left out: rownames, name, f1, f2, cat; keep one to train on it\)",
        ),
    ],
)
def test_bad_drop_and_keep_are_refused(with_ids: pd.DataFrame, drop: list[str], keep: list[str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        data.infer_schema(with_ids, "label", drop=drop, keep=keep)


def test_parse_columns_takes_json_or_comma_lists() -> None:
    assert data.parse_columns("", "drop_columns") == ()
    assert data.parse_columns(" a, b ,,a", "drop_columns") == ("a", "b")
    assert data.parse_columns('["a, b", "c"]', "drop_columns") == ("a, b", "c")
    assert data.parse_columns("[]", "drop_columns") == ()
    with pytest.raises(InvalidInputError, match="drop_columns must be a JSON list of column names or a comma list"):
        data.parse_columns("[a", "drop_columns")
    with pytest.raises(InvalidInputError, match=r"keep_columns must be a JSON list of column names \(strings\)"):
        data.parse_columns("[1, 2]", "keep_columns")


# ------------------------------------------------------------------------------------------------ positive class


def test_positive_class_defaults_to_the_second_sorted_and_can_be_chosen(table: pd.DataFrame) -> None:
    default = data.infer_schema(table, "y")
    assert default.classes == ("no", "yes")
    flipped = data.infer_schema(table, "y", positive_class="no")
    assert flipped.classes == ("yes", "no")
    assert data.infer_schema(table, "y", positive_class="yes").classes == ("no", "yes")
    y, y_flipped = data.encode_labels(table, default), data.encode_labels(table, flipped)
    assert y.sum() == (table["y"] == "yes").sum()
    assert np.array_equal(y_flipped, 1 - y)
    assert default.differences(flipped) == ["positive class is 'no', registered model has 'yes'"]
    other = data.infer_schema(table.assign(y=table["y"].map({"no": "n", "yes": "y"})), "y")
    assert default.differences(other) == ["classes are ['n', 'y'], registered model has ['no', 'yes']"]


def test_positive_class_of_numeric_labels_is_given_as_text(with_ids: pd.DataFrame) -> None:
    schema = data.infer_schema(with_ids, "label", positive_class="0")
    assert schema.classes == ("1", "0")
    assert np.array_equal(data.encode_labels(with_ids, schema), (with_ids["label"] == 0).astype(np.int32))


def test_a_positive_class_that_is_not_a_class_is_refused_naming_both(table: pd.DataFrame) -> None:
    with pytest.raises(
        InvalidInputError, match=r"^positive class 'maybe' is not a class of target column 'y': choose 'no' or 'yes'$"
    ):
        data.infer_schema(table, "y", positive_class="maybe")


def test_schemas_written_before_dropped_existed_still_load(table: pd.DataFrame) -> None:
    raw = data.infer_schema(table, "y").to_dict()
    del raw["dropped"]
    assert FeatureSchema.from_dict(raw).dropped == {}
    raw["dropped"] = ["x"]
    with pytest.raises(InvalidInputError, match="malformed feature schema: dropped must be an object of column"):
        FeatureSchema.from_dict(raw)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_preflight_reads_the_header_and_the_label_column(tmp_path: Path, suffix: str) -> None:
    from hybridml.core.data import preflight, read_header

    frame = pd.DataFrame({"a": range(20), "b": [0.5] * 20, "y": ["no", "yes"] * 10})
    path = tmp_path / f"t{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    assert read_header(path) == ["a", "b", "y"]
    assert preflight(path, "y") == ("no", "yes")
    assert preflight(path, "y", positive_class="no") == ("yes", "no")
    with pytest.raises(InvalidInputError, match=r"target column 'label' not found \(columns: a, b, y\)"):
        preflight(path, "label")
    with pytest.raises(InvalidInputError, match="column 'c' to keep is not in the table"):
        preflight(path, "y", keep=["c"])
    with pytest.raises(InvalidInputError, match="positive class 'maybe' is not a class of target column 'y'"):
        preflight(path, "y", positive_class="maybe")
    with pytest.raises(InvalidInputError, match="exactly 2 classes, found 1"):
        preflight(path, "b")
    with pytest.raises(NotFoundError, match="data file not found"):
        preflight(tmp_path / f"nope{suffix}", "y")
