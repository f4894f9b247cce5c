"""Launchers: a local `hybridml run` process (a stand-in executable here) and Kubeflow through an injected client."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from hybridml.errors import InvalidInputError
from hybridml.monitoring.triggers import RunOutcome, RunRequest
from hybridml.monitoring.triggers_launch import COMPILED_PIPELINE, KfpLauncher, LocalRunLauncher

REQUEST = RunRequest("20270115-080000-abc123", "churn", "s3://lake/in/a.csv", 10, "1 event(s)")


def _fake_hybridml(tmp_path: Path, body: str) -> str:
    """An executable that stands in for `hybridml`: it records its arguments, then runs ``body``."""
    script = tmp_path / "fake-hybridml"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\n{body}\n')
    script.chmod(0o755)
    return str(script)


def _wait(launcher: LocalRunLauncher, run: dict[str, Any]) -> RunOutcome:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        outcome = launcher.poll(run)
        if outcome is not None:
            return outcome
        time.sleep(0.02)
    raise AssertionError("the stand-in run did not end")


def test_local_run_is_started_with_the_data_model_and_canary_share(tmp_path: Path) -> None:
    summary = {
        "model_name": "churn",
        "model_version": 4,
        "approval_status": "Approved",
        "roc_auc": 0.93,
        "endpoint": "http://127.0.0.1:9000",
    }
    executable = _fake_hybridml(tmp_path, f"echo '{json.dumps(summary)}'")
    launcher = LocalRunLauncher(tmp_path / "home", tmp_path / "runs", run_args=["--target", "y"], executable=executable)
    launch = launcher.start(REQUEST)
    run = {"run_id": REQUEST.run_id, "launch": launch}
    outcome = _wait(launcher, run)
    assert outcome == RunOutcome(
        "succeeded",
        "registered churn version 4 (Approved, ROC AUC 0.93); deployed as canary at 10% on http://127.0.0.1:9000",
        4,
    )
    expected = [
        "--home", str(tmp_path / "home"), "run", "--json", "--data", "s3://lake/in/a.csv",
        "--model-name", "churn", "--traffic", "10", "--target", "y",
    ]  # fmt: skip
    assert (tmp_path / "argv").read_text().splitlines() == expected
    assert launch["command"] == [executable, *expected]
    assert (launch["dir"], launch["traffic_percent"], launch["note"]) == (
        str(tmp_path / "runs" / REQUEST.run_id),
        10,
        "",
    )
    assert json.loads((tmp_path / "runs" / REQUEST.run_id / "summary.json").read_text()) == summary
    # A restarted trigger (no child handle) reads the same outcome from the files.
    assert LocalRunLauncher(tmp_path / "home", tmp_path / "runs", executable=executable).poll(run) == outcome


def test_without_an_endpoint_the_first_version_is_deployed_as_stable(tmp_path: Path) -> None:
    summary = {"model_name": "churn", "model_version": 1, "approval_status": "Approved", "roc_auc": 0.9}
    executable = _fake_hybridml(tmp_path, f"echo '{json.dumps({**summary, 'endpoint': 'http://e'})}'")
    asked: list[str] = []

    def has_endpoint(name: str) -> bool:
        asked.append(name)
        return False

    launcher = LocalRunLauncher(tmp_path, tmp_path / "runs", has_endpoint=has_endpoint, executable=executable)
    launch = launcher.start(REQUEST)
    assert asked == ["churn"]
    assert launch["traffic_percent"] == 100
    assert launch["note"] == "churn has no endpoint yet: an approved version is deployed as stable"
    assert launch["command"][launch["command"].index("--traffic") + 1] == "100"
    outcome = _wait(launcher, {"run_id": REQUEST.run_id, "launch": launch})
    assert outcome.detail.endswith("; deployed as stable on http://e")
    full = LocalRunLauncher(tmp_path, tmp_path / "runs2", has_endpoint=has_endpoint, executable=executable)
    assert full.start(RunRequest("r2", "churn", "/d.csv", 100, ""))["traffic_percent"] == 100
    assert asked == ["churn"]  # 100% needs no endpoint: not asked


def test_a_failed_run_reports_its_exit_code_and_last_error_line(tmp_path: Path) -> None:
    executable = _fake_hybridml(tmp_path, "echo 'step one' >&2; echo 'error: data file not found: /x.csv' >&2; exit 3")
    launcher = LocalRunLauncher(tmp_path, tmp_path / "runs", executable=executable)
    outcome = _wait(launcher, {"run_id": REQUEST.run_id, "launch": launcher.start(REQUEST)})
    assert outcome == RunOutcome("failed", "hybridml run exited 3: error: data file not found: /x.csv")


def test_a_run_without_a_summary_or_exit_code_fails(tmp_path: Path) -> None:
    executable = _fake_hybridml(tmp_path, "echo 'not json'")
    launcher = LocalRunLauncher(tmp_path, tmp_path / "runs", executable=executable)
    outcome = _wait(launcher, {"run_id": REQUEST.run_id, "launch": launcher.start(REQUEST)})
    folder = tmp_path / "runs" / REQUEST.run_id
    assert outcome == RunOutcome("failed", f"hybridml run exited 0 without a JSON summary ({folder / 'summary.json'})")
    gone = {"run_id": "lost", "launch": {"pid": 0, "dir": str(tmp_path / "nowhere")}}
    assert launcher.poll(gone) == RunOutcome("failed", "the run's process ended without an exit code (killed?)")


def test_a_running_local_run_polls_as_none(tmp_path: Path) -> None:
    executable = _fake_hybridml(tmp_path, f'while [ ! -f "{tmp_path}/go" ]; do sleep 0.02; done; echo "{{}}"')
    launcher = LocalRunLauncher(tmp_path, tmp_path / "runs", executable=executable)
    run = {"run_id": REQUEST.run_id, "launch": launcher.start(REQUEST)}
    assert launcher.poll(run) is None
    assert LocalRunLauncher(tmp_path, tmp_path / "runs").poll(run) is None  # found alive by its pid
    (tmp_path / "go").touch()
    assert _wait(launcher, run) == RunOutcome(
        "succeeded", "registered None version None (None, ROC AUC None); not deployed"
    )


class _Run:
    def __init__(self, state: str | None) -> None:
        self.state = state


class _Created:
    run_id = "kfp-run-7"


class RecordingKfpClient:
    """Stands in for kfp.Client: records calls, answers run states from a dict."""

    def __init__(self) -> None:
        self.created: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.states: dict[str, str | None] = {}

    def create_run_from_pipeline_package(self, *args: Any, **kwargs: Any) -> _Created:
        self.created.append((args, kwargs))
        return _Created()

    def get_run(self, run_id: str) -> _Run:
        return _Run(self.states[run_id])


def test_kfp_launcher_creates_a_run_of_the_committed_pipeline() -> None:
    client = RecordingKfpClient()
    launcher = KfpLauncher(
        "https://kfp.example/pipeline",
        arguments={"deploy_target": "kserve", "target": "churned", "traffic_percent": 100},
        namespace="team-a",
        client=client,
    )
    launch = launcher.start(REQUEST)
    arguments = {
        "deploy_target": "kserve",
        "target": "churned",
        "traffic_percent": 10,  # the trigger's share wins over the base arguments
        "data_uri": "s3://lake/in/a.csv",
        "model_name": "churn",
    }
    assert client.created == [
        (
            (str(COMPILED_PIPELINE),),
            {
                "arguments": arguments,
                "run_name": "hybridml-trigger-20270115-080000-abc123",
                "experiment_name": "hybridml-triggers",
                "namespace": "team-a",
            },
        )
    ]
    assert COMPILED_PIPELINE.is_file() and COMPILED_PIPELINE.name == "hybridml_training.yaml"
    assert launch == {"kfp_run_id": "kfp-run-7", "host": "https://kfp.example/pipeline", "arguments": arguments}
    run = {"run_id": REQUEST.run_id, "launch": launch}
    for state in ("PENDING", "RUNNING", None, "PAUSED"):
        client.states["kfp-run-7"] = state
        assert launcher.poll(run) is None
    client.states["kfp-run-7"] = "SUCCEEDED"
    assert launcher.poll(run) == RunOutcome("succeeded", "Kubeflow run kfp-run-7 succeeded")
    for state in ("FAILED", "CANCELED", "SKIPPED"):
        client.states["kfp-run-7"] = state
        assert launcher.poll(run) == RunOutcome("failed", f"Kubeflow run kfp-run-7 ended {state}")
    assert launcher.poll({"run_id": "x", "launch": {}}) == RunOutcome("failed", "no Kubeflow run id was recorded")


def test_kfp_launcher_refusals(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"needs the KFP host \(--kfp-host\)"):
        KfpLauncher("")
    launcher = KfpLauncher("http://kfp", package=tmp_path / "missing.yaml", client=RecordingKfpClient())
    with pytest.raises(InvalidInputError, match=f"compiled pipeline not found: {tmp_path / 'missing.yaml'}"):
        launcher.start(REQUEST)


def test_kfp_launcher_builds_a_real_client_for_its_host_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import kfp

    made: list[dict[str, Any]] = []

    def fake_client(**kwargs: Any) -> RecordingKfpClient:
        made.append(kwargs)
        return RecordingKfpClient()

    monkeypatch.setattr(kfp, "Client", fake_client)
    launcher = KfpLauncher("http://kfp.local:8888")
    assert launcher.client() is launcher.client()
    assert made == [{"host": "http://kfp.local:8888"}]
