"""Property-based tests: schema comparison (reordered, renamed, retyped columns) and the seeded stratified split."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hybridml.core.data import split
from hybridml.core.schema import DTYPES, FeatureSchema, FeatureSpec

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = st.text("abcdefgh_", min_size=1, max_size=6)


@st.composite
def schemas(draw: st.DrawFn, min_features: int = 1) -> FeatureSchema:
    names = draw(st.lists(NAMES, min_size=min_features, max_size=6, unique=True))
    features = tuple(
        FeatureSpec(
            name,
            draw(st.sampled_from(DTYPES)),
            draw(st.booleans()),
            mean=draw(st.none() | st.floats(-10, 10)),
            categories=tuple(draw(st.lists(NAMES, max_size=3, unique=True))),
        )
        for name in names
    )
    classes = draw(st.lists(NAMES, min_size=2, max_size=2, unique=True))
    return FeatureSchema(draw(NAMES), (classes[0], classes[1]), features, draw(st.integers(1, 1000)), "sha256:x")


def with_features(schema: FeatureSchema, features: list[FeatureSpec]) -> FeatureSchema:
    return replace(schema, features=tuple(features))


@SETTINGS
@given(schema=schemas(), rows=st.integers(1, 1000), mean=st.floats(-5, 5), data_hash=st.text(max_size=5))
def test_identical_layout_reports_nothing(schema: FeatureSchema, rows: int, mean: float, data_hash: str) -> None:
    assert schema.differences(schema) == []
    # Statistics, row count and data hash may differ: that is drift, not a schema change.
    other = replace(
        schema, n_rows=rows, data_hash=data_hash, features=tuple(replace(f, mean=mean) for f in schema.features)
    )
    assert schema.differences(other) == [] and other.differences(schema) == []


@SETTINGS
@given(schema=schemas(min_features=2), data=st.data())
def test_reordered_columns_report_only_the_order(schema: FeatureSchema, data: st.DataObject) -> None:
    order = data.draw(st.permutations(list(schema.features)))
    assume([f.name for f in order] != schema.names)
    assert schema.differences(with_features(schema, order)) == ["columns are in a different order"]


@SETTINGS
@given(schema=schemas(), data=st.data())
def test_renamed_columns_report_missing_and_unexpected_by_name(schema: FeatureSchema, data: st.DataObject) -> None:
    which = data.draw(st.lists(st.sampled_from(range(len(schema.features))), min_size=1, unique=True))
    features = list(schema.features)
    for i in which:
        features[i] = replace(features[i], name=features[i].name + "_new")
    assume(len({f.name for f in features}) == len(features))
    renamed = with_features(schema, features)
    old = [schema.names[i] for i in sorted(which)]
    new = [n for n in renamed.names if n not in schema.names]
    assert new and all(n.endswith("_new") for n in new)
    gone = [n for n in schema.names if n not in renamed.names]
    assert sorted(gone) == sorted(old)
    assert schema.differences(renamed) == [f"missing columns {gone}", f"unexpected columns {new}"]


@SETTINGS
@given(schema=schemas(), data=st.data())
def test_retyped_columns_report_the_column_and_both_dtypes(schema: FeatureSchema, data: st.DataObject) -> None:
    which = data.draw(st.lists(st.sampled_from(range(len(schema.features))), min_size=1, unique=True))
    features = list(schema.features)
    for i in which:
        dtypes = [d for d in DTYPES if d != features[i].dtype]
        features[i] = replace(features[i], dtype=data.draw(st.sampled_from(dtypes)))
    retyped = with_features(schema, features)
    expected = [
        f"column {old.name!r} is {new.dtype}, registered model has {old.dtype}"
        for old, new in zip(schema.features, features, strict=True)
        if old.dtype != new.dtype
    ]
    assert len(expected) == len(which)
    assert schema.differences(retyped) == expected


@pytest.mark.parametrize("before", DTYPES)
@pytest.mark.parametrize("after", DTYPES)
def test_every_dtype_change_is_reported(before: str, after: str) -> None:
    mine = FeatureSchema("y", ("no", "yes"), (FeatureSpec("a", "float", False), FeatureSpec("b", before, True)), 5, "")
    theirs = with_features(mine, [mine.features[0], replace(mine.features[1], dtype=after)])
    expected = [] if before == after else [f"column 'b' is {after}, registered model has {before}"]
    assert mine.differences(theirs) == expected


@SETTINGS
@given(mine=schemas(), theirs=schemas(), data=st.data())
def test_differences_empty_iff_names_order_dtypes_target_and_classes_match(
    mine: FeatureSchema, theirs: FeatureSchema, data: st.DataObject
) -> None:
    # Half the time, start from the same layout and change at most one thing.
    if data.draw(st.booleans()):
        change = data.draw(st.sampled_from(["none", "target", "classes", "swap", "name", "dtype"]))
        theirs = replace(mine, n_rows=theirs.n_rows)
        features = list(mine.features)
        if change == "target":
            theirs = replace(theirs, target=mine.target + "x")
        elif change == "classes":
            theirs = replace(theirs, classes=(mine.classes[0], mine.classes[1] + "x"))
        elif change == "swap":
            theirs = replace(theirs, classes=(mine.classes[1], mine.classes[0]))
        elif change == "name":
            features[-1] = replace(features[-1], name=features[-1].name + "x")
        elif change == "dtype":
            features[0] = replace(features[0], dtype=next(d for d in DTYPES if d != features[0].dtype))
        theirs = with_features(theirs, features)
    same = (
        mine.target == theirs.target
        and mine.classes == theirs.classes
        and mine.names == theirs.names
        and [f.dtype for f in mine.features] == [f.dtype for f in theirs.features]
    )
    assert (mine.differences(theirs) == []) is same


@pytest.mark.parametrize(
    ("theirs", "problem"),
    [
        ({"target": "other"}, "target is 'other', registered model has 'y'"),
        ({"classes": ("no", "maybe")}, "classes are ['no', 'maybe'], registered model has ['no', 'yes']"),
        ({"classes": ("yes", "no")}, "positive class is 'no', registered model has 'yes'"),
    ],
)
def test_target_and_class_problems_are_named(theirs: dict[str, Any], problem: str) -> None:
    mine = FeatureSchema("y", ("no", "yes"), (FeatureSpec("a", "float", False),), 10, "sha256:x")
    assert mine.differences(replace(mine, **theirs)) == [problem]


# ------------------------------------------------------------------------------------------------------ split


def table(n_pos: int, n_neg: int, seed: int) -> tuple[pd.DataFrame, FeatureSchema]:
    rng = np.random.default_rng(seed)
    labels = np.array(["yes"] * n_pos + ["no"] * n_neg)
    rng.shuffle(labels)
    frame = pd.DataFrame({"row": np.arange(n_pos + n_neg), "x": rng.normal(size=n_pos + n_neg), "y": labels})
    schema = FeatureSchema("y", ("no", "yes"), (FeatureSpec("x", "float", False),), len(frame), "sha256:x")
    return frame, schema


SPLIT = {
    "n_pos": st.integers(10, 80),
    "n_neg": st.integers(10, 120),
    "seed": st.integers(0, 2**31 - 1),
    "test_size": st.floats(0.1, 0.45),
    "valid_size": st.floats(0.1, 0.45),
}


@SETTINGS
@given(**SPLIT)
def test_split_sizes_cover_and_stratification(
    n_pos: int, n_neg: int, seed: int, test_size: float, valid_size: float
) -> None:
    frame, schema = table(n_pos, n_neg, seed)
    n = len(frame)
    parts = split(frame, schema, seed=seed, test_size=test_size, valid_size=valid_size)
    rows = {name: list(getattr(parts, name)["row"]) for name in ("train", "valid", "test")}
    # Disjoint, and together exactly the table (no row lost, none twice), each part's index reset.
    together = rows["train"] + rows["valid"] + rows["test"]
    assert sorted(together) == list(range(n))
    for name in ("train", "valid", "test"):
        part = getattr(parts, name)
        assert list(part.index) == list(range(len(part)))
        assert list(part.columns) == ["row", "x", "y"]
        # Rows are whole: each carries the values of the row it came from.
        assert part.reset_index(drop=True).equals(frame.loc[part["row"]].reset_index(drop=True))
    # Sizes match the requested fractions within one row per class.
    assert abs(len(parts.test) - test_size * n) <= 1
    assert abs(len(parts.valid) - valid_size * n) <= 1
    assert len(parts.train) == n - len(parts.test) - len(parts.valid)
    # Stratified, within one row per class: the test part against the whole table, then train and valid
    # against what the test part left (the rest is split again, as two stratified steps).
    rest = pd.concat([parts.train, parts.valid])
    for part, whole in ((parts.test, frame), (parts.valid, rest), (parts.train, rest)):
        for label in ("yes", "no"):
            count, total = int((part["y"] == label).sum()), int((whole["y"] == label).sum())
            assert abs(count - total * len(part) / len(whole)) <= 1, (label, count, total, len(part), len(whole))


@SETTINGS
@given(**SPLIT, other=st.integers(0, 2**31 - 1))
def test_split_is_deterministic_per_seed(
    n_pos: int, n_neg: int, seed: int, test_size: float, valid_size: float, other: int
) -> None:
    assume(other != seed)
    frame, schema = table(n_pos, n_neg, 0)
    first = split(frame, schema, seed=seed, test_size=test_size, valid_size=valid_size)
    again = split(frame.copy(), schema, seed=seed, test_size=test_size, valid_size=valid_size)
    for name in ("train", "valid", "test"):
        assert getattr(first, name).equals(getattr(again, name))
    different = split(frame, schema, seed=other, test_size=test_size, valid_size=valid_size)
    assert sorted(different.test["row"]) != sorted(first.test["row"])
