"""LocalTarget.serve with canary and shadow: live split changes keep the pid; a failing shadow changes nothing."""

from __future__ import annotations

import http.client
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hybridml.core.data import encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle
from hybridml.deploy import LocalConfig, ModelRef, make_target, model_ref
from hybridml.errors import ConflictError, InvalidInputError
from hybridml.serving.control import ControlClient
from hybridml.serving.predictor import BundlePredictor
from tests.integration.serving.conftest import free_port
from tests.integration.serving.test_traffic import Conn

NAME = "cancer"


@pytest.fixture(scope="module")
def row(cancer: tuple[pd.DataFrame, str], xgb_bundle: Path) -> list[float]:
    frame, _ = cancer
    return [float(v) for v in frame[BundlePredictor.load(xgb_bundle).feature_names].iloc[5]]


@pytest.fixture(scope="module")
def rejecting_shadow(tmp_path_factory: pytest.TempPathFactory, cancer: tuple[pd.DataFrame, str]) -> Path:
    """A challenger with the stable's feature names whose first feature is boolean: it rejects every request
    of real measurements in validation (they are never 0/1), so each shadow copy fails."""
    frame, target = cancer
    frame = frame.copy()
    first = frame.columns.drop(target)[0]
    frame[first] = frame[first] > frame[first].median()
    schema = infer_schema(frame, target)
    model = fit("xgboost", {"n_estimators": 5}, encode_features(frame, schema), encode_labels(frame, schema))
    directory = tmp_path_factory.mktemp("bundles") / "rejecting"
    save_bundle(model, "xgboost", {"n_estimators": 5}, schema, directory)
    return directory


def _ref(version: str, bundle: Path) -> ModelRef:
    return model_ref(NAME, version, bundle.as_uri())


def _versions(conn: Conn, row: list[float], n: int = 10) -> set[str]:
    answers = [conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]}) for _ in range(n)]
    assert all(status == 200 for status, _, _ in answers)
    return {headers["x-hybridml-version"] for _, headers, _ in answers}


def test_serve_then_change_the_split_without_restart(
    xgb_bundle: Path, xgb_bundle_v2: Path, row: list[float], tmp_path: Path
) -> None:
    target = make_target(LocalConfig(tmp_path / "deployments", start_timeout_s=60))
    try:
        served = target.serve(
            NAME, _ref("1", xgb_bundle), canary=(_ref("2", xgb_bundle_v2), 30), shadow=_ref("3", xgb_bundle_v2)
        )
        assert (served.stable_version, served.canary_version, served.canary_percent, served.ready) == (
            "1",
            "2",
            30,
            True,
        )
        assert "shadowed by 3" in served.detail
        state = target.state(NAME)
        pid = state["pid"]
        assert state["router"] and state["shadow"]["version"] == "3"
        conn = Conn(served.endpoint)

        assert target.set_traffic(NAME, 100).canary_percent == 100
        assert _versions(conn, row) == {"2"}
        assert target.set_traffic(NAME, 0).canary_percent == 0
        assert _versions(conn, row) == {"1"}
        rolled = target.rollback(NAME)
        assert (rolled.stable_version, rolled.canary_version, rolled.ready) == ("1", None, True)
        assert target.state(NAME)["pid"] == pid  # the split changed in the running router
        assert ControlClient(state["control"]).state()["variants"].keys() == {"stable", "shadow"}
        assert conn.request("GET", "/admin/traffic")[0] == 404  # control is not on the inference port
        with pytest.raises(ConflictError, match="no canary"):
            target.promote(NAME)
        with pytest.raises(InvalidInputError, match="0 to 100"):
            target.set_traffic(NAME, 101)

        # The logs live in the state directory; the shadow's copies are in the payload log too.
        deadline = time.monotonic() + 5
        variants: set[str] = set()
        while variants != {"stable", "canary", "shadow"} and time.monotonic() < deadline:
            lines = target.payload_log(NAME).read_text().splitlines()
            variants = {json.loads(line)["variant"] for line in lines}
            time.sleep(0.05)
        assert variants == {"stable", "canary", "shadow"}

        # Taking over the endpoint's own port: the new server replaces the old one there.
        port = state["port"]
        replaced = target.serve(NAME, _ref("2", xgb_bundle_v2), port=port)
        assert (replaced.endpoint, replaced.stable_version, replaced.ready) == (served.endpoint, "2", True)
        assert target.state(NAME)["pid"] != pid and not target.state(NAME)["router"]
    finally:
        for deployment in target.list():
            target.delete(deployment.name)


