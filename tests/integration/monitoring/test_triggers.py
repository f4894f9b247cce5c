"""Triggers against real things on 127.0.0.1: HTTP posts to the webhook, a moto S3 server, and a real `hybridml run`."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridml.monitoring.triggers import RunOutcome, RunRequest, Trigger, TriggerConfig, TriggerStore
from hybridml.monitoring.triggers_launch import LocalRunLauncher
from hybridml.monitoring.triggers_sources import FolderSource, S3Source
from hybridml.monitoring.triggers_webhook import WebhookServer

HYBRIDML = Path(sys.executable).with_name("hybridml")


class RecordingLauncher:
    def __init__(self) -> None:
        self.requests: list[RunRequest] = []

    def start(self, request: RunRequest) -> dict[str, Any]:
        self.requests.append(request)
        return {}

    def poll(self, run: dict[str, Any]) -> RunOutcome | None:
        return None


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYBRIDML_"))}
    return {**env, "HYBRIDML_DAEMON": "0", **extra}


# ------------------------------------------------------------------------------------------------------ webhook


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebhookServer, RecordingLauncher]]:
    launcher = RecordingLauncher()
    store = TriggerStore(tmp_path_factory.mktemp("webhook") / "triggers")
    trigger = Trigger(TriggerConfig("churn", "/data/churn.csv", debounce_s=0.0, max_wait_s=0.0), store, launcher)
    server = WebhookServer(trigger, "127.0.0.1", 0).start()
    yield server, launcher
    server.stop()


def _post(server: WebhookServer, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _alertmanager_body(status: str, fingerprint: str, model: str = "churn") -> bytes:
    alert = {
        "status": status,
        "labels": {"alertname": "HybridmlDriftDetected", "model": model, "version": "1", "severity": "warning"},
        "annotations": {},
        "startsAt": "2027-01-15T08:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": fingerprint,
    }
    group = {"version": "4", "status": status, "receiver": "hybridml", "groupLabels": {}, "commonLabels": {}}
    return json.dumps({**group, "alerts": [alert]}).encode()


def test_webhook_over_http_starts_one_run_per_firing_alert_and_survives_bad_bodies(
    receiver: tuple[WebhookServer, RecordingLauncher],
) -> None:
    server, launcher = receiver
    assert server.url == f"http://127.0.0.1:{server.port}/alertmanager"
    status, reply = _post(server, "/alertmanager", b"{broken")
    assert status == 400
    assert reply["error"].startswith("body is not JSON")
    status, reply = _post(server, "/alertmanager", json.dumps({"version": "3", "alerts": []}).encode())
    assert (status, reply) == (400, {"error": "unsupported Alertmanager webhook version '3' (expected '4')"})
    status, reply = _post(server, "/alertmanager", _alertmanager_body("resolved", "aa01"))
    assert status == 200
    assert [d["decision"] for d in reply["decisions"]] == ["ignored"]
    status, reply = _post(server, "/alertmanager", _alertmanager_body("firing", "aa01"))
    assert (status, [d["decision"] for d in reply["decisions"]]) == (200, ["debounced"])
    status, reply = _post(server, "/alertmanager", _alertmanager_body("firing", "aa01"))
    assert (status, [d["decision"] for d in reply["decisions"]]) == (200, ["duplicate"])
    server.trigger.tick()
    assert [(r.model, r.data_uri) for r in launcher.requests] == [("churn", "/data/churn.csv")]
    status, reply = _post(server, "/other", b"{}")
    assert status == 404
    status, reply = _post(server, "/alertmanager", b"x" * 10, {"Content-Length": str(2 * 1024 * 1024)})
    assert (status, reply) == (413, {"error": "body over 1048576 bytes"})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/healthz")
    assert (connection.getresponse().status, connection.close()) == (200, None)


# ----------------------------------------------------------------------------------------------------------- S3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[Any]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    patch = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patch.setenv(key, value)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="lake")
    yield client
    patch.undo()
    server.stop()


def test_s3_prefix_on_a_moto_server_starts_one_run_for_a_burst(moto_s3: Any, tmp_path: Path) -> None:
    moto_s3.put_object(Bucket="lake", Key="in/old.csv", Body=b"a,b\n1,2\n")
    launcher = RecordingLauncher()
    trigger = Trigger(
        TriggerConfig("churn", debounce_s=0.0, max_wait_s=0.0), TriggerStore(tmp_path / "triggers"), launcher
    )
    source = S3Source("s3://lake/in/")  # boto3's own client, pointed at moto by AWS_ENDPOINT_URL
    source.poll(trigger)
    moto_s3.put_object(Bucket="lake", Key="in/day1.csv", Body=b"a,b\n1,2\n")
    moto_s3.put_object(Bucket="lake", Key="in/day2.parquet", Body=b"PAR1")
    moto_s3.put_object(Bucket="lake", Key="in/readme.txt", Body=b"x")
    moto_s3.put_object(Bucket="lake", Key="other/day3.csv", Body=b"a\n1\n")
    source.poll(trigger)
    moto_s3.put_object(Bucket="lake", Key="in/day1.csv", Body=b"a,b\n1,2\n")  # same content: same ETag
    source.poll(trigger)
    trigger.tick()
    decisions = [(d["decision"], (d["event"] or {}).get("data_uri")) for d in trigger.store.recent(10)]
    assert decisions == [
        ("ignored", None),
        ("debounced", "s3://lake/in/day1.csv"),
        ("debounced", "s3://lake/in/day2.parquet"),
        ("started", None),
    ]
    assert len(launcher.requests) == 1
    moto_s3.put_object(Bucket="lake", Key="in/day1.csv", Body=b"a,b\n3,4\n")  # new content under the same key
    source.poll(trigger)
    assert trigger.store.recent(1)[0]["decision"] == "queued"


# ------------------------------------------------------------------------------------------- folder + real run


def test_a_burst_of_files_in_a_watched_folder_registers_exactly_one_version(tmp_path: Path) -> None:
    from hybridml.core.data import builtin_breast_cancer

    home, inbox = tmp_path / "home", tmp_path / "inbox"
    inbox.mkdir()
    store = TriggerStore(home / "triggers")
    launcher = LocalRunLauncher(
        home,
        store.root / "runs",
        run_args=["--target", "target", "--params", '{"n_estimators": 5, "max_depth": 2}', "--threshold", "0.5",
                  "--no-auto-approve"],
        executable=str(HYBRIDML),
        env=_clean_env(),
    )  # fmt: skip
    from hybridml.cli_trigger import record_run
    from hybridml.registry import Registry

    registry = Registry(f"sqlite:///{home / 'mlflow.db'}", user="trigger")
    config = TriggerConfig("trig-model", debounce_s=0.0, max_wait_s=0.0)
    trigger = Trigger(config, store, launcher, on_run_end=lambda run: record_run(registry, run))
    source = FolderSource(inbox, settle_s=0.0)
    source.poll(trigger)  # baseline: empty
    frame, _ = builtin_breast_cancer()
    frame.iloc[:250].to_csv(inbox / "day1.csv", index=False)
    frame.iloc[250:].to_parquet(inbox / "day2.parquet", index=False)
    source.poll(trigger)  # seen once
    source.poll(trigger)  # unchanged: both taken, in one debounce window
    trigger.tick()
    (run,) = trigger.snapshot()["runs"]
    assert run["data_uri"] == str(inbox / "day2.parquet")
    deadline = time.monotonic() + 240
    while trigger.snapshot()["runs"][0]["status"] == "running" and time.monotonic() < deadline:
        source.poll(trigger)
        trigger.tick()
        time.sleep(0.5)
    (run,) = trigger.snapshot()["runs"]
    assert run["status"] == "succeeded", run["detail"]
    assert run["version"] == 1
    assert run["detail"].startswith("registered trig-model version 1 (PendingManualApproval, ROC AUC ")
    assert run["detail"].endswith("; not deployed")
    assert [v.version for v in registry.list_versions("trig-model")] == [1]
    (event,) = [e for e in registry.history("trig-model", 1) if e.action == "monitor"]
    assert (event.actor, event.detail) == ("trigger", f"retrained by trigger run {run['run_id']} (2 event(s))")
    assert json.loads(event.reason) == {
        "run_id": run["run_id"],
        "data_uri": str(inbox / "day2.parquet"),
        "traffic_percent": 10,
        "event_count": 2,
        "events": run["events"],
    }
    status = subprocess.run(
        [str(HYBRIDML), "--home", str(home), "trigger", "status", "--json"],
        capture_output=True, text=True, env=_clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert [d["decision"] for d in report["decisions"]] == ["ignored", "debounced", "debounced", "started", "finished"]
    assert [(r["run_id"], r["status"], r["version"]) for r in report["runs"]] == [(run["run_id"], "succeeded", 1)]


def test_serve_stops_cleanly_on_sigterm_and_refuses_bad_flags(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    base = [str(HYBRIDML), "--home", str(tmp_path / "home"), "trigger", "serve", "--model", "churn"]
    refused = subprocess.run(base, capture_output=True, text=True, env=_clean_env(), timeout=60, check=False)
    assert refused.returncode == 2
    assert "give at least one of --watch, --s3, --webhook-port and --every" in refused.stderr
    refused = subprocess.run(
        [*base, "--every", "1h"], capture_output=True, text=True, env=_clean_env(), timeout=60, check=False
    )
    assert refused.returncode == 2
    assert "--every and --webhook-port need --data" in refused.stderr
    process = subprocess.Popen(
        [*base, "--watch", str(inbox), "--webhook-port", "0", "--data", str(inbox / "x.csv"), "--poll-s", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    try:
        state = tmp_path / "home" / "triggers" / "state.json"
        deadline = time.monotonic() + 60
        while not state.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the folder's baseline is written at its first poll
        assert state.is_file()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out == ""  # progress goes to stderr
    assert f"trigger for churn: folder:{inbox}, http://127.0.0.1:" in err
    assert err.rstrip().endswith("trigger stopped")
