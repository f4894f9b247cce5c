"""The predictor in SageMaker mode (`serve`): /ping and /invocations (CSV, JSON) of a real process on loopback."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridml.core.data import encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle
from hybridml.errors import InvalidInputError
from hybridml.serving import sagemaker
from hybridml.serving.payload_log import read_records
from hybridml.serving.predictor import BundlePredictor
from tests.integration.serving.conftest import free_port

MAX_ROWS = 50
MAX_BODY = 20_000
FEATURES = ["x", "color", "flag"]


def _mixed_frame() -> pd.DataFrame:
    """Numbers with gaps, categories that look like numbers ("1", "2") and a boolean: what CSV typing must keep."""
    rng = np.random.default_rng(7)
    n = 400
    color = rng.choice(["1", "2", "red"], n)
    flag = rng.random(n) < 0.5
    x = rng.normal(size=n)
    score = x + (color == "red") * 1.5 - flag * 0.8
    x[::17] = np.nan
    return pd.DataFrame({"x": x, "color": color, "flag": flag, "target": (score > 0.2).astype(int)})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = _mixed_frame()
    schema = infer_schema(frame, "target")
    assert [(f.name, f.dtype, f.nullable) for f in schema.features] == [
        ("x", "float", True), ("color", "category", False), ("flag", "bool", False)
    ]  # fmt: skip
    model = fit("xgboost", {"n_estimators": 10}, encode_features(frame, schema), encode_labels(frame, schema))
    directory = tmp_path_factory.mktemp("sm") / "model"  # as SageMaker unpacks model.tar.gz into /opt/ml/model
    save_bundle(model, "xgboost", {"n_estimators": 10}, schema, directory)
    return directory


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    payload_log: Path
    log: Path

    def call(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def invoke(self, body: bytes, content_type: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        extra = {k.replace("_", "-"): v for k, v in headers.items()}
        return self.call("POST", "/invocations", body, {"Content-Type": content_type, **extra})

    def counter(self, code: int) -> float:
        _, _, text = self.call("GET", "/metrics")
        pattern = rf'^hybridml_requests_total\{{[^}}]*code="{code}"[^}}]*\}} (\S+)$'
        values = [float(m) for m in re.findall(pattern, text.decode(), flags=re.M)]
        return sum(values)


def _start(model_dir: Path, work: Path, *flags: str) -> Server:
    """Start SageMaker mode on a free loopback port with the model in ``model_dir``; wait for /ping."""
    port = free_port()
    payload_log, log = work / "payload.jsonl", work / "server.log"
    # The image's entry point passes its flags first and SageMaker appends `serve`: the same order here.
    command = [sys.executable, "-m", "hybridml.serving", "--bind-host", "127.0.0.1", "--bind-port", str(port)]
    command += ["--payload-log", str(payload_log), *flags, "serve"]
    env = {"SM_MODEL_DIR": str(model_dir), "HYBRIDML_MODEL_NAME": "mixed", "HYBRIDML_MODEL_VERSION": "3"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    started = Server(port, process, payload_log, log)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if started.call("GET", "/ping")[0] == 200:
                return started
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"server not ready after 60s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = _start(bundle, tmp_path_factory.mktemp("sm-server"), "--max-rows", str(MAX_ROWS), "--max-body-bytes",
                     str(MAX_BODY))  # fmt: skip
    yield started
    _stop(started)


# Rows as CSV and the same rows as JSON values: a gap, categories that look like numbers, an unknown category.
CSV_ROWS = b"0.5,1,true\n,red,0\n-1.25,blue,FALSE\n2,2,1\n"
JSON_ROWS = [[0.5, "1", True], [None, "red", False], [-1.25, "blue", False], [2.0, "2", True]]


def _expected(bundle: Path) -> list[float]:
    return BundlePredictor.load(bundle).predict(JSON_ROWS)


def test_ping_answers_healthy_and_only_to_get(server: Server) -> None:
    status, headers, body = server.call("GET", "/ping")
    assert (status, json.loads(body)) == (200, {"status": "healthy"})
    assert headers["content-type"] == "application/json"
    assert server.call("POST", "/ping")[0] == 405


def test_csv_rows_are_scored_one_probability_per_line(server: Server, bundle: Path) -> None:
    expected = _expected(bundle)
    assert len(set(expected)) == 4  # distinct rows give distinct scores, so an order mix-up cannot pass
    before = server.counter(200)
    status, headers, body = server.invoke(CSV_ROWS, "text/csv", x_request_id="sm-csv-1")
    assert status == 200, body
    assert headers["content-type"] == "text/csv"
    assert (headers["x-hybridml-model"], headers["x-hybridml-version"], headers["x-request-id"]) == (
        "mixed", "3", "sm-csv-1"
    )  # fmt: skip
    assert body.endswith(b"\n") and body.count(b"\n") == 4
    assert [float(line) for line in body.decode().splitlines()] == expected
    assert server.counter(200) == before + 1
    # Same values through the KServe V1 route of the same process: one predictor, one answer.
    status, _, v1 = server.call("POST", "/v1/models/mixed:predict", json.dumps({"instances": JSON_ROWS}).encode())
    assert status == 200 and json.loads(v1)["predictions"] == expected


def test_csv_values_are_typed_by_the_schema_in_the_payload_log(server: Server, bundle: Path) -> None:
    server.invoke(CSV_ROWS, "text/csv; charset=utf-8", x_request_id="sm-csv-log")
    records = [r for r in read_records(server.payload_log) if r["request_id"] == "sm-csv-log"]
    assert len(records) == 1
    record = records[0]
    assert (record["model"], record["version"], record["variant"]) == ("mixed", "3", "stable")
    assert record["inputs"] == [dict(zip(FEATURES, row, strict=True)) for row in JSON_ROWS]
    assert record["unknown_categories"] == [[], [], ["color"], []]
    assert record["outputs"] == _expected(bundle)


@pytest.mark.parametrize(
    "payload",
    [
        {"instances": JSON_ROWS},
        {"instances": [dict(zip(FEATURES, row, strict=True)) for row in JSON_ROWS]},
        {"inputs": {name: [row[i] for row in JSON_ROWS] for i, name in enumerate(FEATURES)}},
        [dict(zip(FEATURES, row, strict=True)) for row in JSON_ROWS],
        JSON_ROWS,
    ],
    ids=["instances-lists", "instances-objects", "inputs-columns", "bare-objects", "bare-lists"],
)
def test_json_bodies_answer_predictions(server: Server, bundle: Path, payload: object) -> None:
    status, headers, body = server.invoke(json.dumps(payload).encode(), "application/json")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"predictions": _expected(bundle)}


def test_accept_chooses_the_answer_format(server: Server, bundle: Path) -> None:
    expected = _expected(bundle)
    status, headers, body = server.invoke(CSV_ROWS, "text/csv", accept="application/json")
    assert (status, headers["content-type"], json.loads(body)) == (200, "application/json", {"predictions": expected})
    rows = json.dumps(JSON_ROWS).encode()
    status, headers, body = server.invoke(rows, "application/json", accept="text/csv")
    assert (status, headers["content-type"]) == (200, "text/csv")
    assert [float(v) for v in body.decode().split()] == expected
    assert server.invoke(rows, "application/json", accept="*/*")[1]["content-type"] == "application/json"
    status, _, body = server.invoke(rows, "application/json", accept="image/png")
    assert status == 406 and "accept text/csv or application/json" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (CSV_ROWS, "text/plain", 415, "content type 'text/plain' is not supported; send text/csv or application/json"),
        (CSV_ROWS, "", 415, "content type '(none)' is not supported"),
        (b"0.5,1,true\n1,red\n", "text/csv", 400, "row 1 has 2 values, model expects 3 features"),
        (b"abc,1,true\n", "text/csv", 400, "row 0, feature 'x' (float) must be a number, got str 'abc'"),
        (b"0.5,1,maybe\n", "text/csv", 400, "row 0, feature 'flag' (bool) must be true/false (or 0/1), got 'maybe'"),
        (b"inf,1,true\n", "text/csv", 400, "row 0, feature 'x' (float) must be finite"),
        (b"0.5,,true\n", "text/csv", 400, "row 0, feature 'color' (category) is missing (null/NaN)"),
        (b"x,color,flag\n0.5,1,true\n", "text/csv", 400, "text/csv body starts with a header row"),
        (b"\xff\xfe,1,true\n", "text/csv", 400, "text/csv body is not UTF-8"),
        (b'0.5,"1,true\n', "text/csv", 400, "text/csv body is not valid CSV"),
        (b"", "text/csv", 400, "request has no rows"),
        (b"{not json", "application/json", 400, "Unrecognized request format"),
        (b'{"rows": []}', "application/json", 400, "request body must have exactly one of 'instances' or 'inputs'"),
        (b'[{"x": 1, "color": "1"}]', "application/json", 400, "row 0 is missing features 'flag'"),
        (b"0.5,1,true\n" * (MAX_ROWS + 1), "text/csv", 413, f"at most {MAX_ROWS} are accepted per request"),
        (b"0.5,1,true\n" * 2000, "text/csv", 413, f"over the limit of {MAX_BODY} bytes"),
    ],
    ids=[
        "unknown-type", "no-type", "short-row", "bad-number", "bad-bool", "infinite", "missing-category", "header",
        "not-utf8", "bad-quote", "empty", "bad-json", "no-instances", "missing-feature", "too-many-rows", "too-big",
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_4xx_and_the_server_keeps_serving(
    server: Server, bundle: Path, body: bytes, content_type: str, status: int, message: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    before = server.counter(status)
    got, answer_headers, answer = server.call("POST", "/invocations", body, headers)
    assert got == status, answer
    assert answer_headers["content-type"] == "application/json"
    assert message in json.loads(answer)["error"]
    if status != 413 or b"limit" not in answer:  # a body refused unread never reaches the model's counters
        assert server.counter(status) == before + 1
    assert server.process.poll() is None
    assert server.call("GET", "/ping")[0] == 200
    ok, _, scores = server.invoke(CSV_ROWS, "text/csv")
    assert ok == 200 and [float(v) for v in scores.decode().split()] == _expected(bundle)


def test_other_methods_and_paths(server: Server) -> None:
    assert server.call("GET", "/invocations")[0] == 405
    assert server.invoke(CSV_ROWS, "text/csv", x_request_id="\x01bad")[0] == 400
    status, _, body = server.call("GET", "/metrics")
    assert status == 200 and b'hybridml_requests_total{code="200",model="mixed"' in body
    assert server.call("GET", "/v2/health/ready")[0] == 200  # the KServe routes stay on the same port
    assert server.call("GET", "/admin/promote")[0] == 404


# ------------------------------------------------------------------ entry point: argv and environment


def test_serve_mode_is_chosen_by_the_bare_word_serve() -> None:
    assert sagemaker.is_serve(["serve"])
    assert sagemaker.is_serve(["--bind-host", "0.0.0.0", "--bind-port", "8080", "serve"])
    assert not sagemaker.is_serve(["--model-dir", "/m", "--model-name", "serve"])
    assert not sagemaker.is_serve(["--model-uri=file:///m", "--model-name", "serve"])
    assert not sagemaker.is_serve(["--model-dir", "/m", "--model-name", "m"])


def test_settings_read_the_environment_sagemaker_sets(bundle: Path, tmp_path: Path) -> None:
    args, model_dir = sagemaker.settings(["--bind-host", "127.0.0.1"], {"SM_MODEL_DIR": str(bundle)})
    assert (model_dir, args.bind_host, args.bind_port) == (bundle, "127.0.0.1", 8080)
    assert (args.model_name, args.model_version, args.variant, args.feedback_log) == ("model", "", "stable", None)
    environ = {"SM_MODEL_DIR": str(bundle), "SAGEMAKER_BIND_TO_PORT": "9090", "HYBRIDML_MODEL_NAME": "m"}
    args, _ = sagemaker.settings(["--bind-port", "8080", "--model-version", "7"], environ)
    assert (args.bind_port, args.model_name, args.model_version) == (9090, "m", "7")
    with pytest.raises(InvalidInputError, match=r"SAGEMAKER_BIND_TO_PORT must be a port in 1-65535, got '0'"):
        sagemaker.settings([], {"SM_MODEL_DIR": str(bundle), "SAGEMAKER_BIND_TO_PORT": "0"})
    with pytest.raises(InvalidInputError, match=r"model directory .*/none does not exist"):
        sagemaker.settings([], {"SM_MODEL_DIR": str(tmp_path / "none")})


def test_serve_without_a_model_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SM_MODEL_DIR": str(tmp_path)}  # a directory, but no bundle in it
    done = subprocess.run(
        [sys.executable, "-m", "hybridml.serving", "serve", "--bind-port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: not a hybridml model: {tmp_path}/hybridml.json is missing"]


def test_media_type_and_answer_type() -> None:
    assert sagemaker.media_type("Text/CSV; charset=utf-8") == "text/csv"
    assert sagemaker.answer_type(None, "text/csv") == "text/csv"
    assert sagemaker.answer_type("application/json, text/csv", "text/csv") == "application/json"
    assert sagemaker.answer_type("text/*", "application/json") == "text/csv"
    assert sagemaker.answer_type("application/*", "text/csv") == "application/json"
    assert sagemaker.answer_type("image/png", "text/csv") is None


def test_the_sagemaker_target_s_model_tar_gz_is_served_as_sagemaker_unpacks_it(bundle: Path, tmp_path: Path) -> None:
    """The hand-off with the deploy target: its archive, unpacked as SageMaker does, is this mode's model dir."""
    from hybridml.deploy.sagemaker.packaging import PROJECT, pack

    package = pack(bundle, PROJECT)
    model_dir = tmp_path / "opt" / "ml" / "model"
    model_dir.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(package.data), mode="r:gz") as archive:
        archive.extractall(model_dir, filter="data")
    assert "hybridml.json" in package.members
    started = _start(model_dir, tmp_path)
    try:
        status, _, body = started.invoke(CSV_ROWS, "text/csv")
        assert status == 200 and [float(v) for v in body.decode().split()] == _expected(bundle)
    finally:
        _stop(started)
