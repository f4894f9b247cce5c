"""The control listener of real server processes: TCP and Unix socket, refusals at start, the loopback notice, the
variant in payload records right after a promote, and predictions that never stall through promote and rollback."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hybridml.errors import ConflictError
from hybridml.serving.control import TOKEN_ENV, ControlClient
from hybridml.serving.payload_log import read_records
from hybridml.serving.predictor import BundlePredictor
from tests.integration.serving.conftest import free_port
from tests.integration.serving.test_traffic import Conn

pytestmark = pytest.mark.integration

NAME = "cancer"
MAX_LATENCY_S = 0.050


@pytest.fixture(scope="module")
def row(cancer: tuple[pd.DataFrame, str], xgb_bundle: Path) -> list[float]:
    frame, _ = cancer
    return [float(v) for v in frame[BundlePredictor.load(xgb_bundle).feature_names].iloc[7]]


def test_single_variant_control_over_tcp_and_unix_socket(
    xgb_bundle: Path, tmp_path: Path, launch: Callable[..., Any], row: list[float]
) -> None:
    control_port = free_port()
    tcp = launch(xgb_bundle, NAME, tmp_path / "tcp.log", "--model-version", "4", "--control-port", str(control_port),
                 "--feedback-log", str(tmp_path / "feedback.jsonl"))  # fmt: skip
    sock = tmp_path / "control.sock"
    unix = launch(xgb_bundle, NAME, tmp_path / "unix.log", "--model-version", "5", "--control-socket", str(sock))
    try:
        control = ControlClient(f"http://127.0.0.1:{control_port}")
        state = {"model": NAME, "canary_percent": 0, "variants": {"stable": {"version": "4", "pid": tcp.process.pid,
                                                                             "alive": True}}}  # fmt: skip
        assert control.state() == state
        with pytest.raises(ConflictError, match="there is no live canary to promote"):
            control.promote()
        with pytest.raises(ConflictError, match="there is no live canary to send traffic to"):
            control.traffic(5)
        assert control.traffic(0) == state
        assert control.feedback({"r-1": 1, "r-2": False}) == 2
        assert [line.count('"model":"cancer"') for line in (tmp_path / "feedback.jsonl").read_text().splitlines()] == [
            1,
            1,
        ]
        conn = Conn(tcp.endpoint)
        assert conn.request("POST", "/admin/promote")[0] == 404
        assert conn.request("GET", "/admin/traffic")[0] == 404
        assert conn.request("POST", "/feedback", {"request_id": "r-3", "label": 0})[0] == 200  # loopback caller
        assert conn.request("POST", f"/v1/models/{NAME}:predict", {"instances": [row]})[0] == 200
        # The control listener is on 127.0.0.1 only, and the control port serves no inference.
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.2", control_port))
        assert Conn(f"http://127.0.0.1:{control_port}").request("POST", f"/v1/models/{NAME}:predict", {})[0] == 404

        assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # only this user may drive the server
        assert ControlClient(f"unix://{sock}").state()["variants"]["stable"]["version"] == "5"
    finally:
        tcp.stop()
        unix.stop()
    assert not sock.exists()  # removed at shutdown


def _serve(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "hybridml.serving", "--model-dir", "/nonexistent", "--model-name", NAME, *flags]
    environment = {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | (env or {})
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment, check=False)


def test_refusals_at_start_are_one_line_and_exit_2(tmp_path: Path) -> None:
    port = str(free_port())
    result = _serve("--control-port", port, "--control-host", "0.0.0.0")
    assert result.returncode == 2
    assert result.stderr == (
        "error: refusing to listen for control on 0.0.0.0: off loopback the control listener needs a token"
        f" (--control-token-file or {TOKEN_ENV})\n"
    )
    assert _serve("--control-port", port, env={TOKEN_ENV: " "}).stderr == f"error: {TOKEN_ENV} is empty\n"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        result = _serve("--control-port", busy)
    assert (result.returncode, result.stderr) == (
        2,
        f"error: cannot listen on http://127.0.0.1:{busy}: Address already in use\n",
    )
    result = _serve("--control-port", port, "--control-socket", str(tmp_path / "s.sock"))
    assert (result.returncode, result.stderr) == (2, "error: give --control-port or --control-socket, not both\n")


def test_inference_open_beyond_loopback_without_token_keeps_control_local(
    xgb_bundle: Path, tmp_path: Path, launch: Callable[..., Any]
) -> None:
    control_port = free_port()
    log = tmp_path / "server.log"
    launched = launch(xgb_bundle, NAME, log, "--bind-host", "0.0.0.0", "--control-port", str(control_port),
                      "--feedback-log", str(tmp_path / "feedback.jsonl"))  # fmt: skip
    try:
        assert ControlClient(f"http://127.0.0.1:{control_port}").state()["canary_percent"] == 0
        notices = [line for line in log.read_text().splitlines() if "control stays on loopback" in line]
        assert len(notices) == 1
        assert "inference port 0.0.0.0:" in notices[0] and "no control token is set" in notices[0]
        assert f"control listener on http://127.0.0.1:{control_port}" in log.read_text()
    finally:
        launched.stop()


def test_promoted_worker_logs_stable_from_its_first_request_after_promote(
    xgb_bundle: Path, xgb_bundle_v2: Path, tmp_path: Path, launch: Callable[..., Any], row: list[float]
) -> None:
    payload = tmp_path / "payload.jsonl"
    control_port = free_port()
    launched = launch(xgb_bundle, NAME, tmp_path / "server.log", "--model-version", "1",
                      "--canary-dir", str(xgb_bundle_v2), "--canary-version", "2", "--canary-percent", "100",
                      "--control-port", str(control_port), "--payload-log", str(payload))  # fmt: skip
    try:
        conn = Conn(launched.endpoint)
        control = ControlClient(f"http://127.0.0.1:{control_port}")
        body = {"instances": [row]}
        assert conn.request("POST", f"/v1/models/{NAME}:predict", body, {"x-request-id": "before"})[0] == 200
        control.promote()
        status, headers, _ = conn.request("POST", f"/v1/models/{NAME}:predict", body, {"x-request-id": "after"})
        assert (status, headers["x-hybridml-variant"], headers["x-hybridml-version"]) == (200, "stable", "2")
        records = {r["request_id"]: r for r in read_records(payload)}
        assert (records["before"]["variant"], records["before"]["version"]) == ("canary", "2")
        assert (records["after"]["variant"], records["after"]["version"]) == ("stable", "2")
        conn.http.request("GET", "/metrics")
        text = conn.http.getresponse().read().decode()
        assert 'hybridml_requests_total{code="200",model="cancer",variant="stable",version="2"} 1.0' in text
        assert 'hybridml_requests_total{code="200",model="cancer",variant="canary",version="2"} 1.0' in text
    finally:
        launched.stop()


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_predictions_never_stall_through_promote_and_rollback(
    action: str, xgb_bundle: Path, xgb_bundle_v2: Path, tmp_path: Path, launch: Callable[..., Any], row: list[float]
) -> None:
    control_port = free_port()
    launched = launch(xgb_bundle, NAME, tmp_path / "server.log", "--model-version", "1",
                      "--canary-dir", str(xgb_bundle_v2), "--canary-version", "2", "--canary-percent", "50",
                      "--control-port", str(control_port))  # fmt: skip
    control = ControlClient(f"http://127.0.0.1:{control_port}")
    results: list[tuple[float, float, int, str]] = []  # (start, seconds, status, version)
    stop = threading.Event()

    def predict() -> None:
        conn = Conn(launched.endpoint)
        body = {"instances": [row]}
        while not stop.is_set():
            start = time.perf_counter()
            status, headers, _ = conn.request("POST", f"/v1/models/{NAME}:predict", body)
            results.append((start, time.perf_counter() - start, status, headers.get("x-hybridml-version", "")))

    try:
        old_pid = control.state()["variants"]["stable" if action == "promote" else "canary"]["pid"]
        thread = threading.Thread(target=predict)
        thread.start()
        time.sleep(0.5)
        began = time.perf_counter()
        state = control.promote() if action == "promote" else control.rollback()
        ended = time.perf_counter()
        time.sleep(0.2)
        stop.set()
        thread.join(timeout=10)
    finally:
        stop.set()
        launched.stop()
    expected_version = "2" if action == "promote" else "1"
    assert state["canary_percent"] == 0
    assert {v: s["version"] for v, s in state["variants"].items()} == {"stable": expected_version}
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)  # the old worker had exited when the control call returned
    # A stall of the event loop by the stop would hit the requests in flight while the control call ran (the
    # call returns once the old worker has exited); later ones only measure how busy the machine is.
    during = [r for r in results if r[0] <= ended and r[0] + r[1] >= began]
    slowest = max(seconds for _, seconds, _, _ in during) if during else 0.0
    print(f"{action}: {len(results)} requests, {len(during)} while the old worker stopped ({ended - began:.3f}s);"
          f" slowest then {slowest * 1000:.1f} ms, overall {max(r[1] for r in results) * 1000:.1f} ms")  # fmt: skip
    assert {status for _, _, status, _ in results} == {200}
    slow = [(round(s - began, 3), round(d, 3)) for s, d, _, _ in during if d >= MAX_LATENCY_S]
    assert not slow, f"requests slower than {MAX_LATENCY_S}s during the {action} (start, seconds): {slow}"
    assert len(during) >= 5, "too few predictions overlapped the control call to show anything"
    assert {version for start, _, _, version in results if start < began} == {"1", "2"}
    assert {version for start, _, _, version in results if start > ended} == {expected_version}