def test_serve_refuses_mismatched_variants(
    xgb_bundle: Path, xgb_bundle_v2: Path, hgb_bundle_path: Path, tmp_path: Path
) -> None:
    target = make_target(LocalConfig(tmp_path / "deployments"))
    with pytest.raises(InvalidInputError, match=r"shadow '9' has different features than stable '1'$"):
        target.serve(NAME, _ref("1", xgb_bundle), shadow=_ref("9", hgb_bundle_path))
    with pytest.raises(InvalidInputError, match="two different bundles have version '1'"):
        target.serve(NAME, _ref("1", xgb_bundle), canary=(_ref("1", xgb_bundle_v2), 10))
    assert target.list() == []


@pytest.fixture(scope="module")
def hgb_bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = pd.DataFrame({"a": np.arange(40.0), "y": ["p", "n"] * 20})
    schema = infer_schema(frame, "y")
    model = fit("logistic_regression", {}, encode_features(frame, schema), encode_labels(frame, schema))
    directory = tmp_path_factory.mktemp("bundles") / "other"
    save_bundle(model, "logistic_regression", {}, schema, directory)
    return directory


def _raw(
    endpoint: str, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    host, port = endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_failing_shadow_never_changes_a_response(
    xgb_bundle: Path, rejecting_shadow: Path, row: list[float], tmp_path: Path, launch: Callable[..., Any]
) -> None:
    assert BundlePredictor.load(rejecting_shadow).feature_names == BundlePredictor.load(xgb_bundle).feature_names
    plain = launch(xgb_bundle, NAME, tmp_path / "plain.log", "--model-version", "1")
    control_port = free_port()
    shadowed = launch(xgb_bundle, NAME, tmp_path / "shadowed.log", "--model-version", "1",
                      "--shadow-dir", str(rejecting_shadow), "--shadow-version", "9",
                      "--control-port", str(control_port))  # fmt: skip
    width = len(row)
    requests = [
        ("/v1/models/cancer:predict", {"instances": [row]}),
        ("/v1/models/cancer:predict", {"instances": [row, row[::-1]]}),
        ("/v2/models/cancer/infer", {"inputs": [{"name": "x", "shape": [1, width], "datatype": "FP64", "data": row}]}),
        ("/v1/models/cancer:predict", {"instances": [row[:-1]]}),  # the stable rejects it too: 400 both ways
    ]
    try:
        sent = 0
        for i in range(10):
            for j, (path, payload) in enumerate(requests):
                headers = {"content-type": "application/json", "x-request-id": f"r-{i}-{j}"}
                body = json.dumps(payload).encode()
                expected = _raw(plain.endpoint, "POST", path, body, headers)
                got = _raw(shadowed.endpoint, "POST", path, body, headers)
                assert got == expected, (path, got, expected)
                assert expected[0] in (200, 400)
                sent += 1
        # Every copy reached the challenger and failed there; the failures are counted, never returned.
        deadline = time.monotonic() + 10
        errors = 0.0
        while errors < sent and time.monotonic() < deadline:
            text = _raw(shadowed.endpoint, "GET", "/metrics", b"", {})[2].decode()
            match = re.search(r'hybridml_shadow_requests_total\{model="cancer",outcome="error"\} ([\d.]+)', text)
            errors = float(match.group(1)) if match else 0.0
            time.sleep(0.05)
        assert errors == sent
        assert 'hybridml_shadow_requests_total{model="cancer",outcome="ok"}' not in text
        assert re.search(r'hybridml_requests_total\{code="400",model="cancer",variant="shadow",version="9"\}', text)
        assert plain.process.poll() is None and shadowed.process.poll() is None
        workers = ControlClient(f"http://127.0.0.1:{control_port}").state()["variants"]
    finally:
        plain.stop()
        shadowed.stop()
    # SIGTERM to the router stops its workers too (none is left orphaned).
    for variant in workers.values():
        with pytest.raises(ProcessLookupError):
            os.kill(variant["pid"], 0)
