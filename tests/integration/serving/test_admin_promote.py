"""Promote and rollback change the split of a running router without a restart, through its control listener."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hybridml.errors import ConflictError, InvalidInputError
from hybridml.serving.control import ControlClient
from hybridml.serving.predictor import BundlePredictor
from tests.integration.serving.conftest import free_port
from tests.integration.serving.test_traffic import Conn

NAME = "cancer"


def test_promote_and_rollback_without_restart(
    xgb_bundle: Path, xgb_bundle_v2: Path, cancer: tuple[pd.DataFrame, str], tmp_path: Path, launch: Callable[..., Any]
) -> None:
    frame, _ = cancer
    row = [float(v) for v in frame[BundlePredictor.load(xgb_bundle).feature_names].iloc[0]]
    control_port = free_port()
    launched = launch(xgb_bundle, NAME, tmp_path / "log", "--model-version", "1", "--canary-dir", str(xgb_bundle_v2),
                      "--canary-version", "2", "--canary-percent", "50",
                      "--control-port", str(control_port))  # fmt: skip
    try:
        control = ControlClient(f"http://127.0.0.1:{control_port}")
        conn = Conn(launched.endpoint)
        # The inference port knows no /admin: not even a 405 that would tell the route exists.
        for method in ("GET", "POST"):
            for action in ("traffic", "promote", "rollback"):
                assert conn.request(method, f"/admin/{action}", {"canary_percent": 100})[0] == 404
        assert control.traffic(100)["canary_percent"] == 100
        with pytest.raises(InvalidInputError, match="canary percent must be an integer in \\[0, 100\\], got 101"):
            control.traffic(101)
        versions = {
            conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]})[1]["x-hybridml-version"]
            for _ in range(10)
        }
        assert versions == {"2"}
        state = control.promote()
        assert state["variants"] == {
            "stable": {"version": "2", "pid": state["variants"]["stable"]["pid"], "alive": True}
        }
        assert control.state() == state
        status, headers, _ = conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]})
        assert (status, headers["x-hybridml-version"], headers["x-hybridml-variant"]) == (200, "2", "stable")
        with pytest.raises(ConflictError, match="answered 409: there is no canary to roll back"):
            control.rollback()  # nothing left to roll back
        assert launched.process.poll() is None
    finally:
        launched.stop()
