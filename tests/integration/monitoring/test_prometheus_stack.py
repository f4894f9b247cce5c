"""Prometheus and Alertmanager from Debian against a real model server: the dashboard's queries return data, and
the shipped alert rules fire on injected faults and reach the retraining trigger's webhook through Alertmanager.

Started on 127.0.0.1 by the module: the model server (stable + canary behind its router, with payload and
feedback logs), the watch job (``hybridml.monitoring.exporter.DriftExporter``, as ``hybridml monitor watch`` runs
it, in a thread), the trigger's Alertmanager webhook (``hybridml.monitoring.triggers_webhook``), Alertmanager and
Prometheus. Prometheus scrapes and evaluates every second and loads the shipped rules with every alert's ``for``
set to 1s (the only change, made by ``rule_file(for_override=...)``; the rate windows are the shipped ones).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from hybridml.core.data import encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, positive_scores, read_bundle, save_bundle
from hybridml.core.profile import build_profile
from hybridml.monitoring.dashboards.build import queries
from hybridml.monitoring.exporter import DriftExporter, serve_metrics
from hybridml.monitoring.prometheus import dump_rule_file, load_resource, rule_file
from hybridml.monitoring.triggers import RunOutcome, RunRequest, Trigger, TriggerConfig, TriggerStore
from hybridml.monitoring.triggers_webhook import WebhookServer
from hybridml.serving.client import is_ready
from hybridml.serving.control import ControlClient
from hybridml.serving.router import bucket

pytestmark = pytest.mark.integration

NAME = "churn"
PROMETHEUS = shutil.which("prometheus") or ""
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or ""
if not PROMETHEUS or not ALERTMANAGER:
    pytest.skip(
        "prometheus and prometheus-alertmanager are not installed (CI installs them: .ci/run)", allow_module_level=True
    )

# Loaded into the model server's processes only (PYTHONPATH), acting in the canary worker: while the file
# HYBRIDML_TEST_FAULT_DIR/error exists its scoring raises, so the canary answers 500 (a faulty canary, as the issue
# asks); while HYBRIDML_TEST_FAULT_DIR/slow exists each scoring takes 150 ms more.
FAULT_HOOK = """
import os, sys, time
_faults = os.environ.get("HYBRIDML_TEST_FAULT_DIR")
if _faults and "--variant" in sys.argv and sys.argv[sys.argv.index("--variant") + 1] == "canary":
    from hybridml.serving import predictor as _predictor

    _scores = _predictor.BundlePredictor.scores

    def scores(self, matrix):
        if os.path.exists(os.path.join(_faults, "error")):
            raise RuntimeError("injected canary fault")
        if os.path.exists(os.path.join(_faults, "slow")):
            time.sleep(0.15)
        return _scores(self, matrix)

    _predictor.BundlePredictor.scores = scores
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 60.0, logs: tuple[Path, ...] = ()) -> Any:
    """Poll ``check`` until it returns something truthy; after ``timeout_s``, fail naming ``what`` and the logs."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    tails = "\n".join(f"--- {log}:\n{log.read_text()[-2000:]}" for log in logs if log.exists())
    pytest.fail(f"{what}: not after {timeout_s:g}s (last: {last!r})\n{tails}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@dataclass
class Stack:
    """The running services and what the test drives them with."""

    directory: Path
    server: subprocess.Popen[bytes]
    endpoint: str
    control: ControlClient
    faults: Path
    prometheus: str
    alertmanager: str
    exporter: DriftExporter
    trigger: Trigger
    launcher: RecordingLauncher
    rows: list[dict[str, Any]]
    labels: list[str]
    server_target: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Result of an instant query (vector results), through Prometheus's HTTP API."""
        answer = get_json(f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def firing(self, alertname: str) -> list[dict[str, str]]:
        """Labels of the firing alerts named ``alertname`` (Prometheus's view)."""
        alerts = get_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [a["labels"] for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]

    def predict(
        self, rows: list[dict[str, Any]], *, scrapes: int = 1, key: str | None = None, ids: list[str] | None = None
    ) -> list[int]:
        """Send each row as one V1 request, spread over ``scrapes`` scrape intervals; returns the status codes.

        ``key`` pins the variant (the router's sticky key); ``ids`` are the requests' ids (for feedback).

        A counter series born during a burst (the first 500 of a canary) enters Prometheus at its burst's count,
        and ``rate()`` counts only what it gains after its first scrape: faults are sent over several scrapes.
        """
        host, port = self.endpoint.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        codes = []
        chunk = -(-len(rows) // scrapes)
        for i, row in enumerate(rows):
            if i and i % chunk == 0:
                time.sleep(1.2)  # one scrape interval and a little more
            body = json.dumps({"instances": [row]}).encode()
            headers = {"content-type": "application/json"}
            if key is not None:
                headers["x-hybridml-key"] = key
            if ids is not None:
                headers["x-request-id"] = ids[i]
            conn.request("POST", f"/v1/models/{NAME}:predict", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            codes.append(response.status)
        conn.close()
        return codes

    def feedback(self, labels: dict[str, str]) -> None:
        """Post true labels by request id to the server's /feedback (loopback callers need no token)."""
        items = [{"request_id": request_id, "label": label} for request_id, label in labels.items()]
        request = urllib.request.Request(
            f"{self.endpoint}/feedback",
            data=json.dumps({"items": items}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"accepted": len(items)}


class RecordingLauncher:
    """A launcher that records the retraining runs the trigger starts (a real run is the trigger tests' concern)."""

    def __init__(self) -> None:
        self.started: list[RunRequest] = []

    def start(self, request: RunRequest) -> dict[str, Any]:
        self.started.append(request)
        return {"id": f"run-{len(self.started)}"}

    def poll(self, run: dict[str, Any]) -> RunOutcome | None:
        return None


def _train(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 300
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 60, n).astype(float),
            "charges": rng.normal(70, 20, n).round(2),
            "plan": rng.choice(["basic", "plus", "pro"], n),
        }
    )
    frame["churned"] = np.where(frame["tenure"] + (frame["plan"] == "basic") * 20 < 30, "yes", "no")
    return frame


def _bundle(directory: Path, frame: pd.DataFrame, n_estimators: int) -> Path:
    schema = infer_schema(frame, "churned")
    params = {"n_estimators": n_estimators}
    features = encode_features(frame, schema)
    model = fit("xgboost", params, features, encode_labels(frame, schema))
    profile = build_profile(frame, schema, positive_scores(model, features))
    save_bundle(model, "xgboost", params, schema, directory, profile=profile)
    return directory


def sticky_key(variant: str) -> str:
    """A sticky key the router sends to ``variant`` at a 50 % canary share."""
    keys = (f"key-{i}" for i in range(1000))
    return next(k for k in keys if (bucket(k) < 5000) == (variant == "canary"))


def _start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("prometheus-stack")
    stable = _bundle(directory / "stable", _train(3), 20)
    canary = _bundle(directory / "canary", _train(4), 5)
    traffic = _train(5)  # rows neither model was trained on, from the reference distribution
    features = traffic.drop(columns="churned")
    rows = [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()} for r in features.to_dict("records")
    ]
    processes: list[subprocess.Popen[bytes]] = []
    webhook: WebhookServer | None = None
    metrics_server = None
    stop_watch = threading.Event()
    watch: threading.Thread | None = None
    try:
        # The model server: stable (version 1) and canary (version 2, half the traffic) behind the router.
        hook = directory / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(FAULT_HOOK)
        faults = directory / "faults"
        faults.mkdir()
        env = {**os.environ, "PYTHONPATH": str(hook), "HYBRIDML_TEST_FAULT_DIR": str(faults)}
        port = free_port()
        control_socket = directory / "control.sock"
        server = _start(
            [sys.executable, "-m", "hybridml.serving", "--model-dir", str(stable), "--model-name", NAME,
             "--model-version", "1", "--canary-dir", str(canary), "--canary-version", "2", "--canary-percent", "50",
             "--split-seed", "1", "--bind-port", str(port), "--control-socket", str(control_socket),
             "--payload-log", str(directory / "payload.jsonl"), "--feedback-log", str(directory / "feedback.jsonl")],
            directory / "server.log", env,
        )  # fmt: skip
        processes.append(server)
        endpoint = f"http://127.0.0.1:{port}"

        # The watch job of the stable version: drift over its last 100 rows, online AUC of both variants.
        bundle = read_bundle(stable)
        assert bundle.profile is not None
        exporter = DriftExporter(
            profile=bundle.profile, schema=bundle.schema, model=NAME, version="1",
            payload_log=directory / "payload.jsonl", feedback_log=directory / "feedback.jsonl", window=100,
            interval_s=0.5,
        )  # fmt: skip
        exporter_port = free_port()
        metrics_server = serve_metrics(exporter.registry, exporter_port)
        watch = threading.Thread(target=exporter.run, args=(stop_watch,), kwargs={"poll_s": 0.1}, daemon=True)
        watch.start()

        # The retraining trigger's webhook, as `hybridml trigger` runs it.
        launcher = RecordingLauncher()
        config = TriggerConfig(NAME, str(directory / "data.csv"), debounce_s=0.0, max_wait_s=0.0)
        trigger = Trigger(config, TriggerStore(directory / "trigger"), launcher)
        webhook = WebhookServer(trigger).start()

        am_port = free_port()
        (directory / "alertmanager.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "hybridml-trigger",
                        "group_by": ["alertname", "model"],
                        "group_wait": "1s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [{"name": "hybridml-trigger", "webhook_configs": [{"url": webhook.url}]}],
                }
            )
        )
        processes.append(
            _start(
                [
                    ALERTMANAGER,
                    f"--config.file={directory / 'alertmanager.yml'}",
                    f"--storage.path={directory / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                directory / "alertmanager.log",
            )
        )

        rules = rule_file(load_resource(), for_override="1s")
        (directory / "rules.yml").write_text(dump_rule_file(rules))
        prometheus_port = free_port()
        server_target = f"127.0.0.1:{port}"
        (directory / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
                    "rule_files": [str(directory / "rules.yml")],
                    "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                    "scrape_configs": [
                        {"job_name": "hybridml", "static_configs": [{"targets": [server_target]}]},
                        {"job_name": "hybridml-watch", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
                    ],
                }
            )
        )
        processes.append(
            _start(
                [
                    PROMETHEUS,
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                directory / "prometheus.log",
            )
        )
        logs = tuple(directory / f"{n}.log" for n in ("server", "prometheus", "alertmanager"))
        wait_for(lambda: is_ready(endpoint, NAME, timeout_s=0.5), "model server ready", logs=logs)
        stack = Stack(
            directory, server, endpoint, ControlClient(f"unix://{control_socket}"), faults,
            f"http://127.0.0.1:{prometheus_port}", f"http://127.0.0.1:{am_port}", exporter, trigger, launcher, rows,
            [str(label) for label in traffic["churned"]], server_target,
        )  # fmt: skip

        def ready() -> bool:
            try:
                get_json(f"{stack.alertmanager}/api/v2/status")
                targets = get_json(f"{stack.prometheus}/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return False
            return len(targets) == 2 and all(t["health"] == "up" for t in targets)

        wait_for(ready, "Prometheus scraping both targets and Alertmanager up", logs=logs)
        yield stack
    finally:
        if webhook is not None:
            webhook.stop()
        stop_watch.set()
        if watch is not None:
            watch.join(timeout=5)
        if metrics_server is not None:
            metrics_server.shutdown()
        for process in reversed(processes):
            _stop(process)


def test_every_dashboard_query_returns_data_and_nothing_fires_on_healthy_traffic(stack: Stack) -> None:
    # Before any request the server has scored nothing: HybridmlNoTraffic (its `for` is 1s here, 15m shipped).
    idle = wait_for(lambda: stack.firing("HybridmlNoTraffic"), "HybridmlNoTraffic before any traffic")
    assert [(a["model"], a["severity"]) for a in idle] == [(NAME, "warning")]
    ids = [f"healthy-{i}" for i in range(150)]
    assert stack.predict(stack.rows[:150], ids=ids) == [200] * 150
    stack.feedback(dict(zip(ids, stack.labels[:150], strict=True)))
    # Unknown categories (scored as missing, counted) go to the canary by sticky key: the stable version's drift
    # window holds reference-like rows only.
    unknown = [dict(row, plan="enterprise") for row in stack.rows[150:165]]
    assert stack.predict(unknown, key=sticky_key("canary")) == [200] * 15
    # The expressions exactly as Grafana sends them for model "churn" (rate interval resolved to 1m).
    exprs = [e.replace("$model", NAME).replace("$__rate_interval", "1m") for e in queries()]

    def empty() -> list[str]:
        return [expr for expr in exprs if not stack.query(expr)]

    wait_for(lambda: not empty(), "every dashboard query returning data", logs=(stack.directory / "prometheus.log",))
    assert empty() == []
    # Both variants served (the canary/stable panels compare something) and the unknown category was counted.
    variants = {r["metric"]["variant"] for r in stack.query(f'hybridml:requests:rate5m{{model="{NAME}"}}')}
    assert variants == {"stable", "canary"}
    unknown = stack.query(f'hybridml_unknown_categories_total{{model="{NAME}"}}')
    assert [(r["metric"]["variant"], r["metric"]["feature"], float(r["value"][1])) for r in unknown] == [
        ("canary", "plan", 15.0)
    ]
    # The watch job joined the feedback labels: an online AUC per variant; and it found no drift.
    aucs = stack.query(f'hybridml_online_roc_auc{{model="{NAME}"}}')
    assert {(r["metric"]["version"], r["metric"]["variant"]) for r in aucs} == {("1", "stable"), ("2", "canary")}
    assert stack.exporter.last_result is not None and stack.exporter.last_result.drift is False
    assert [float(r["value"][1]) for r in stack.query(f'hybridml_drift_detected{{model="{NAME}"}}')] == [0.0]

    # Healthy traffic and healthy gauges: no alert is pending or firing (HybridmlNoTraffic resolved).
    def alerts() -> list[str]:
        return [a["labels"]["alertname"] for a in get_json(f"{stack.prometheus}/api/v1/alerts")["data"]["alerts"]]

    wait_for(lambda: alerts() == [], "no alert after healthy traffic", timeout_s=10)


def test_faulty_canary_fires_error_rate_and_canary_worse_than_stable(stack: Stack) -> None:
    (stack.faults / "error").touch()
    try:
        codes = stack.predict(stack.rows[150:300], scrapes=4)
    finally:
        (stack.faults / "error").unlink()
    # The split is seeded: both variants answered, the canary's answers are all 500 (5xx, a server fault).
    assert set(codes) == {200, 500} and codes.count(500) > 30
    logs = (stack.directory / "prometheus.log",)
    errors = wait_for(lambda: stack.firing("HybridmlHighErrorRate"), "HybridmlHighErrorRate firing", logs=logs)
    assert [(a["model"], a["version"], a["variant"], a["severity"]) for a in errors] == [
        (NAME, "2", "canary", "critical")
    ]
    worse = wait_for(lambda: stack.firing("HybridmlCanaryWorseThanStable"), "HybridmlCanaryWorseThanStable", logs=logs)
    assert [(a["model"], a["version"], a["signal"]) for a in worse] == [(NAME, "2", "errors")]
    assert stack.firing("HybridmlModelDown") == [] and stack.firing("HybridmlDriftDetected") == []


def test_slow_canary_fires_latency_p99_and_canary_worse_than_stable(stack: Stack) -> None:
    (stack.faults / "slow").touch()
    try:
        codes = stack.predict(stack.rows[:20], scrapes=2, key=sticky_key("canary"))
    finally:
        (stack.faults / "slow").unlink()
    assert codes == [200] * 20
    # 20 of the canary's ~100 requests in the window took over 150 ms: its p99 is above 100 ms, stable's is not.
    logs = (stack.directory / "prometheus.log",)
    slow = wait_for(lambda: stack.firing("HybridmlHighLatencyP99"), "HybridmlHighLatencyP99 firing", logs=logs)
    assert [(a["model"], a["version"], a["variant"], a["severity"]) for a in slow] == [(NAME, "2", "canary", "warning")]
    worse = wait_for(
        lambda: {a["signal"] for a in stack.firing("HybridmlCanaryWorseThanStable")} >= {"latency"},
        "HybridmlCanaryWorseThanStable on latency",
        logs=logs,
    )
    assert worse


def test_drift_alert_reaches_the_trigger_webhook_through_alertmanager(stack: Stack) -> None:
    assert stack.launcher.started == []
    # Shifted traffic to the stable version: tenure moves by 100 months, the other features stay as they were.
    shifted = [dict(row, tenure=row["tenure"] + 100) for row in stack.rows[165:285]]
    assert stack.predict(shifted, key=sticky_key("stable")) == [200] * len(shifted)
    logs = tuple(stack.directory / f"{n}.log" for n in ("prometheus", "alertmanager"))
    fired = wait_for(lambda: stack.firing("HybridmlDriftDetected"), "HybridmlDriftDetected firing", logs=logs)
    assert [(a["model"], a["version"]) for a in fired] == [(NAME, "1")]
    drifted = stack.query(f'hybridml_drift_feature_drifted{{model="{NAME}"}} == 1')
    assert [r["metric"]["feature"] for r in drifted] == ["tenure"]

    def received() -> list[dict[str, Any]]:
        decisions = stack.trigger.store.recent(50)
        return [d for d in decisions if "HybridmlDriftDetected firing" in json.dumps(d)]

    decisions = wait_for(received, "the drift alert at the trigger's webhook", logs=logs)
    assert decisions[0]["decision"] == "debounced", decisions
    assert decisions[0]["event"]["model"] == NAME and f"model={NAME} version=1" in decisions[0]["event"]["detail"]
    assert all(d["decision"] == "duplicate" for d in decisions[1:]), decisions  # a re-send starts nothing new
    # Alertmanager sent the description the rule renders: it names the drifted feature only.
    sent = get_json(f"{stack.alertmanager}/api/v2/alerts?filter=alertname%3D%22HybridmlDriftDetected%22")
    assert [a["annotations"]["description"] for a in sent] == [
        f"The inputs of model {NAME} version 1 no longer match its reference profile. Drifted features: tenure."
    ]
    stack.trigger.tick()
    assert [request.model for request in stack.launcher.started] == [NAME]


def test_model_down_when_the_stable_worker_dies_and_when_the_server_stops(stack: Stack) -> None:
    pid = stack.control.state()["variants"]["stable"]["pid"]
    os.kill(pid, signal.SIGKILL)
    logs = (stack.directory / "prometheus.log", stack.directory / "server.log")
    down = wait_for(lambda: stack.firing("HybridmlModelDown"), "HybridmlModelDown (stable worker gone)", logs=logs)
    assert [(a["model"], a["instance"], a["severity"]) for a in down] == [(NAME, stack.server_target, "critical")]
    # Callers routed to stable now get 503: the error-rate alert names stable too.
    codes = stack.predict(stack.rows[:100], scrapes=4)
    assert 503 in codes
    stable = wait_for(
        lambda: [a for a in stack.firing("HybridmlHighErrorRate") if a["variant"] == "stable"], "stable error rate"
    )
    assert [(a["version"], a["variant"]) for a in stable] == [("1", "stable")]

    _stop(stack.server)

    def scrape_down() -> bool:
        return any(float(r["value"][1]) == 0 for r in stack.query('up{job="hybridml"}'))

    wait_for(scrape_down, "the server's scrape failing", logs=logs)
    down = wait_for(lambda: stack.firing("HybridmlModelDown"), "HybridmlModelDown (server stopped)", logs=logs)
    assert [(a["model"], a["instance"]) for a in down] == [(NAME, stack.server_target)]
