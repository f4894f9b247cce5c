"""Registry history encoding the mutation run (issue 12) found unasserted: every field of the stored event, cut
boundaries, key format and order, and which tags decode to nothing."""

from __future__ import annotations

import json
import re

import pytest

from hybridml.registry._mlflow import history
from hybridml.registry.protocol import HistoryEvent

pytestmark = pytest.mark.unit

KEY = re.compile(r"^hybridml\.history\.(\d{20})-([0-9a-f]{8})$")


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abc", 3, "abc"),
        ("abcd", 3, "ab…"),
        ("", 0, ""),
        ("a", 0, "…"),
        ("ab", 1, "…"),
        ("abcdef", 4, "abc…"),
    ],
)
def test_truncate_keeps_text_up_to_the_limit_and_marks_a_cut(text: str, limit: int, expected: str) -> None:
    assert history.truncate(text, limit) == expected


def test_keys_carry_the_time_in_nanoseconds_and_a_random_suffix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "_last_ns", 0)
    first = KEY.fullmatch(history.event_key(1.5))
    assert first is not None and int(first[1]) == 1_500_000_000
    same = KEY.fullmatch(history.event_key(1.5))  # same clock: the next nanosecond, never the same key
    assert same is not None and int(same[1]) == 1_500_000_001
    earlier = KEY.fullmatch(history.event_key(1.0))  # a clock going back still sorts after
    assert earlier is not None and int(earlier[1]) == 1_500_000_002
    later = KEY.fullmatch(history.event_key(2.0))
    assert later is not None and int(later[1]) == 2_000_000_000
    suffixes = {KEY.fullmatch(history.event_key(3.0))[2] for _ in range(20)}  # type: ignore[index]
    assert len(suffixes) == 20


@pytest.mark.parametrize(
    ("clock_s", "expected"),
    [(0.0, "1970-01-01T00:00:00.000Z"), (1.2345, "1970-01-01T00:00:01.234Z"), (86_400.5, "1970-01-02T00:00:00.500Z")],
)
def test_timestamps_are_utc_milliseconds_with_z(clock_s: float, expected: str) -> None:
    assert history.iso_utc(clock_s) == expected


def test_every_field_is_stored_and_cut_at_its_own_limit() -> None:
    actor, detail, reason = "a" * 300, "d" * 300, "r" * 1000
    _, value = history.encode(clock_s=0.0, actor=actor, action="canary", version=None, detail=detail, reason=reason)
    assert json.loads(value) == {
        "at": "1970-01-01T00:00:00.000Z",
        "actor": actor,
        "action": "canary",
        "version": None,
        "detail": detail,
        "reason": reason,
    }
    assert list(json.loads(value)) == sorted(json.loads(value))  # keys written sorted
    _, value = history.encode(
        clock_s=0.0, actor=actor + "x", action="canary", version=4, detail=detail + "x", reason=reason + "x"
    )
    raw = json.loads(value)
    assert raw["actor"] == "a" * 299 + "…" and raw["detail"] == "d" * 299 + "…" and raw["reason"] == "r" * 999 + "…"
    assert raw["version"] == 4


def test_text_is_stored_unescaped() -> None:
    _, value = history.encode(clock_s=0.0, actor="zoë", action="mirror", version=1, detail="ü", reason="→")
    assert "zoë" in value and "→" in value  # not \\u escapes: the 5000-character tag holds more text


def test_decode_fills_defaults_and_converts_the_version() -> None:
    key = f"{history.HISTORY_PREFIX}00000000000000000001-abcdef01"
    assert history.decode("m", key, json.dumps({"at": "t", "action": "alias"})) == HistoryEvent(
        at="t", actor="", action="alias", model="m", version=None, detail="", reason=""
    )
    event = history.decode("m", key, json.dumps({"at": 5, "action": "status", "version": "7", "actor": 1}))
    assert event is not None and (event.at, event.version, event.actor) == ("5", 7, "1")


@pytest.mark.parametrize(
    "value",
    [
        json.dumps({"action": "alias"}),
        json.dumps({"at": "t"}),
        json.dumps({"at": "t", "action": "alias", "version": "seven"}),
        json.dumps({"at": "t", "action": "alias", "version": [1]}),
        json.dumps(["at", "action"]),
        "not json",
    ],
)
def test_malformed_events_decode_to_nothing(value: str) -> None:
    assert history.decode("m", f"{history.HISTORY_PREFIX}1-a", value) is None


def test_collect_and_ordered_sort_by_key_time_not_by_tag_order() -> None:
    def tag(at: str) -> str:
        return json.dumps({"at": at, "action": "status"})

    tags = {
        f"{history.HISTORY_PREFIX}00000000000000000003-aa": tag("third"),
        "hybridml.lock.x": tag("lock"),
        f"{history.HISTORY_PREFIX}00000000000000000001-bb": tag("first"),
        f"{history.HISTORY_PREFIX}00000000000000000002-aa": tag("second-a"),
        f"{history.HISTORY_PREFIX}00000000000000000002-ab": tag("second-b"),
    }
    pairs = history.collect("m", tags)
    assert sorted(k for k, _ in pairs) == [
        "00000000000000000001-bb",
        "00000000000000000002-aa",
        "00000000000000000002-ab",
        "00000000000000000003-aa",
    ]
    assert [e.at for e in history.ordered(pairs)] == ["first", "second-a", "second-b", "third"]
    assert all(e.model == "m" for _, e in pairs)


def test_a_round_trip_through_tags_keeps_order_under_a_frozen_clock() -> None:
    tags = dict(
        history.encode(clock_s=10.0, actor="a", action="status", version=i, detail=f"d{i}", reason="") for i in range(5)
    )
    assert [e.version for e in history.ordered(history.collect("m", tags))] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("detail", "number", "expected"),
    [
        ("champion: 2 -> 3", 2, True),
        ("champion: 2 -> 3", 3, True),
        ("champion: 2 -> 3", 23, False),
        ("champion: none -> 3", 3, True),
        ("champion:  12  ->  3 ", 12, True),
        ("champion: 12 -> 13", 1, False),
        ("champion: 12->13", 13, True),  # split on the arrow, whatever the spacing
        ("champion 2 -> 3", 2, False),  # not an alias detail
    ],
)
def test_mentions_reads_whole_version_numbers_on_either_side(detail: str, number: int, expected: bool) -> None:
    assert history.mentions(detail, number) is expected
