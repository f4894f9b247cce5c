"""`hybridml trigger` in-process: status (table and JSON), refused flags, Kubeflow argument parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from hybridml.cli_trigger import _kfp_arguments
from hybridml.errors import InvalidInputError
from hybridml.monitoring.triggers import Event, RunOutcome, RunRequest, Trigger, TriggerConfig, TriggerStore


class Launcher:
    def start(self, request: RunRequest) -> dict[str, Any]:
        return {}

    def poll(self, run: dict[str, Any]) -> RunOutcome | None:
        return RunOutcome("succeeded", "registered churn version 7 (Approved, ROC AUC 0.9); not deployed", 7)


def _invoke(home: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--home", str(home), "trigger", *args], env={"COLUMNS": "300"})


def test_status_prints_decisions_and_runs(tmp_path: Path) -> None:
    trigger = Trigger(
        TriggerConfig("churn", debounce_s=0.0, max_wait_s=0.0),
        TriggerStore(tmp_path / "triggers"),
        Launcher(),
        clock=lambda: 1_800_000_000.0,
    )
    trigger.submit(Event("folder", "file:/in/a.csv:1:1", 1_800_000_000.0, "/in/a.csv", detail="new file a.csv"))
    trigger.tick()
    trigger.tick()
    result = _invoke(tmp_path, "status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [d["decision"] for d in report["decisions"]] == ["debounced", "started", "finished"]
    (run,) = report["runs"]
    assert (run["status"], run["version"], run["data_uri"], run["started"]) == (
        "succeeded",
        7,
        "/in/a.csv",
        "2027-01-15T08:00:00Z",
    )
    assert (report["pending"], report["queued"]) == (None, [])
    table = _invoke(tmp_path, "status", "--limit", "1")
    assert table.exit_code == 0
    assert "finished" in table.stdout and "debounced" not in table.stdout  # only the last decision
    assert run["run_id"] in table.stdout
    assert "0 event(s) in the debounce window; 0 queued for a follow-up run" in table.stdout


def test_status_of_a_corrupt_state_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "triggers").mkdir()
    (tmp_path / "triggers" / "state.json").write_text("[]")
    result = _invoke(tmp_path, "status")
    assert result.exit_code == 2
    assert "is not version 1" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give at least one of --watch, --s3, --webhook-port and --every"),
        (["--every", "1h"], "--every and --webhook-port need --data"),
        (["--webhook-port", "0"], "--every and --webhook-port need --data"),
        (["--every", "1w", "--data", "x.csv"], "invalid duration '1w'"),
        (["--s3", "lake/in", "--traffic", "10"], "invalid S3 prefix 'lake/in'"),
        (["--every", "1h", "--data", "x.csv", "--traffic", "0"], "traffic percent must be between 1 and 100"),
        (["--webhook-port", "0", "--data", "x.csv", "--webhook-host", "0.0.0.0"], "without a token"),
        (["--every", "1h", "--data", "x.csv", "--kfp-host", "http://kfp", "--kfp-arg", "bad"], "KEY=VALUE"),
    ],
)
def test_serve_refuses_bad_flags_before_serving(tmp_path: Path, args: list[str], message: str) -> None:
    result = _invoke(tmp_path, "serve", "--model", "churn", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())


def test_kfp_arguments_are_json_where_they_parse() -> None:
    assert _kfp_arguments(["n_trials=5", "auto_approve=false", "deploy_target=kserve", 'params_json={"a": 1}']) == {
        "n_trials": 5,
        "auto_approve": False,
        "deploy_target": "kserve",
        "params_json": {"a": 1},
    }
    assert _kfp_arguments(["deploy_config=", "x=a=b"]) == {"deploy_config": "", "x": "a=b"}
    with pytest.raises(InvalidInputError, match="--kfp-arg takes KEY=VALUE, got '=v'"):
        _kfp_arguments(["=v"])


class RecordingRegistry:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def record_event(self, name: str, version: int, action: str, detail: str, *, reason: str = "") -> None:
        self.events.append((name, version, action, detail, json.loads(reason)))


def test_a_finished_run_is_written_into_its_versions_history() -> None:
    from hybridml.cli_trigger import record_run

    registry = RecordingRegistry()
    run = {
        "run_id": "r1",
        "model": "churn",
        "version": None,
        "data_uri": "s3://lake/in/b.csv",
        "traffic_percent": 10,
        "events": [f"s3:lake/in/{i}.csv:e" for i in range(7)],
        "launch": {"traffic_percent": 100},
    }
    record_run(registry, run)  # failed before registering: nothing to write
    assert registry.events == []
    record_run(registry, {**run, "version": 3})
    assert registry.events == [
        (
            "churn",
            3,
            "monitor",
            "retrained by trigger run r1 (7 event(s))",
            {
                "run_id": "r1",
                "data_uri": "s3://lake/in/b.csv",
                "traffic_percent": 100,
                "event_count": 7,
                "events": run["events"][:5],
            },
        )
    ]
