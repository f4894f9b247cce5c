"""Trigger decisions with an injected clock and a recording launcher: debounce, duplicates, follow-up, restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hybridml.errors import InvalidInputError, NotReadyError
from hybridml.monitoring.triggers import (
    Decision,
    Event,
    RunOutcome,
    RunRequest,
    Trigger,
    TriggerConfig,
    TriggerStore,
    status,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingLauncher:
    """Records every run it is asked to start; a run ends when the test sets its outcome."""

    def __init__(self) -> None:
        self.requests: list[RunRequest] = []
        self.outcomes: dict[str, RunOutcome] = {}
        self.fail_start: Exception | None = None

    def start(self, request: RunRequest) -> dict[str, Any]:
        if self.fail_start is not None:
            raise self.fail_start
        self.requests.append(request)
        return {"recorded": len(self.requests)}

    def poll(self, run: dict[str, Any]) -> RunOutcome | None:
        assert run["launch"] == {"recorded": [r.run_id for r in self.requests].index(run["run_id"]) + 1}
        return self.outcomes.get(run["run_id"])


def _file(name: str, at: float) -> Event:
    return Event("folder", f"file:/data/{name}:10:1", at, data_uri=f"/data/{name}", detail=f"new file {name}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def launcher() -> RecordingLauncher:
    return RecordingLauncher()


@pytest.fixture
def store(tmp_path: Path) -> TriggerStore:
    return TriggerStore(tmp_path / "triggers")


def _trigger(store: TriggerStore, launcher: RecordingLauncher, clock: Clock, **config: Any) -> Trigger:
    options = {"model": "churn", "data_uri": "/data/default.csv", "debounce_s": 5.0, "max_wait_s": 20.0, **config}
    return Trigger(TriggerConfig(**options), store, launcher, clock=clock)


def _log(store: TriggerStore) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store.decision_log.read_text().splitlines()]


def test_a_burst_starts_one_run_on_the_newest_data_once_the_window_is_quiet(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    trigger = _trigger(store, launcher, clock)
    start = clock.now
    decisions = []
    for name in ("a.csv", "b.csv", "c.csv"):
        decisions.append(trigger.submit(_file(name, clock.now)))
        assert trigger.tick() == []
        clock.now += 2
    assert [d.decision for d in decisions] == ["debounced"] * 3
    assert decisions[0].reason.startswith("1 event(s) in the debounce window")
    assert decisions[2].reason.startswith("3 event(s) in the debounce window")
    clock.now = start + 8.99  # last event at +4, due at +9: still quiet time left
    assert trigger.tick() == []
    clock.now = start + 9
    (started,) = trigger.tick()
    assert started.decision == "started"
    assert started.reason == "3 event(s) in one debounce window; data /data/c.csv"
    assert [(r.model, r.data_uri, r.traffic_percent) for r in launcher.requests] == [("churn", "/data/c.csv", 10)]
    assert started.run_id == launcher.requests[0].run_id
    clock.now += 100
    assert trigger.tick() == []  # still running: nothing else starts
    assert len(launcher.requests) == 1
    run = trigger.snapshot()["runs"][0]
    assert run["status"] == "running"
    assert run["events"] == [f"file:/data/{n}:10:1" for n in ("a.csv", "b.csv", "c.csv")]
    logged = _log(store)
    assert [d["decision"] for d in logged] == ["debounced", "debounced", "debounced", "started"]
    assert logged[0]["event"]["data_uri"] == "/data/a.csv"
    assert logged[3]["run_id"] == started.run_id


def test_a_steady_stream_still_starts_a_run_after_max_wait(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    trigger = _trigger(store, launcher, clock, debounce_s=5.0, max_wait_s=10.0)
    start = clock.now
    for i in range(3):  # events at +0, +4, +8: never 5 s of quiet
        clock.now = start + 4 * i
        trigger.submit(_file(f"{i}.csv", clock.now))
        assert trigger.tick() == []
    clock.now = start + 10
    assert [d.decision for d in trigger.tick()] == ["started"]


def test_a_repeated_event_never_starts_a_second_run(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    trigger = _trigger(store, launcher, clock, debounce_s=0.0)
    assert trigger.submit(_file("a.csv", clock.now)).decision == "debounced"
    again = trigger.submit(_file("a.csv", clock.now))
    assert again.decision == "duplicate"
    assert again.reason.startswith("key already seen at 2027-01-15T08:00:00Z")
    assert [d.decision for d in trigger.tick()] == ["started"]
    launcher.outcomes[launcher.requests[0].run_id] = RunOutcome("succeeded", "registered churn version 2", 2)
    clock.now += 60
    assert [d.decision for d in trigger.tick()] == ["finished"]
    assert trigger.submit(_file("a.csv", clock.now)).decision == "duplicate"
    clock.now += 60
    assert trigger.tick() == []
    assert len(launcher.requests) == 1
    assert trigger.snapshot()["pending"] is None


def test_events_during_a_run_wait_for_one_follow_up_run(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    trigger = _trigger(store, launcher, clock, debounce_s=0.0)
    trigger.submit(_file("a.csv", clock.now))
    (first,) = trigger.tick()
    clock.now += 1
    queued = [trigger.submit(_file(n, clock.now + i)) for i, n in enumerate(("b.csv", "c.csv"))]
    assert [d.decision for d in queued] == ["queued", "queued"]
    assert queued[1].reason == f"run {first.run_id} is in progress; 2 event(s) wait for one follow-up run"
    assert queued[1].run_id == first.run_id
    clock.now += 100
    assert trigger.tick() == []  # the first run goes on
    launcher.outcomes[first.run_id] = RunOutcome("failed", "hybridml run exited 2: error: bad data")
    ended, follow_up = trigger.tick()
    assert (ended.decision, ended.reason, ended.run_id) == (
        "failed",
        "hybridml run exited 2: error: bad data",
        first.run_id,
    )
    assert follow_up.decision == "started"
    assert follow_up.reason == (f"follow-up for 2 event(s) that arrived during run {first.run_id}; data /data/c.csv")
    assert [r.data_uri for r in launcher.requests] == ["/data/a.csv", "/data/c.csv"]
    runs = trigger.snapshot()["runs"]
    assert [(r["status"], r["finished_at"]) for r in runs] == [("failed", clock.now), ("running", None)]
    assert trigger.snapshot()["queued"] == []
    assert trigger.tick() == []


def test_events_without_data_use_the_configured_data_and_are_ignored_without_it(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    alert = Event("alert", "alert:abc:2027", clock.now, model="churn", detail="drift")
    other_model = Event("alert", "alert:def:2027", clock.now, model="fraud", detail="drift")
    bare = _trigger(store, launcher, clock, data_uri="", debounce_s=0.0)
    refused = bare.submit(alert)
    assert (refused.decision, refused.reason) == (
        "ignored",
        "brings no data and the trigger has none configured (--data)",
    )
    assert not bare.is_seen(alert.key)  # a configuration problem, not a consumed event
    configured = _trigger(store, launcher, clock, debounce_s=0.0)
    wrong = configured.submit(other_model)
    assert (wrong.decision, wrong.reason) == ("ignored", "names model 'fraud'; this trigger retrains 'churn'")
    assert configured.submit(alert).decision == "debounced"
    configured.tick()
    assert [r.data_uri for r in launcher.requests] == ["/data/default.csv"]


def test_state_survives_a_restart(store: TriggerStore, launcher: RecordingLauncher, clock: Clock) -> None:
    first = _trigger(store, launcher, clock)
    first.submit(_file("a.csv", clock.now))
    # Restart inside the debounce window: the window and the seen key are back.
    second = _trigger(store, launcher, clock)
    assert second.submit(_file("a.csv", clock.now)).decision == "duplicate"
    clock.now += 5
    assert [d.decision for d in second.tick()] == ["started"]
    # Restart while the run is in progress: the new process polls it and queues behind it.
    third = _trigger(store, launcher, clock)
    assert third.submit(_file("a.csv", clock.now)).decision == "duplicate"
    assert third.submit(_file("b.csv", clock.now)).decision == "queued"
    launcher.outcomes[launcher.requests[0].run_id] = RunOutcome("succeeded", "ok", 3)
    assert [d.decision for d in third.tick()] == ["finished", "started"]
    fourth = _trigger(store, launcher, clock)
    runs = fourth.snapshot()["runs"]
    assert [(r["status"], r["version"]) for r in runs] == [("succeeded", 3), ("running", None)]
    assert len(launcher.requests) == 2
    assert [d["decision"] for d in _log(store)] == [
        "debounced", "duplicate", "started", "duplicate", "queued", "finished", "started",
    ]  # fmt: skip


def test_a_run_that_cannot_start_is_recorded_as_failed(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    trigger = _trigger(store, launcher, clock, debounce_s=0.0)
    launcher.fail_start = NotReadyError("KFP API unreachable")
    trigger.submit(_file("a.csv", clock.now))
    (failed,) = trigger.tick()
    assert (failed.decision, failed.reason) == ("failed", "could not start: KFP API unreachable")
    (run,) = trigger.snapshot()["runs"]
    assert (run["status"], run["finished_at"]) == ("failed", clock.now)
    launcher.fail_start = None
    assert trigger.submit(_file("b.csv", clock.now)).decision == "debounced"  # nothing is left running
    assert [d.decision for d in trigger.tick()] == ["started"]


def test_a_launcher_error_while_polling_ends_the_run_as_failed(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    trigger = _trigger(store, launcher, clock, debounce_s=0.0)
    trigger.submit(_file("a.csv", clock.now))
    trigger.tick()

    def broken(run: dict[str, Any]) -> RunOutcome | None:
        raise NotReadyError("KFP API unreachable")

    launcher.poll = broken  # type: ignore[method-assign]
    (failed,) = trigger.tick()
    assert (failed.decision, failed.reason) == ("failed", "cannot read the run's outcome: KFP API unreachable")


def test_mark_seen_and_source_state_persist(store: TriggerStore, launcher: RecordingLauncher, clock: Clock) -> None:
    trigger = _trigger(store, launcher, clock)
    assert trigger.source_state("folder:/x") is None
    trigger.mark_seen(["file:/x/a.csv:1:1", "file:/x/b.csv:1:1"], "file(s) already there")
    trigger.set_source_state("folder:/x", {"baseline_at": 5.0})
    again = _trigger(store, launcher, clock)
    assert again.source_state("folder:/x") == {"baseline_at": 5.0}
    assert again.is_seen("file:/x/b.csv:1:1") and not again.is_seen("file:/x/c.csv:1:1")
    (logged,) = _log(store)
    assert (logged["decision"], logged["reason"], logged["event"]) == ("ignored", "2 file(s) already there", None)


def test_decisions_and_ended_runs_are_passed_to_the_listeners(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    seen: list[Decision] = []
    ended: list[dict[str, Any]] = []
    config = TriggerConfig("churn", "/d.csv", 0.0, 0.0)
    trigger = Trigger(config, store, launcher, clock=clock, on_decision=seen.append, on_run_end=ended.append)
    trigger.submit(_file("a.csv", clock.now))
    trigger.tick()
    assert [d.decision for d in seen] == ["debounced", "started"]
    assert ended == []
    launcher.outcomes[launcher.requests[0].run_id] = RunOutcome("succeeded", "registered churn version 5", 5)
    trigger.tick()
    assert [d.decision for d in seen] == ["debounced", "started", "finished"]
    (run,) = ended
    assert {k: run[k] for k in ("run_id", "model", "status", "version", "detail", "events", "traffic_percent")} == {
        "run_id": launcher.requests[0].run_id,
        "model": "churn",
        "status": "succeeded",
        "version": 5,
        "detail": "registered churn version 5",
        "events": ["file:/data/a.csv:10:1"],
        "traffic_percent": 10,
    }


def test_status_reports_recent_decisions_runs_window_and_queue(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    assert status(store).to_dict() == {"decisions": [], "runs": [], "pending": None, "queued": []}
    trigger = _trigger(store, launcher, clock, debounce_s=0.0)
    trigger.submit(_file("a.csv", clock.now))
    trigger.tick()
    trigger.submit(_file("b.csv", clock.now))
    report = status(store, limit=2)
    assert [d["decision"] for d in report.decisions] == ["started", "queued"]
    assert report.decisions[1]["event"]["key"] == "file:/data/b.csv:10:1"
    assert report.decisions[1]["at"] == "2027-01-15T08:00:00Z"
    (run,) = report.runs
    assert run["run_id"] == launcher.requests[0].run_id
    assert (run["status"], run["started"], run["data_uri"]) == ("running", "2027-01-15T08:00:00Z", "/data/a.csv")
    assert "launch" not in run
    assert report.pending is None
    assert [e["key"] for e in report.queued] == ["file:/data/b.csv:10:1"]
    assert status(store, limit=0).decisions == []


def test_state_file_is_written_atomically_and_a_foreign_one_is_refused(
    store: TriggerStore, launcher: RecordingLauncher, clock: Clock
) -> None:
    trigger = _trigger(store, launcher, clock)
    trigger.submit(_file("a.csv", clock.now))
    assert sorted(p.name for p in store.root.iterdir()) == ["decisions.jsonl", "state.json"]  # no temp file left
    store.state_file.write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"cannot read trigger state .*state\.json"):
        store.load()
    store.state_file.write_text(json.dumps({"version": 99}))
    with pytest.raises(InvalidInputError, match=r"trigger state .*state\.json is not version 1"):
        _trigger(store, launcher, clock)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model": ""}, "a trigger needs the model it retrains"),
        ({"debounce_s": -1.0}, "debounce must be >= 0 and max wait >= debounce, got -1.0 and 300.0"),
        ({"debounce_s": 10.0, "max_wait_s": 9.0}, "got 10.0 and 9.0"),
        ({"traffic_percent": 0}, "traffic percent must be between 1 and 100, got 0"),
        ({"traffic_percent": 101}, "got 101"),
    ],
)
def test_config_is_checked(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        TriggerConfig(**{"model": "churn", **config})
    assert TriggerConfig("churn", traffic_percent=100, debounce_s=0.0, max_wait_s=0.0).traffic_percent == 100
