"""1,000+ generated malformed payloads against one real server: all 4xx with a JSON error, none 5xx, still ready."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridml.serving.predictor import BundlePredictor

NAME = "cancer"
WIDTH = 30
PATHS = (f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
bad_values = (
    st.text(max_size=5)
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    | st.sampled_from([1e39, -1e300, 10**400, -(10**50)])
)


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(PATHS))
    kind = draw(st.sampled_from(["json", "bad_value", "bad_width", "bytes", "v2_shape", "v2_type"]))
    if path.startswith("/v1") and kind.startswith("v2"):
        kind = "bad_value"
    row: list[Any] = [1.0] * WIDTH
    if kind == "json":
        body = draw(json_values)
        if isinstance(body, dict) and ("instances" in body or "inputs" in body):
            body = {"inputs": {"nope": 1}} if draw(st.booleans()) else [body]
        return path, json.dumps(body).encode()
    if kind == "bytes":
        return path, draw(st.binary(max_size=64)) + b"\xff"
    if kind == "bad_value":
        row[draw(st.integers(0, WIDTH - 1))] = draw(bad_values)
    elif kind == "bad_width":
        row = row[: draw(st.sampled_from([0, 1, WIDTH - 1]))] if draw(st.booleans()) else [*row, 1.0]
    if path.startswith("/v1") or kind in ("bad_value", "bad_width"):
        if path.startswith("/v1"):
            return path, json.dumps({"instances": [row]}).encode()
        return path, json.dumps(
            {"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": row}]}
        ).encode()
    if kind == "v2_shape":
        shape = draw(st.lists(st.integers(-3, 40), max_size=3).filter(lambda s: s != [1, WIDTH]))
        return path, json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": row}]}).encode()
    datatype = draw(st.sampled_from(["BYTES", "BOOL", "FP99", "", "fp32"]))
    return path, json.dumps(
        {"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": datatype, "data": row}]}
    ).encode()


@pytest.fixture(scope="module")
def server(xgb_bundle: Path, tmp_path_factory: pytest.TempPathFactory, launch: Callable[..., Any]) -> Iterator[str]:
    launched = launch(xgb_bundle, NAME, tmp_path_factory.mktemp("fuzz") / "server.log", "--max-body-bytes", "65536")
    try:
        yield launched.endpoint
    finally:
        launched.stop()


def test_malformed_payloads_are_4xx_json(server: str, cancer: tuple[pd.DataFrame, str], xgb_bundle: Path) -> None:
    assert BundlePredictor.load(xgb_bundle).n_features == WIDTH
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    statuses: dict[int, int] = {}

    # derandomize: CI sees the same 1,200 payloads every run (turn it off locally to explore further).
    @settings(
        max_examples=1200, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(malformed())
    def check(case: tuple[str, bytes]) -> None:
        path, body = case
        conn.request("POST", path, body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        assert 400 <= response.status < 500, (path, body[:300], raw[:300])
        assert isinstance(json.loads(raw)["error"], str)

    check()
    print(f"statuses: {statuses}")
    assert sum(statuses.values()) >= 1000
    conn.request("GET", f"/v2/models/{NAME}/ready")
    assert conn.getresponse().status == 200


def test_oversized_body_is_413(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", PATHS[0], body=b"[" + b"1," * 40_000 + b"1]", headers={"content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 413 and "over the limit" in json.loads(response.read())["error"]
