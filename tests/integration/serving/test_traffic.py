"""Router with stable, canary and shadow worker processes: split, stickiness, shadow isolation, kill -9, admin."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hybridml.errors import ConflictError
from hybridml.serving.control import ControlClient
from hybridml.serving.predictor import BundlePredictor

NAME = "cancer"


class Conn:
    """A keep-alive HTTP/1.1 connection: fast enough for 10,000 requests in a test."""

    def __init__(self, endpoint: str) -> None:
        host, port = endpoint.removeprefix("http://").split(":")
        self.http = http.client.HTTPConnection(host, int(port), timeout=10)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else None
        self.http.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
        response = self.http.getresponse()
        raw = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def row(cancer: tuple[pd.DataFrame, str], xgb_bundle: Path) -> list[float]:
    frame, _ = cancer
    return [float(v) for v in frame[BundlePredictor.load(xgb_bundle).feature_names].iloc[3]]


@pytest.fixture(scope="module")
def routed(
    xgb_bundle: Path, xgb_bundle_v2: Path, tmp_path_factory: pytest.TempPathFactory, launch: Callable[..., Any]
) -> Iterator[tuple[str, Path, ControlClient]]:
    directory = tmp_path_factory.mktemp("router")
    log = directory / "server.log"
    control_socket = directory / "control.sock"
    launched = launch(
        xgb_bundle, NAME, log, "--model-version", "1", "--canary-dir", str(xgb_bundle_v2), "--canary-version", "2",
        "--canary-percent", "10", "--shadow-dir", str(xgb_bundle_v2), "--shadow-version", "3", "--split-seed", "1",
        "--payload-log", str(directory / "payload.jsonl"), "--feedback-log", str(directory / "feedback.jsonl"),
        "--control-socket", str(control_socket),
    )  # fmt: skip
    print(f"router ready after {launched.ready_after_s:.2f}s")
    try:
        yield launched.endpoint, directory, ControlClient(f"unix://{control_socket}")
    finally:
        launched.stop()


def test_split_sticky_shadow_and_feedback(
    routed: tuple[str, Path, ControlClient], row: list[float], xgb_bundle: Path, xgb_bundle_v2: Path
) -> None:
    endpoint, directory, control = routed
    conn = Conn(endpoint)
    expected = {
        "1": BundlePredictor.load(xgb_bundle).predict([row])[0],
        "2": BundlePredictor.load(xgb_bundle_v2).predict([row])[0],
    }
    counts = {"stable": 0, "canary": 0}
    n = 10_000
    deadline = time.monotonic() + 90
    for i in range(n):
        assert time.monotonic() < deadline, f"only {i} requests in 90 s"
        status, headers, body = conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]})
        assert status == 200, body
        counts[headers["x-hybridml-variant"]] += 1
        # The shadow (version 3) never answers; every answer is the model its headers name.
        assert headers["x-hybridml-version"] in ("1", "2")
        assert abs(body["predictions"][0] - expected[headers["x-hybridml-version"]]) < 1e-6
    share = counts["canary"] / n * 100
    print(f"canary share {share:.2f}% over {n} requests")
    assert 8 <= share <= 12

    # Sticky: the same key always gets the same variant.
    for key in ("user-1", "user-2", "user-42"):
        seen = {
            conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]}, {"x-hybridml-key": key})[1][
                "x-hybridml-variant"
            ]
            for _ in range(20)
        }
        assert len(seen) == 1

    status, headers, _ = conn.request(
        "POST", f"/v1/models/{NAME}:predict", {"instances": [row]}, {"x-request-id": "req-1"}
    )
    assert (status, headers["x-request-id"]) == (200, "req-1")
    # Feedback: on the inference port from loopback, and on the control listener.
    assert conn.request("POST", "/feedback", {"request_id": "req-1", "label": 1})[0] == 200
    assert conn.request("POST", "/feedback", {"request_id": "req-1", "label": "maybe"})[0] == 400
    assert control.feedback({"req-1": 0}) == 1
    feedback = [json.loads(line) for line in (directory / "feedback.jsonl").read_text().splitlines()]
    assert [(f["request_id"], f["label"]) for f in feedback[-2:]] == [("req-1", 1), ("req-1", 0)]
    time.sleep(0.3)  # let the shadow copies land
    lines = [json.loads(line) for line in (directory / "payload.jsonl").read_text().splitlines()]
    req1 = {entry["variant"] for entry in lines if entry["request_id"] == "req-1"}
    assert req1 in ({"stable", "shadow"}, {"canary", "shadow"})

    metrics = conn.http
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    assert 'hybridml_router_requests_total{code="200",model="cancer",variant="canary",version="2"}' in text
    assert 'hybridml_requests_total{code="200",model="cancer",variant="shadow",version="3"}' in text
    assert "hybridml_request_stage_seconds_bucket" in text and "hybridml_input_bin_total" in text


def test_shadow_failure_never_reaches_caller_and_kill9_canary_falls_back(
    routed: tuple[str, Path, ControlClient], row: list[float]
) -> None:
    endpoint, _, control = routed
    conn = Conn(endpoint)
    state = control.state()
    assert state["variants"]["canary"]["alive"] and state["canary_percent"] == 10

    os.kill(state["variants"]["shadow"]["pid"], signal.SIGKILL)  # the challenger crashes
    for _ in range(50):
        assert conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]})[0] == 200

    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        mine = Conn(endpoint)
        while not stop.is_set() and len(results) < 20_000:
            results.append(mine.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]})[0])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    os.kill(state["variants"]["canary"]["pid"], signal.SIGKILL)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    failed = [s for s in results if s != 200]
    print(f"{len(results)} requests under load, {len(failed)} failed")
    assert len(failed) <= 4  # at most the requests in flight (4 clients)
    after = control.state()
    assert after["canary_percent"] == 0 and not after["variants"]["canary"]["alive"]
    for _ in range(20):
        status, headers, _ = conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]})
        assert (status, headers["x-hybridml-variant"]) == (200, "stable")
    with pytest.raises(ConflictError, match="no live canary"):
        control.traffic(5)


def test_log_records_the_fallback(routed: tuple[str, Path, ControlClient]) -> None:
    _, directory, _ = routed
    time.sleep(0.3)
    assert "died; traffic falls back to stable" in (directory / "server.log").read_text()
