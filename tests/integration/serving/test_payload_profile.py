"""Drift needs what the server logs: the training rows sent to a real server come back from its payload log with
the bin and category shares of the bundle's reference profile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hybridml.core.data import encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, positive_scores, read_bundle, save_bundle
from hybridml.core.profile import bin_shares, build_profile, category_shares, missing_share
from hybridml.serving import client
from hybridml.serving.payload_log import read_records

pytestmark = pytest.mark.integration

NAME = "mixed"


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    """Numbers with gaps, integers, booleans and text categories."""
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(4, 0.6, n).round(2),
            "count": rng.integers(0, 25, n),
            "flag": rng.integers(0, 2, n).astype(bool),
            "color": rng.choice(["red", "green", "blue", "violet"], n, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )
    frame.loc[::9, "amount"] = np.nan
    frame["label"] = np.where(frame["count"] + (frame["color"] == "red") * 8 > 14, "yes", "no")
    return frame


@pytest.fixture(scope="module")
def bundle(train: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    schema = infer_schema(train, "label")
    X = encode_features(train, schema)
    model = fit("hist_gradient_boosting", {"max_iter": 20}, X, encode_labels(train, schema))
    profile = build_profile(train, schema, positive_scores(model, X))
    directory = tmp_path_factory.mktemp("bundles") / "profiled"
    save_bundle(model, "hist_gradient_boosting", {"max_iter": 20}, schema, directory, profile=profile)
    return directory


def _sent_rows(train: pd.DataFrame) -> list[dict[str, Any]]:
    features = train.drop(columns="label")
    rows = features.astype(object).where(features.notna(), None).to_dict("records")
    # Plain JSON types, as a client sends them.
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in rows
    ]


def test_payload_log_recomputes_the_reference_bin_shares(
    bundle: Path, train: pd.DataFrame, tmp_path: Path, launch: Callable[..., Any]
) -> None:
    profile = read_bundle(bundle).profile
    assert profile is not None, "save_bundle did not write profile.json"
    assert set(profile.numeric) == {"amount", "count", "flag"} and set(profile.categorical) == {"color"}
    payload = tmp_path / "payload.jsonl"
    launched = launch(bundle, NAME, tmp_path / "server.log", "--payload-log", str(payload))
    rows = _sent_rows(train)
    try:
        # Half through V1 (named rows), half through V2 (one tensor per feature), in batches.
        for start in range(0, len(rows), 50):
            protocol = "v1" if start < len(rows) // 2 else "v2"
            client.predict(launched.endpoint, NAME, rows[start : start + 50], protocol=protocol)
    finally:
        launched.stop()
    records = list(read_records(payload))
    logged = [row for record in records for row in record["inputs"]]
    assert len(records) == 6 and logged == rows  # every row, as sent, in order

    for feature, reference in profile.numeric.items():
        from_log = bin_shares([row[feature] for row in logged], reference.edges)
        from_sent = bin_shares(train[feature].astype(float).tolist(), reference.edges)
        assert from_log == pytest.approx(from_sent, abs=1e-12), feature
        assert from_log == pytest.approx(reference.shares, abs=1e-9), feature  # the training split's own shares
        assert missing_share([row[feature] for row in logged]) == pytest.approx(reference.missing, abs=1e-12)
    for feature, categories in profile.categorical.items():
        from_log_categories = category_shares([row[feature] for row in logged], categories.shares)
        assert from_log_categories == pytest.approx(category_shares(train[feature], categories.shares), abs=1e-12)
        assert from_log_categories == pytest.approx(categories.shares, abs=1e-9)
    assert profile.numeric["amount"].missing > 0.1  # the gaps were sent as null and logged as null
    assert all(record["unknown_categories"] == [[]] * len(record["inputs"]) for record in records)
