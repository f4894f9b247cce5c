"""Feature schema behaviour that mutation testing (issue 12) found unasserted.

What ``FeatureSchema.from_dict`` accepts and keeps (schemas written without statistics, the ``extra`` object),
the sentences it refuses with, and that ``to_dict`` is strict JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from hybridml.core.schema import CATEGORY, NUMERIC, FeatureSchema, FeatureSpec
from hybridml.errors import InvalidInputError


def _schema(**changes: Any) -> FeatureSchema:
    fields: dict[str, Any] = {
        "target": "y",
        "classes": ("no", "yes"),
        "features": (
            FeatureSpec("x", NUMERIC, nullable=True, min=0.0, max=1.0, quantiles=(0.0, 0.5, 1.0)),
            FeatureSpec("c", CATEGORY, nullable=False, categories=("a", "b")),
        ),
        "n_rows": 10,
        "data_hash": "sha256:00",
    }
    return FeatureSchema(**{**fields, **changes})


def _refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(InvalidInputError) as refused:
        FeatureSchema.from_dict(raw)
    return str(refused.value.message)


def test_an_unknown_dtype_is_refused_naming_the_feature_and_the_dtype() -> None:
    with pytest.raises(InvalidInputError) as refused:
        FeatureSpec("age", "text", nullable=False)
    assert refused.value.message.startswith("feature 'age': unknown dtype 'text' (expected one of ")


def test_a_feature_written_without_statistics_reads_back_with_none() -> None:
    raw = _schema().to_dict()
    for feature in raw["features"]:
        del feature["quantiles"], feature["categories"]
    schema = FeatureSchema.from_dict(raw)
    assert [(f.quantiles, f.categories) for f in schema.features] == [((), ()), ((), ())]


def test_extra_round_trips_and_defaults_to_empty() -> None:
    schema = _schema(extra={"source": "s3://bucket/table.csv", "positive_rate": 0.25})
    assert FeatureSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    raw = schema.to_dict()
    del raw["extra"]
    assert FeatureSchema.from_dict(raw).extra == {}


def test_a_wrong_number_of_classes_is_refused_with_the_count() -> None:
    raw = _schema().to_dict()
    raw["classes"] = ["a", "b", "c"]
    assert _refusal(raw) == "malformed feature schema: expected 2 classes, got 3"


def test_dropped_that_is_not_an_object_is_refused_with_its_type() -> None:
    raw = _schema().to_dict()
    raw["dropped"] = ["id"]
    assert _refusal(raw) == "malformed feature schema: dropped must be an object of column: reason, got list"


def test_to_dict_writes_non_finite_statistics_as_null() -> None:
    spec = FeatureSpec("x", NUMERIC, nullable=True, mean=math.nan, std=math.inf, quantiles=(-math.inf, 1.0))
    raw = _schema(features=(spec,)).to_dict()
    feature = raw["features"][0]
    assert (feature["mean"], feature["std"], feature["quantiles"]) == (None, None, [None, 1.0])
    json.dumps(raw, allow_nan=False)  # strict JSON: raises on NaN or infinity
