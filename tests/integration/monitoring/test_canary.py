"""Canary analysis end to end on the local target: labelled traffic and feedback decide promote or rollback.

Two registered versions of one model with the same features and different quality (a one-split stump, online
AUC about 0.9, and 20 boosted trees, about 1.0) are served as stable and canary behind the real router;
labelled requests and their feedback go through HTTP; `hybridml canary analyze --apply` decides, acts through
the deploy target and records the decision with its figures in the registry history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import requests

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, positive_scores, save_bundle
from hybridml.core.profile import build_profile
from hybridml.deploy import LocalConfig, ModelRef, make_target, mlflow_fetch, model_ref
from hybridml.deploy.local import LocalTarget
from hybridml.registry import Registry
from hybridml.serving.cli_support import send_feedback
from hybridml.steps import release

NAME = "cancer"
HYBRIDML = Path(sys.executable).with_name("hybridml")
REQUESTS = 300  # 50 % canary: about 150 labelled requests per variant
WEAK, GOOD = {"n_estimators": 1, "max_depth": 1}, {"n_estimators": 20}


@dataclass
class Setup:
    uri: str
    home: Path
    target: LocalTarget
    weak: ModelRef
    good: ModelRef
    rows: list[dict[str, Any]]
    labels: list[int]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("canary")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    frame, target_column = builtin_breast_cancer()
    schema = infer_schema(frame, target_column)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("canary", artifact_location=(root / "artifacts").as_uri())
    registry = Registry(uri, user="test")
    fetch = mlflow_fetch(uri)
    refs = []
    for i, params in enumerate((WEAK, GOOD), start=1):
        model = fit("xgboost", params, X, y)
        profile = build_profile(frame, schema, positive_scores(model, X))
        bundle = save_bundle(model, "xgboost", params, schema, root / f"bundle{i}", profile=profile)
        run_id = client.create_run(experiment).info.run_id
        version = release.register(
            model_name=NAME, model_uri=registry.log_bundle(run_id, bundle), run_id=run_id, roc_auc=0.9,
            data_hash=schema.data_hash, pipeline_run_id=f"p-{i}", branch="direct", run_key=f"p-{i}/direct",
            tracking_uri=uri,
        ).model_version  # fmt: skip
        assert int(version) == i
        info = registry.get_version(NAME, version)
        refs.append(model_ref(NAME, version, info.source or f"models:/{NAME}/{version}", fetch))
    home = root / "home"
    target = make_target(LocalConfig(home / "deployments"), fetch=fetch)
    assert isinstance(target, LocalTarget)
    rows = json.loads(frame.drop(columns=[target_column]).to_json(orient="records"))
    ready = Setup(uri, home, target, refs[0], refs[1], rows, [int(v) for v in pd.Series(y)])
    yield ready
    for deployment in target.list():
        target.delete(deployment.name)
    hybridml(ready, "daemon", "stop")


def traffic(setup: Setup, prefix: str) -> dict[str, Any]:
    """Send REQUESTS one-row requests with ids PREFIX-i and post their true labels; returns requests per variant."""
    endpoint = setup.target.status(NAME).endpoint
    served: dict[str, int] = {}
    order = []
    labels = {}
    with requests.Session() as session:
        for i in range(REQUESTS):
            row = i % len(setup.rows)
            request_id = f"{prefix}-{i}"
            answer = session.post(
                f"{endpoint}/v1/models/{NAME}:predict",
                json={"instances": [setup.rows[row]]},
                headers={"X-Request-Id": request_id},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            variant = answer.headers["x-hybridml-variant"]
            served[variant] = served.get(variant, 0) + 1
            order.append(variant)
            labels[request_id] = setup.labels[row]
    # Online AUC compares the variants over the same period: from the canary's first request on.
    concurrent = order[order.index("canary") :].count("stable")
    return {"served": served, "labels": labels, "concurrent_stable": concurrent}


def hybridml(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYBRIDML_"))}
    # This home's warm background process runs the commands (stopped at teardown): each starts in well under a second.
    env.update(HYBRIDML_DAEMON="1", HYBRIDML_DAEMON_IDLE_S="120", MLFLOW_TRACKING_URI=setup.uri)
    args = ("--home", str(setup.home), *args)
    return subprocess.run([str(HYBRIDML), *args], capture_output=True, text=True, timeout=180, env=env, check=False)


def analyze(setup: Setup, *extra: str) -> dict[str, Any]:
    # Latency slack of 1 s: on a shared test machine scheduling stalls are not what this test is about.
    result = hybridml(setup, "canary", "analyze", "--endpoint", NAME, "--latency-slack-s", "1", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def canary_events(setup: Setup, version: int) -> list[Any]:
    return [e for e in Registry(setup.uri, user="test").history(NAME, version) if e.action == "canary"]


def test_a_better_canary_is_promoted(setup: Setup) -> None:
    setup.target.serve(NAME, setup.weak, canary=(setup.good, 50))
    sent = traffic(setup, "promote")
    assert sent["served"]["canary"] >= 100 and sent["served"]["stable"] >= 100
    assert send_feedback(setup.target.status(NAME).endpoint, sent["labels"]) == REQUESTS
    decision = analyze(setup, "--apply")
    assert decision["decision"] == "promote", decision
    assert decision["applied"] is True
    assert (decision["stable_version"], decision["canary_version"], decision["window"]) == ("1", "2", 1)
    checks = decision["checks"]
    assert {name: c["verdict"] for name, c in checks.items()} == {
        "error_rate": "pass", "latency_p99": "pass", "online_auc": "pass", "drift": "skip",
    }  # fmt: skip
    assert checks["error_rate"]["stable"] == [0, sent["served"]["stable"]]
    assert checks["error_rate"]["canary"] == [0, sent["served"]["canary"]]
    auc = checks["online_auc"]
    assert auc["canary"][3] == sent["served"]["canary"] and auc["stable"][3] == sent["concurrent_stable"]
    assert auc["canary"][0] > 0.97 and 0.8 < auc["stable"][0] < 0.97
    # Acted through the target: version 2 serves alone.
    status = setup.target.status(NAME)
    assert (status.stable_version, status.canary_version) == ("2", None)
    (event,) = canary_events(setup, 2)
    assert event.detail == "promote"
    recorded = json.loads(event.reason)
    assert recorded["window"] == 1 and recorded["stable"] == "1"
    assert recorded["checks"]["online_auc"]["v"] == "pass"
    assert recorded["checks"]["online_auc"]["canary"] == auc["canary"]
    assert recorded["checks"]["error_rate"] == {"v": "pass", **{k: checks["error_rate"][k] for k in ("stable",
                                                                "canary", "p")}}  # fmt: skip


def test_a_worse_canary_waits_for_labels_then_is_rolled_back(setup: Setup) -> None:
    setup.target.serve(NAME, setup.good, canary=(setup.weak, 50))
    sent = traffic(setup, "rollback")
    # No labels yet: the analysis fails closed (continue), and without --apply nothing is recorded or changed.
    waiting = analyze(setup)
    assert waiting["decision"] == "continue" and waiting["applied"] is False
    assert waiting["checks"]["online_auc"] == {
        "verdict": "wait",
        "reason": "stable has 0 of 50 labels; canary has 0 of 50 labels",
        "stable": [None, None, None, 0],
        "canary": [None, None, None, 0],
    }
    assert canary_events(setup, 1) == []
    assert send_feedback(setup.target.status(NAME).endpoint, sent["labels"]) == REQUESTS
    # The A/B report of the same logs: A (stable, good) is better.
    report = hybridml(setup, "ab", "report", "--endpoint", NAME, "--json")
    assert report.returncode == 0, report.stderr
    ab = json.loads(report.stdout)
    assert (ab["a"]["version"], ab["a"]["variant"], ab["b"]["version"], ab["b"]["variant"]) == (
        "2", "stable", "1", "canary",
    )  # fmt: skip
    assert ab["verdict"] == "A better" and ab["p_value"] < 0.05 and ab["difference"] < 0
    decision = analyze(setup, "--apply")
    assert decision["decision"] == "rollback", decision
    assert decision["reasons"][0].startswith("online_auc: AUC canary 0.")
    status = setup.target.status(NAME)
    assert (status.stable_version, status.canary_version) == ("2", None)
    (event,) = canary_events(setup, 1)
    assert event.detail == "rollback"
    recorded = json.loads(event.reason)
    assert recorded["checks"]["online_auc"]["v"] == "fail"
    assert recorded["checks"]["online_auc"]["p_worse"] < 0.05
    assert recorded["why"][0] == decision["reasons"][0][:160]
    # No canary left: another analysis is a conflict (exit 4), one line on stderr.
    again = hybridml(setup, "canary", "analyze", "--endpoint", NAME)
    assert again.returncode == 4
    assert again.stderr.strip() == f"error: deployment {NAME!r} has no canary to analyse"


def test_watch_without_traffic_fails_closed(setup: Setup) -> None:
    setup.target.serve(NAME, setup.good, canary=(setup.weak, 50))
    before = len(canary_events(setup, 1))
    # No requests in any window: every check waits, and the last window rolls back.
    result = hybridml(setup, "canary", "watch", "--endpoint", NAME, "--interval", "0.2", "--max-windows", "2", "--json")
    assert result.returncode == 0, result.stderr
    watched = json.loads(result.stdout)
    assert watched["decision"] == "rollback"
    assert [(w["window"], w["decision"], w["applied"]) for w in watched["windows"]] == [
        (1, "continue", True), (2, "rollback", True),
    ]  # fmt: skip
    assert watched["windows"][1]["reasons"][0] == "no decision after 2 of 2 windows (fails closed)"
    assert watched["windows"][0]["checks"]["error_rate"]["reason"] == (
        "stable has 0 of 50 requests; canary has 0 of 50 requests"
    )
    events = canary_events(setup, 1)[before:]
    assert [e.detail for e in events] == ["continue", "rollback"]
    assert [json.loads(e.reason)["window"] for e in events] == [1, 2]
    assert setup.target.status(NAME).canary_version is None
