"""Trigger sources: watched folder (baseline, stability), S3 listing through an injected client, the schedule."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from hybridml.errors import InvalidInputError
from hybridml.monitoring.triggers import RunOutcome, RunRequest, Trigger, TriggerConfig, TriggerStore
from hybridml.monitoring.triggers_sources import (
    FolderSource,
    S3Source,
    ScheduleSource,
    is_data_name,
    parse_duration,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Launcher:
    def __init__(self) -> None:
        self.requests: list[RunRequest] = []

    def start(self, request: RunRequest) -> dict[str, Any]:
        self.requests.append(request)
        return {}

    def poll(self, run: dict[str, Any]) -> RunOutcome | None:
        return None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def trigger(tmp_path: Path, clock: Clock) -> Trigger:
    config = TriggerConfig("churn", "/data/default.csv", debounce_s=0.0, max_wait_s=0.0)
    return Trigger(config, TriggerStore(tmp_path / "home" / "triggers"), Launcher(), clock=clock)


def _decisions(trigger: Trigger) -> list[tuple[str, str]]:
    return [(d["decision"], (d["event"] or {}).get("data_uri", "")) for d in trigger.store.recent(100)]


def _write(path: Path, text: str, mtime: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime, mtime))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("15m", 900.0), ("24h", 86400.0), ("7d", 604800.0), ("2.5", 2.5), (" 1h ", 3600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-1h", "1w", "h", "1 h x", "*/5 * * * *"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(f"invalid duration {text!r}: give a positive number")):
        parse_duration(text)


def test_data_names() -> None:
    assert is_data_name("a.csv") and is_data_name("x/B.PARQUET") and is_data_name("p/q/day.parquet")
    assert not is_data_name(".a.csv") and not is_data_name("x/.part.parquet")
    assert not is_data_name("a.csv.tmp") and not is_data_name("a.json") and not is_data_name("x/")


def test_folder_takes_what_is_there_as_baseline_and_new_files_once_stable(
    tmp_path: Path, trigger: Trigger, clock: Clock
) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    _write(folder / "old.csv", "a\n1\n", 1)
    source = FolderSource(folder, settle_s=2.0)
    source.poll(trigger)
    assert _decisions(trigger) == [("ignored", "")]
    assert trigger.store.recent(1)[0]["reason"] == f"1 file(s) already in {folder} when it was first watched"

    _write(folder / "new.csv", "a\n1\n", 2)
    _write(folder / "notes.txt", "x", 2)
    _write(folder / ".hidden.csv", "x", 2)
    (folder / "dir.csv").mkdir()
    source.poll(trigger)  # first sight of new.csv: not yet known to be complete
    clock.now += 1
    _write(folder / "new.csv", "a\n1\n2\n", 3)  # still being written
    source.poll(trigger)
    clock.now += 1.9
    source.poll(trigger)  # unchanged, but for 1.9 s only
    assert _decisions(trigger) == [("ignored", "")]
    clock.now += 0.1
    source.poll(trigger)
    assert _decisions(trigger) == [("ignored", ""), ("debounced", str(folder / "new.csv"))]
    event = trigger.store.recent(1)[0]["event"]
    assert event["key"] == f"file:{folder / 'new.csv'}:6:3"
    assert (event["source"], event["detail"]) == ("folder", "new file new.csv (6 B)")
    for _ in range(3):
        clock.now += 5
        source.poll(trigger)
    assert len(_decisions(trigger)) == 2  # taken once

    _write(folder / "new.csv", "a\n9\n", 4)  # rewritten in place: new data
    source.poll(trigger)
    clock.now += 2
    source.poll(trigger)
    assert _decisions(trigger)[-1] == ("debounced", str(folder / "new.csv"))
    assert len(_decisions(trigger)) == 3


def test_a_restarted_folder_source_takes_files_that_arrived_meanwhile(
    tmp_path: Path, trigger: Trigger, clock: Clock
) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    FolderSource(folder, settle_s=0.0).poll(trigger)
    _write(folder / "while-down.parquet", "x", 5)
    again = FolderSource(folder, settle_s=0.0)  # a new process: no memory but the state file
    again.poll(trigger)
    again.poll(trigger)
    assert _decisions(trigger) == [("ignored", ""), ("debounced", str(folder / "while-down.parquet"))]
    assert trigger.store.recent(2)[0]["reason"] == f"0 file(s) already in {folder} when it was first watched"


def test_a_missing_folder_is_an_error(tmp_path: Path, trigger: Trigger) -> None:
    with pytest.raises(InvalidInputError, match=f"watched folder not found: {tmp_path / 'none'}"):
        FolderSource(tmp_path / "none").poll(trigger)


class Paginator:
    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append(kwargs)
        return self.pages


class S3Client:
    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.paginator = Paginator(pages)

    def get_paginator(self, name: str) -> Paginator:
        assert name == "list_objects_v2"
        return self.paginator


def test_s3_source_keys_objects_by_key_and_etag(trigger: Trigger) -> None:
    client = S3Client([{"Contents": [{"Key": "in/old.csv", "ETag": '"e0"', "Size": 3}]}])
    source = S3Source("s3://lake/in/", client=client)
    assert source.source_id == "s3:lake/in/"
    source.poll(trigger)
    assert client.paginator.calls == [{"Bucket": "lake", "Prefix": "in/"}]
    assert trigger.store.recent(1)[0]["reason"] == "1 object(s) already under s3://lake/in/ at first listing"
    client.paginator.pages = [
        {"Contents": [{"Key": "in/old.csv", "ETag": '"e0"', "Size": 3}, {"Key": "in/a.parquet", "ETag": '"e1"'}]},
        {"Contents": [{"Key": "in/notes.txt", "ETag": '"e2"'}, {"Key": "in/old.csv", "ETag": '"e9"', "Size": 4}]},
        {},
    ]
    source.poll(trigger)
    source.poll(trigger)
    assert _decisions(trigger) == [
        ("ignored", ""),
        ("debounced", "s3://lake/in/a.parquet"),
        ("debounced", "s3://lake/in/old.csv"),
    ]
    keys = [d["event"]["key"] for d in trigger.store.recent(2)]
    assert keys == ["s3:lake/in/a.parquet:e1", "s3:lake/in/old.csv:e9"]
    assert trigger.store.recent(1)[0]["event"]["detail"] == "new object s3://lake/in/old.csv (4 B)"


@pytest.mark.parametrize("uri", ["lake/in", "s3://", "file:///tmp/x", "s3:///in"])
def test_bad_s3_prefixes(uri: str) -> None:
    with pytest.raises(InvalidInputError, match="expected s3://BUCKET/PREFIX"):
        S3Source(uri, client=object())


def test_schedule_runs_once_per_interval_and_makes_up_a_missed_slot_once(trigger: Trigger, clock: Clock) -> None:
    source = ScheduleSource(parse_duration("1h"))
    start = clock.now
    source.poll(trigger)  # starts counting
    assert trigger.source_state(source.source_id) == {"next_at": start + 3600}
    clock.now = start + 3599
    source.poll(trigger)
    assert trigger.store.recent(10) == []
    clock.now = start + 3600
    source.poll(trigger)
    source.poll(trigger)
    (first,) = trigger.store.recent(10)
    assert first["event"]["key"] == f"schedule:3600s:{start + 3600:.0f}"
    assert (first["decision"], first["event"]["detail"]) == ("debounced", "every 3600s")
    clock.now = start + 5 * 3600 + 10  # the trigger was stopped for hours: one run, not four
    ScheduleSource(3600).poll(trigger)
    ScheduleSource(3600).poll(trigger)
    assert [d["event"]["detail"] for d in trigger.store.recent(10)] == ["every 3600s", "every 3600s, 10810s late"]
    assert trigger.source_state(source.source_id) == {"next_at": clock.now + 3600}
    with pytest.raises(InvalidInputError, match="schedule interval must be positive, got 0"):
        ScheduleSource(0)
