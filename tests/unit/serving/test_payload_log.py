"""Payload record v2 field by field (V1 and V2, text and unknown categories), the unknown-category counter, the
role change of a promoted worker, and size rotation shared by several writer processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import generate_latest

from hybridml.serving.app import InferenceApp, Response
from hybridml.serving.payload_log import RECORD_VERSION, JsonLinesLog, log_files, read_records
from hybridml.serving.predictor import BundlePredictor

pytestmark = pytest.mark.unit

FIELDS = {
    "record_version", "ts", "request_id", "model", "version", "variant", "schema_hash", "inputs",
    "unknown_categories", "outputs",
}  # fmt: skip


def _app(bundle: Path, name: str, log: Path) -> InferenceApp:
    return InferenceApp(name, "3", BundlePredictor.load(bundle), payload_log=JsonLinesLog(log))


def _post(
    app: InferenceApp, path: str, body: Any, request_id: str, variant: str | None = None, **headers: str
) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    response = asyncio.run(app.handle("POST", path, {"x-request-id": request_id, **headers}, raw, variant))
    assert response.status == 200, response.body
    return response


def _scores(response: Response, v2: bool) -> list[float]:
    if "inference-header-content-length" in dict(response.headers):
        length = int(dict(response.headers)["inference-header-content-length"])
        return np.frombuffer(response.body[length:], dtype="<f8").tolist()
    answer = orjson.loads(response.body)
    return answer["outputs"][0]["data"] if v2 else answer["predictions"]


def _records(log: Path) -> dict[str, dict[str, Any]]:
    return {r["request_id"]: r for r in read_records(log)}


def _check(record: dict[str, Any], app: InferenceApp, expected: dict[str, Any], since: float) -> None:
    """Every field of a v2 record, exactly."""
    assert set(record) == FIELDS
    assert record["record_version"] == RECORD_VERSION == 2
    assert isinstance(record["ts"], float) and since <= record["ts"] <= time.time()
    assert (record["model"], record["version"]) == (app.name, "3")
    assert record["schema_hash"] == app.predictor.schema.schema_hash
    assert record["schema_hash"].startswith("sha256:") and len(record["schema_hash"]) == 7 + 64
    assert record["variant"] == expected["variant"]
    assert record["inputs"] == expected["inputs"]
    assert record["unknown_categories"] == expected["unknown"]
    assert record["outputs"] == pytest.approx(expected["outputs"], abs=1e-12)
    assert len(record["outputs"]) == len(record["inputs"]) == len(record["unknown_categories"])


def _unknown_count(app: InferenceApp, feature: str, variant: str = "stable") -> float:
    text = generate_latest(app.registry).decode()
    pattern = (
        rf'hybridml_unknown_categories_total\{{feature="{feature}",model="{app.name}",variant="{variant}",'
        rf'version="3"\}} ([\d.]+)'
    )
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_v1_records_with_text_and_unknown_categories(hgb_bundle: Path, tmp_path: Path) -> None:
    log = tmp_path / "payload.jsonl"
    app = _app(hgb_bundle, "mixed", log)
    assert app.predictor.names == ("amount", "count", "flag", "color")
    since = time.time()
    rows = [[101.5, 3, True, "red"], [None, 7, False, "purple"], [88.0, 1, 0, 12]]
    positional = _post(app, "/v1/models/mixed:predict", {"instances": rows}, "v1-rows")
    named_rows = [
        {"color": "blue", "flag": 1, "count": 2, "amount": 99.25},
        {"amount": 50, "count": 0, "flag": True, "color": "Red"},
    ]
    named = _post(app, "/v1/models/mixed:predict", {"instances": named_rows}, "v1-named")
    columns = {"amount": [1.5, None], "count": [4, 5], "flag": [False, True], "color": ["green", "mauve"]}
    columnar = _post(app, "/v1/models/mixed:predict", {"inputs": columns}, "v1-columns")
    records = _records(log)
    assert set(records) == {"v1-rows", "v1-named", "v1-columns"}
    names = ("amount", "count", "flag", "color")
    _check(records["v1-rows"], app, {
        "variant": "stable",
        "inputs": [dict(zip(names, r, strict=True)) for r in rows],  # as sent: the int 12 stays an int
        "unknown": [[], ["color"], ["color"]],
        "outputs": _scores(positional, v2=False),
    }, since)  # fmt: skip
    _check(records["v1-named"], app, {
        "variant": "stable", "inputs": named_rows, "unknown": [[], ["color"]],  # category match is case-sensitive
        "outputs": _scores(named, v2=False),
    }, since)  # fmt: skip
    _check(records["v1-columns"], app, {
        "variant": "stable",
        "inputs": [{"amount": 1.5, "count": 4, "flag": False, "color": "green"},
                   {"amount": None, "count": 5, "flag": True, "color": "mauve"}],
        "unknown": [[], ["color"]],
        "outputs": _scores(columnar, v2=False),
    }, since)  # fmt: skip
    assert _unknown_count(app, "color") == 4.0
    # A missing amount is not an unknown category, and only category features are ever counted.
    series = [
        line.split(" ")[0]
        for line in generate_latest(app.registry).decode().splitlines()
        if line.startswith("hybridml_unknown_categories_total{")
    ]
    assert series == ['hybridml_unknown_categories_total{feature="color",model="mixed",variant="stable",version="3"}']


def test_v2_records_with_text_and_unknown_categories(hgb_bundle: Path, tmp_path: Path) -> None:
    log = tmp_path / "payload.jsonl"
    app = _app(hgb_bundle, "mixed", log)
    since = time.time()
    body = {"inputs": [
        {"name": "color", "shape": [3], "datatype": "BYTES", "data": ["blue", "teal", "red"]},
        {"name": "amount", "shape": [3, 1], "datatype": "FP64", "data": [[120.0], [None], [7.5]]},
        {"name": "count", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
        {"name": "flag", "shape": [3], "datatype": "BOOL", "data": [True, False, True]},
    ]}  # fmt: skip
    json_answer = _post(app, "/v2/models/mixed/infer", body, "v2-json")
    # The same values with BYTES and FP64 as binary tensor data (KServe's binary extension).
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"blue", b"teal", b"red"))
    amounts = np.array([120.0, np.nan, 7.5]).tobytes()
    head = orjson.dumps({"inputs": [
        {"name": "color", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(strings)}},
        {"name": "amount", "shape": [3], "datatype": "FP64", "parameters": {"binary_data_size": len(amounts)}},
        {"name": "count", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
        {"name": "flag", "shape": [3], "datatype": "BOOL", "data": [True, False, True]},
    ]})  # fmt: skip
    binary = _post(app, "/v2/models/mixed/infer", head + strings + amounts, "v2-binary",
                   **{"inference-header-content-length": str(len(head))})  # fmt: skip
    sent = [
        {"amount": 120.0, "count": 1, "flag": True, "color": "blue"},
        {"amount": None, "count": 2, "flag": False, "color": "teal"},
        {"amount": 7.5, "count": 3, "flag": True, "color": "red"},
    ]
    records = _records(log)
    for request_id, answer in (("v2-json", json_answer), ("v2-binary", binary)):
        _check(records[request_id], app, {
            "variant": "stable", "inputs": sent, "unknown": [[], ["color"], []], "outputs": _scores(answer, v2=True),
        }, since)  # fmt: skip
    assert _scores(json_answer, v2=True) == _scores(binary, v2=True)
    assert _unknown_count(app, "color") == 2.0


def test_v2_single_tensor_records_map_back_to_feature_names(xgb_bundle: Path, tmp_path: Path) -> None:
    log = tmp_path / "payload.jsonl"
    app = _app(xgb_bundle, "cancer", log)
    names = app.predictor.names
    since = time.time()
    rows = [[float(i + j) for j in range(len(names))] for i in range(2)]
    body = {"inputs": [{"name": "x", "shape": [2, len(names)], "datatype": "FP64", "data": rows}]}
    nested = _post(app, "/v2/models/cancer/infer", body, "nested")
    flat = {"inputs": [{"name": "x", "shape": [2, len(names)], "datatype": "FP64", "data": rows[0] + rows[1]}]}
    flat_answer = _post(app, "/v2/models/cancer/infer", flat, "flat")
    matrix = np.asarray(rows, dtype=np.float32) + np.float32(0.5)
    head = orjson.dumps({"inputs": [{"name": "x", "shape": [2, len(names)], "datatype": "FP32",
                                     "parameters": {"binary_data_size": matrix.nbytes}}]})  # fmt: skip
    binary = _post(app, "/v2/models/cancer/infer", head + matrix.tobytes(), "binary",
                   **{"inference-header-content-length": str(len(head))})  # fmt: skip
    records = _records(log)
    as_sent = [dict(zip(names, r, strict=True)) for r in rows]
    for request_id, answer in (("nested", nested), ("flat", flat_answer)):
        _check(records[request_id], app, {
            "variant": "stable", "inputs": as_sent, "unknown": [[], []], "outputs": _scores(answer, v2=True),
        }, since)  # fmt: skip
    _check(records["binary"], app, {
        "variant": "stable", "inputs": [dict(zip(names, r, strict=True)) for r in matrix.tolist()],
        "unknown": [[], []], "outputs": _scores(binary, v2=True),
    }, since)  # fmt: skip
    assert "hybridml_unknown_categories_total{" not in generate_latest(app.registry).decode()


def test_role_from_the_router_relabels_records_and_metrics(hgb_bundle: Path, tmp_path: Path) -> None:
    log = tmp_path / "payload.jsonl"
    app = InferenceApp("mixed", "3", BundlePredictor.load(hgb_bundle), variant="canary", payload_log=JsonLinesLog(log))
    row = {"instances": [[101.5, 3, True, "plum"]]}
    first = _post(app, "/v1/models/mixed:predict", row, "as-canary", "canary")
    assert dict(first.headers)["x-hybridml-variant"] == "canary"
    second = _post(app, "/v1/models/mixed:predict", row, "promoted", "stable")  # the router promoted this worker
    assert dict(second.headers)["x-hybridml-variant"] == "stable"
    third = _post(app, "/v1/models/mixed:predict", row, "own-role")  # no role sent: keeps the last one
    assert dict(third.headers)["x-hybridml-variant"] == "stable"
    records = _records(log)
    assert [records[i]["variant"] for i in ("as-canary", "promoted", "own-role")] == ["canary", "stable", "stable"]
    text = generate_latest(app.registry).decode()
    assert 'hybridml_requests_total{code="200",model="mixed",variant="canary",version="3"} 1.0' in text
    assert 'hybridml_requests_total{code="200",model="mixed",variant="stable",version="3"} 2.0' in text
    assert 'hybridml_prediction_score_count{model="mixed",variant="canary",version="3"} 1.0' in text
    assert 'hybridml_prediction_score_count{model="mixed",variant="stable",version="3"} 2.0' in text
    assert _unknown_count(app, "color", "canary") == 1.0
    assert _unknown_count(app, "color", "stable") == 2.0


# ----------------------------------------------------------------------------------------------------- rotation


def _writer(path: str, writer: int, count: int, max_bytes: int, keep: int) -> None:
    log = JsonLinesLog(path, max_bytes=max_bytes, keep=keep)
    for i in range(count):
        # Lines of varied length, some longer than a pipe buffer page, so a split write would show.
        log.write({"writer": writer, "i": i, "pad": "x" * ((i * 37 + writer * 11) % 300)})
    log.close()


def _run_writers(path: Path, writers: int, count: int, max_bytes: int, keep: int) -> None:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_writer, args=(str(path), w, count, max_bytes, keep)) for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0


def _lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for file in log_files(path):
        data = file.read_bytes()
        assert data.endswith(b"\n") or not data
        for line in data.splitlines():
            record = orjson.loads(line)  # a split or interleaved line would not parse
            assert set(record) == {"writer", "i", "pad"}
            records.append(record)
    return records


def test_rotation_by_several_processes_loses_and_splits_no_line(tmp_path: Path) -> None:
    path = tmp_path / "payload.jsonl"
    _run_writers(path, writers=4, count=400, max_bytes=8_000, keep=10_000)
    files = log_files(path)
    assert len(files) > 20  # it did rotate, many times
    records = _lines(path)
    assert sorted((r["writer"], r["i"]) for r in records) == [(w, i) for w in range(4) for i in range(400)]
    for file in files[:-1]:
        # Rotated only once full; over by at most one line per writer that raced past the check.
        assert 8_000 <= file.stat().st_size <= 8_000 + 4 * 400
    # Oldest file first: each writer's own records come out in the order it wrote them.
    for w in range(4):
        assert [r["i"] for r in records if r["writer"] == w] == list(range(400))


def test_rotation_keeps_at_most_keep_files(tmp_path: Path) -> None:
    path = tmp_path / "payload.jsonl"
    _run_writers(path, writers=3, count=400, max_bytes=4_000, keep=3)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != "payload.jsonl.lock")
    assert names == ["payload.jsonl", "payload.jsonl.1", "payload.jsonl.2", "payload.jsonl.3"]
    records = _lines(path)
    assert 0 < len(records) < 1200  # the oldest went
    assert sum(p.stat().st_size for p in log_files(path)) <= 4 * (4_000 + 3 * 400)
    # What is kept is the newest: of each writer, an unbroken run of its last records (the oldest files went).
    for w in range(3):
        kept = [r["i"] for r in records if r["writer"] == w]
        assert kept == list(range(400 - len(kept), 400))
    assert any(r["i"] == 399 for r in records)


def test_a_writer_that_missed_the_rotation_reopens_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "payload.jsonl"
    first = JsonLinesLog(path, max_bytes=100, keep=1)
    second = JsonLinesLog(path, max_bytes=100, keep=1)  # another process's descriptor, opened before rotation
    for i in range(5):
        first.write({"n": i, "pad": "y" * 30})
    assert [orjson.loads(x)["n"] for x in (tmp_path / "payload.jsonl.1").read_bytes().splitlines()] == [0, 1, 2]
    second.write({"n": "late"})  # its file was rotated away: the line goes to the live file, not payload.jsonl.1
    assert [orjson.loads(x)["n"] for x in path.read_bytes().splitlines()] == [3, 4, "late"]
    assert os.fstat(second._fd).st_ino == path.stat().st_ino


def test_keep_zero_drops_the_full_file_and_no_rotation_at_zero_bytes(tmp_path: Path) -> None:
    dropped = JsonLinesLog(tmp_path / "a.jsonl", max_bytes=50, keep=0)
    for i in range(10):
        dropped.write({"n": i, "pad": "z" * 20})
    assert log_files(tmp_path / "a.jsonl") == [tmp_path / "a.jsonl"]
    assert [r["n"] for r in read_records(tmp_path / "a.jsonl")] == [8, 9]
    unbounded = JsonLinesLog(tmp_path / "b.jsonl")  # max_bytes 0: never rotates
    for i in range(200):
        unbounded.write({"n": i})
    assert log_files(tmp_path / "b.jsonl") == [tmp_path / "b.jsonl"]
    with pytest.raises(Exception, match="max bytes must be 0"):
        JsonLinesLog(tmp_path / "c.jsonl", max_bytes=-1)
    with pytest.raises(Exception, match="keep must be 0 or more"):
        JsonLinesLog(tmp_path / "c.jsonl", keep=-1)


def test_read_records_oldest_file_first_and_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    for name, n in (("p.jsonl.2", 0), ("p.jsonl.10", -1), ("p.jsonl.1", 1), ("p.jsonl", 2), ("p.jsonl.x", 99)):
        (tmp_path / name).write_bytes(orjson.dumps({"n": n}) + b"\n")
    assert [r["n"] for r in read_records(path)] == [-1, 0, 1, 2]
    (tmp_path / "p.jsonl.1").write_bytes(b'{"n": 1}\n{"n": \n')
    with pytest.raises(Exception, match=r"p\.jsonl\.1:2: not a JSON line"):
        list(read_records(path))
