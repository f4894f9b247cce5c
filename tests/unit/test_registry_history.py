"""Pure parts of the registry adapter: history encoding, retry policy and error translation."""

from __future__ import annotations

import json

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

from hybridml.adapters import _history
from hybridml.adapters.registry import _is_transient, _mentions, _translate, retry
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError

pytestmark = pytest.mark.unit


def mlflow_error(message: str, code: str) -> MlflowException:
    """An MlflowException as MLflow raises it (codes are proto enum values; a string would be ignored)."""
    return MlflowException(message, error_code=databricks_pb2.ErrorCode.Value(code))


def test_event_round_trip() -> None:
    key, value = _history.encode(
        clock_s=1_700_000_000.25, actor="alice", action="status", version=3, detail="A -> B", reason="why"
    )
    assert key.startswith(_history.HISTORY_PREFIX)
    event = _history.decode("m", key, value)
    assert event == _history.HistoryEvent(
        at="2023-11-14T22:13:20.250Z",
        actor="alice",
        action="status",
        model="m",
        version=3,
        detail="A -> B",
        reason="why",
    )


def test_reason_is_truncated_and_value_fits_registered_model_tag() -> None:
    _, value = _history.encode(
        clock_s=0, actor="a" * 5000, action="alias", version=None, detail="d" * 5000, reason="r" * 9999
    )
    raw = json.loads(value)
    assert len(raw["reason"]) == _history.MAX_REASON_CHARS
    assert raw["reason"].endswith("…")
    assert len(value) < 5000


def test_keys_are_ordered_and_distinct_under_a_frozen_clock() -> None:
    keys = [_history.event_key(1.0) for _ in range(50)]
    assert keys == sorted(keys)
    assert len(set(keys)) == 50


def test_malformed_tags_are_skipped() -> None:
    tags = {
        "roc_auc": "0.9",
        f"{_history.HISTORY_PREFIX}1-a": "not json",
        f"{_history.HISTORY_PREFIX}2-b": json.dumps({"actor": "x"}),
        f"{_history.HISTORY_PREFIX}3-c": json.dumps({"at": "t", "action": "alias", "version": None}),
    }
    events = _history.collect("m", tags)
    assert [e.action for _, e in events] == ["alias"]


def test_mentions_reads_both_sides_of_an_alias_move() -> None:
    assert _mentions("champion: 2 -> none", 2)
    assert _mentions("champion: none -> 12", 12)
    assert not _mentions("champion: 12 -> 13", 1)


@pytest.mark.parametrize(
    ("code", "message", "transient"),
    [
        ("TEMPORARILY_UNAVAILABLE", "(sqlite3.OperationalError) database is locked", True),
        ("BAD_REQUEST", "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint", True),
        ("INTERNAL_ERROR", "boom", True),
        ("RESOURCE_DOES_NOT_EXIST", "Registered Model with name=m not found", False),
        ("INVALID_PARAMETER_VALUE", "Invalid alias name", False),
    ],
)
def test_transient_errors(code: str, message: str, transient: bool) -> None:
    assert _is_transient(mlflow_error(message, code)) is transient


def test_translation() -> None:
    assert isinstance(_translate(mlflow_error("x", "RESOURCE_DOES_NOT_EXIST"), "m"), NotFoundError)
    assert isinstance(_translate(mlflow_error("x", "INVALID_PARAMETER_VALUE"), "m"), InvalidInputError)
    error = _translate(mlflow_error("line one\nline two", "RESOURCE_ALREADY_EXISTS"), "model 'm'")
    assert isinstance(error, ConflictError)
    assert str(error) == "model 'm' already exists: line one"


def test_retry_backs_off_then_gives_up_with_conflict() -> None:
    sleeps: list[float] = []
    calls = 0

    def locked() -> None:
        nonlocal calls
        calls += 1
        raise mlflow_error("database is locked", "TEMPORARILY_UNAVAILABLE")

    with pytest.raises(ConflictError, match="version of model 'm': backend still contended after 4 attempts"):
        retry(locked, "version of model 'm'", attempts=4, backoff_s=0.1, sleep=sleeps.append)
    assert calls == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= b for s, b in zip(sleeps, (0.1, 0.2, 0.4), strict=True))


def test_retry_returns_after_transient_failures_and_stops_on_real_errors() -> None:
    answers = iter([mlflow_error("database is locked", "TEMPORARILY_UNAVAILABLE"), "ok"])

    def flaky() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry(flaky, "x", sleep=lambda _: None) == "ok"

    def missing() -> None:
        raise mlflow_error("no such model", "RESOURCE_DOES_NOT_EXIST")

    with pytest.raises(NotFoundError, match="model 'm' not found"):
        retry(missing, "model 'm'", sleep=lambda _: pytest.fail("must not retry"))
