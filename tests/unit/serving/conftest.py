"""Tiny model bundles built with hybridml.core for the serving unit tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle


@pytest.fixture(scope="session")
def cancer() -> tuple[pd.DataFrame, str]:
    return builtin_breast_cancer()


@pytest.fixture(scope="session")
def xgb_bundle(tmp_path_factory: pytest.TempPathFactory, cancer: tuple[pd.DataFrame, str]) -> Path:
    frame, target = cancer
    schema = infer_schema(frame, target)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    model = fit("xgboost", {"n_estimators": 20}, X, y)
    directory = tmp_path_factory.mktemp("bundles") / "xgb"
    save_bundle(model, "xgboost", {"n_estimators": 20}, schema, directory)
    return directory


@pytest.fixture(scope="session")
def mixed_frame() -> pd.DataFrame:
    """A table with every dtype: float with gaps, int, bool, category."""
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {
            "amount": rng.normal(100, 20, n),
            "count": rng.integers(0, 10, n),
            "flag": rng.integers(0, 2, n).astype(bool),
            "color": rng.choice(["red", "green", "blue"], n),
        }
    )
    frame.loc[::10, "amount"] = np.nan
    frame["label"] = np.where(frame["count"] + (frame["color"] == "red") * 3 > 6, "yes", "no")
    return frame


@pytest.fixture(scope="session")
def hgb_bundle(tmp_path_factory: pytest.TempPathFactory, mixed_frame: pd.DataFrame) -> Path:
    schema = infer_schema(mixed_frame, "label")
    X, y = encode_features(mixed_frame, schema), encode_labels(mixed_frame, schema)
    model = fit("hist_gradient_boosting", {"max_iter": 20}, X, y)
    directory = tmp_path_factory.mktemp("bundles") / "hgb"
    save_bundle(model, "hist_gradient_boosting", {"max_iter": 20}, schema, directory)
    return directory
