"""Promote and rollback change the split of a running router without a restart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hybridml.serving.predictor import BundlePredictor
from tests.integration.serving.test_traffic import Conn

NAME = "cancer"


def test_promote_and_rollback_without_restart(
    xgb_bundle: Path, xgb_bundle_v2: Path, cancer: tuple[pd.DataFrame, str], tmp_path: Path, launch: Callable[..., Any]
) -> None:
    frame, _ = cancer
    row = [float(v) for v in frame[BundlePredictor.load(xgb_bundle).feature_names].iloc[0]]
    launched = launch(xgb_bundle, NAME, tmp_path / "log", "--model-version", "1", "--canary-dir", str(xgb_bundle_v2),
                      "--canary-version", "2", "--canary-percent", "50")  # fmt: skip
    try:
        conn = Conn(launched.endpoint)
        assert conn.request("POST", "/admin/traffic", {"canary_percent": 100})[0] == 200
        assert conn.request("POST", "/admin/traffic", {"canary_percent": 101})[0] == 400
        versions = {
            conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]})[1]["x-hybridml-version"]
            for _ in range(10)
        }
        assert versions == {"2"}
        state = conn.request("POST", "/admin/promote")[2]
        assert state["variants"] == {
            "stable": {"version": "2", "pid": state["variants"]["stable"]["pid"], "alive": True}
        }
        status, headers, _ = conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]})
        assert (status, headers["x-hybridml-version"], headers["x-hybridml-variant"]) == (200, "2", "stable")
        assert conn.request("POST", "/admin/rollback")[0] == 409  # nothing left to roll back
        assert launched.process.poll() is None
    finally:
        launched.stop()
