"""Alertmanager webhook bodies: which alerts start a run, which are ignored, which bodies are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hybridml.errors import InvalidInputError
from hybridml.monitoring.triggers import RunOutcome, RunRequest, Trigger, TriggerConfig, TriggerStore
from hybridml.monitoring.triggers_webhook import DRIFT_ALERT, WebhookServer, parse_alerts


def alert(status: str = "firing", *, name: str = DRIFT_ALERT, model: str | None = "churn", **extra: Any) -> dict:
    labels = {"alertname": name, "severity": "warning", "version": "3"}
    if model is not None:
        labels["model"] = model
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": "drift"},
        "startsAt": "2027-01-15T08:00:00.123Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "f00d",
        **extra,
    }


def body(*alerts: dict, version: str = "4") -> bytes:
    return json.dumps({
        "version": version,
        "groupKey": "{}:{alertname=\"HybridmlDriftDetected\"}",
        "truncatedAlerts": 0,
        "status": alerts[0]["status"] if alerts else "firing",
        "receiver": "hybridml-trigger",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": list(alerts),
    }).encode()  # fmt: skip


def test_alerts_become_events_with_the_reason_some_are_ignored() -> None:
    events = parse_alerts(
        body(
            alert(),
            alert("resolved"),
            alert(name="HybridmlHighErrorRate"),
            alert(model=None),
            alert(fingerprint=""),
        ),
        123.0,
    )
    reasons = [reason for _, reason in events]
    assert reasons == [
        None,
        "resolved alert: drift ended, nothing to retrain",
        "alert 'HybridmlHighErrorRate' does not start retraining (only HybridmlDriftDetected)",
        "drift alert without a 'model' label",
        None,
    ]
    first = events[0][0]
    assert (first.source, first.at, first.model, first.data_uri) == ("alert", 123.0, "churn", "")
    assert first.key == "alert:f00d:2027-01-15T08:00:00.123000+00:00"
    assert first.detail == "HybridmlDriftDetected firing: model=churn version=3 since 2027-01-15T08:00:00.123Z"
    assert events[3][0].detail.startswith("HybridmlDriftDetected firing: model=? version=3")
    # No fingerprint: the labels identify the alert (stable across calls, distinct from other label sets).
    again = parse_alerts(body(alert(fingerprint="")), 0.0)[0][0]
    assert events[4][0].key == again.key != first.key
    other = parse_alerts(body(alert(fingerprint="", model="fraud")), 0.0)[0][0]
    assert other.key != again.key


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (b"[]", "body must be a JSON object"),
        (body(alert(), version="3"), r"unsupported Alertmanager webhook version '3' \(expected '4'\)"),
        (json.dumps({"version": "4"}).encode(), "'alerts' must be a list"),
        (json.dumps({"version": "4", "alerts": ["x"]}).encode(), r"alerts\[0\] must be an object"),
        (body(alert(labels=None)), r"alerts\[0\].labels must be an object of strings"),
        (body(alert(labels={"model": 3})), r"alerts\[0\].labels must be an object of strings"),
        (body(alert(), alert(status="pending")), r"alerts\[1\].status must be 'firing' or 'resolved', got 'pending'"),
        (body(alert(startsAt=5)), r"alerts\[0\].startsAt must be a string"),
    ],
)
def test_malformed_bodies_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_alerts(raw, 0.0)


class Launcher:
    def __init__(self) -> None:
        self.requests: list[RunRequest] = []

    def start(self, request: RunRequest) -> dict[str, Any]:
        self.requests.append(request)
        return {}

    def poll(self, run: dict[str, Any]) -> RunOutcome | None:
        return None


def test_receiver_decides_each_alert(tmp_path: Path) -> None:
    launcher = Launcher()
    config = TriggerConfig("churn", "/data/churn.csv", debounce_s=0.0, max_wait_s=0.0)
    trigger = Trigger(config, TriggerStore(tmp_path / "t"), launcher, clock=lambda: 1_800_000_000.0)
    receiver = WebhookServer(trigger)
    try:
        assert receiver.handle(body(alert("resolved"))) == {
            "decisions": [
                {
                    "key": "alert:f00d:2027-01-15T08:00:00.123000+00:00",
                    "decision": "ignored",
                    "reason": "resolved alert: drift ended, nothing to retrain",
                }
            ]
        }
        trigger.tick()
        assert launcher.requests == []  # a resolved alert starts nothing
        wrong = receiver.handle(body(alert(model="fraud", fingerprint="beef")))["decisions"][0]
        assert (wrong["decision"], wrong["reason"]) == ("ignored", "names model 'fraud'; this trigger retrains 'churn'")
        assert receiver.handle(body(alert()))["decisions"][0]["decision"] == "debounced"
        repeated = receiver.handle(body(alert()))["decisions"][0]  # Alertmanager's repeat_interval
        assert repeated["decision"] == "duplicate"
        trigger.tick()
        assert [(r.model, r.data_uri) for r in launcher.requests] == [("churn", "/data/churn.csv")]
        refired = receiver.handle(body(alert(startsAt="2027-01-16T08:00:00Z")))["decisions"][0]
        assert refired["decision"] == "queued"  # fired again after resolving: a new event
    finally:
        receiver.stop()


def test_receiver_off_loopback_needs_a_token(tmp_path: Path) -> None:
    trigger = Trigger(TriggerConfig("churn", "/d.csv"), TriggerStore(tmp_path), Launcher())
    with pytest.raises(InvalidInputError, match=r"would listen on 0\.0\.0\.0 without a token"):
        WebhookServer(trigger, host="0.0.0.0")
