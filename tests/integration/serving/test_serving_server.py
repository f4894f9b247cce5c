"""The real model server process: V1, V2 and kserve's own client agree with in-process scores; errors are 4xx."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from hybridml.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from hybridml.serving import client
from hybridml.serving.predictor import BundlePredictor

pytestmark = pytest.mark.integration

NAME = "cancer"
MAX_ROWS = 100


@pytest.fixture(scope="module")
def server(xgb_bundle: Path, tmp_path_factory: pytest.TempPathFactory, launch: Callable[..., Any]) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    launched = launch(xgb_bundle, NAME, log, "--model-version", "7", "--max-rows", str(MAX_ROWS))
    print(f"model server ready after {launched.ready_after_s:.1f}s")
    try:
        yield launched.endpoint
    finally:
        launched.stop()


@pytest.fixture(scope="module")
def rows(cancer: tuple[pd.DataFrame, str], xgb_bundle: Path) -> list[list[float]]:
    frame, _ = cancer
    return frame[BundlePredictor.load(xgb_bundle).schema.names].iloc[::20].to_numpy().tolist()


@pytest.fixture(scope="module")
def expected(xgb_bundle: Path, rows: list[list[float]]) -> list[float]:
    return BundlePredictor.load(xgb_bundle).predict(rows)


def test_v1_matches_in_process(server: str, rows: list[list[float]], expected: list[float]) -> None:
    response = requests.post(f"{server}/v1/models/{NAME}:predict", json={"instances": rows}, timeout=10)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected, atol=1e-6)
    assert response.headers["X-Hybridml-Model"] == NAME
    assert response.headers["X-Hybridml-Version"] == "7"
    assert response.headers["X-Hybridml-Variant"] == "stable"


def test_v2_matrix_and_per_feature_match_in_process(
    server: str, rows: list[list[float]], expected: list[float], xgb_bundle: Path
) -> None:
    body = {"inputs": [{"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}]}
    response = requests.post(f"{server}/v2/models/{NAME}/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert (output["name"], output["datatype"], output["shape"]) == ("probability", "FP64", [len(rows)])
    np.testing.assert_allclose(output["data"], expected, atol=1e-6)
    assert response.headers["X-Hybridml-Version"] == "7"
    names = BundlePredictor.load(xgb_bundle).feature_names
    named = [dict(zip(names, r, strict=True)) for r in rows]
    np.testing.assert_allclose(client.predict(server, NAME, named, protocol="v2"), expected, atol=1e-6)
    np.testing.assert_allclose(client.predict(server, NAME, rows, protocol="v2"), expected, atol=1e-6)
    np.testing.assert_allclose(client.predict(server, NAME, named, protocol="v1"), expected, atol=1e-6)


def test_kserve_rest_client_binary_and_json(server: str, rows: list[list[float]], expected: list[float]) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def infer(binary: bool) -> list[float]:
        tensor = InferInput(name="x", shape=[len(rows), len(rows[0])], datatype="FP32")
        tensor.set_data_from_numpy(np.asarray(rows, dtype=np.float32), binary_data=binary)
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=10))
        try:
            result = await rest.infer(server, InferRequest(model_name=NAME, infer_inputs=[tensor]), model_name=NAME)
        finally:
            await rest._client.aclose()
        return [float(v) for v in result.outputs[0].as_numpy()]

    np.testing.assert_allclose(asyncio.run(infer(binary=False)), expected, atol=1e-6)
    np.testing.assert_allclose(asyncio.run(infer(binary=True)), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (f"/v1/models/{NAME}:predict", b'{"instances": [[1, 2', 400, "Unrecognized request format"),
        (f"/v2/models/{NAME}/infer", b'{"inputs": [', 400, "invalid request body"),
        (f"/v1/models/{NAME}:predict", b'{"instances": [[1, 2, 3]]}', 400, "row 0 has 3 values, model expects 30"),
        (f"/v1/models/{NAME}:predict", b'{"instances": [{"bogus": 1}]}', 400, "unknown features 'bogus'"),
        (f"/v1/models/{NAME}:predict", b'{"rows": []}', 400, "exactly one of 'instances' or 'inputs'"),
        (f"/v1/models/{NAME}:predict", b"[1, 2]", 400, "must be a JSON object"),
        (
            f"/v2/models/{NAME}/infer",
            b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
            400,
            "has shape [1, 3], model expects [n, 30]",
        ),
        (
            f"/v2/models/{NAME}/infer",
            b'{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP99", "data": [1]}]}',
            400,
            "unknown datatype 'FP99'",
        ),
        (
            f"/v2/models/{NAME}/infer",
            b'{"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": [1]}]}',
            400,
            "has 1 values, its shape [1, 30] needs 30",
        ),
        (f"/v2/models/{NAME}/infer", b'{"inputs": {}}', 400, "invalid request body"),
        (f"/v2/models/{NAME}/infer", b'{"inputs": []}', 400, "request has no inputs"),
        ("/v1/models/nope:predict", b'{"instances": [[1]]}', 404, "nope does not exist"),
        ("/v2/models/nope/infer", b'{"inputs": []}', 404, "nope does not exist"),
    ],
)
def test_client_mistakes_are_4xx_with_json_error(
    server: str, path: str, body: bytes, status: int, message: str
) -> None:
    response = requests.post(server + path, data=body, headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_binary_v2_decoding_errors_are_400(server: str) -> None:
    url = f"{server}/v2/models/{NAME}/infer"
    for length, body in (("abc", b"xx"), ("2", b"{}xxxx")):
        headers = {"content-type": "application/octet-stream", "inference-header-content-length": length}
        response = requests.post(url, data=body, headers=headers, timeout=10)
        assert response.status_code == 400, response.text
        assert "error" in response.json()


def test_too_many_rows_is_413(server: str, rows: list[list[float]]) -> None:
    response = requests.post(
        f"{server}/v1/models/{NAME}:predict", json={"instances": [rows[0]] * (MAX_ROWS + 1)}, timeout=10
    )
    assert response.status_code == 413
    assert f"at most {MAX_ROWS}" in response.json()["error"]
    with pytest.raises(PayloadTooLargeError):
        client.predict(server, NAME, [rows[0]] * (MAX_ROWS + 1))


def test_client_raises_hybridml_errors(server: str, rows: list[list[float]]) -> None:
    with pytest.raises(InvalidInputError, match="row 0 has 3 values, model expects 30 features"):
        client.predict(server, NAME, [rows[0][:3]], protocol="v1")
    with pytest.raises(InvalidInputError, match="shape \\[1, 3\\], model expects \\[n, 30\\]"):
        client.predict(server, NAME, [rows[0][:3]], protocol="v2")
    with pytest.raises(NotFoundError):
        client.predict(server, "nope", rows)
    assert not client.is_ready(server, "nope")


def test_still_ready_after_errors_and_health_routes(server: str) -> None:
    assert client.is_ready(server, NAME)
    assert requests.get(f"{server}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{server}/v1/models/{NAME}", timeout=5).json() == {"name": NAME, "ready": True}


def test_binds_only_loopback_address(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.2", port))  # same interface, other address: nothing listens there
