"""Pure parts of the registry: history encoding, lock claims, failure classification, retries and translation."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
import requests
from mlflow.exceptions import MlflowException, RestException

from hybridml.adapters.mlflow_client import HTTP_SETTINGS, Failure, classify, configure_http, translate
from hybridml.core.secrets import redact
from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError, NotReadyError
from hybridml.registry import retry
from hybridml.registry._mlflow import history
from hybridml.registry._mlflow.lock import LOCK_PREFIX, Claim, claims_of
from hybridml.registry.protocol import HistoryEvent
from tests.mlflow_errors import as_sql_store_raises, mlflow_error, raised_during, sqlite_busy, sqlite_error, wrapped

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------------------------------ history


def test_event_round_trip() -> None:
    key, value = history.encode(
        clock_s=1_700_000_000.25, actor="alice", action="status", version=3, detail="A -> B", reason="why"
    )
    assert key.startswith(history.HISTORY_PREFIX)
    assert history.decode("m", key, value) == HistoryEvent(
        at="2023-11-14T22:13:20.250Z",
        actor="alice",
        action="status",
        model="m",
        version=3,
        detail="A -> B",
        reason="why",
    )
    assert history.decode("m", "roc_auc", value) is None


def test_reason_is_truncated_and_value_fits_registered_model_tag() -> None:
    _, value = history.encode(
        clock_s=0, actor="a" * 5000, action="alias", version=None, detail="d" * 5000, reason="r" * 9999
    )
    raw = json.loads(value)
    assert len(raw["reason"]) == history.MAX_REASON_CHARS
    assert raw["reason"].endswith("…")
    assert len(raw["actor"]) == len(raw["detail"]) == history.MAX_FIELD_CHARS
    assert len(value) < 5000


def test_keys_are_ordered_and_distinct_under_a_frozen_clock() -> None:
    keys = [history.event_key(1.0) for _ in range(50)]
    assert keys == sorted(keys)
    assert len(set(keys)) == 50


def test_malformed_tags_are_skipped() -> None:
    tags = {
        "roc_auc": "0.9",
        f"{history.HISTORY_PREFIX}1-a": "not json",
        f"{history.HISTORY_PREFIX}2-b": json.dumps({"actor": "x"}),
        f"{history.HISTORY_PREFIX}3-c": json.dumps({"at": "t", "action": "alias", "version": None}),
    }
    events = history.collect("m", tags)
    assert [(k, e.action, e.actor, e.version) for k, e in events] == [("3-c", "alias", "", None)]


def test_mentions_reads_both_sides_of_an_alias_move() -> None:
    assert history.mentions("champion: 2 -> none", 2)
    assert history.mentions("champion: none -> 12", 12)
    assert not history.mentions("champion: 12 -> 13", 1)


def test_lock_claims_round_trip_and_ignore_other_tags() -> None:
    claim = Claim("ab12", "alice", 100.0, 160.0)
    assert claim.key == f"{LOCK_PREFIX}ab12"
    tags = {claim.key: claim.encode(), f"{LOCK_PREFIX}bad": "{", "hybridml.history.1-a": "{}", "owner": "x"}
    assert claims_of(tags) == [claim]
    assert Claim("b", "x", 1.0, 2.0).rank < Claim("a", "x", 2.0, 3.0).rank < Claim("b", "x", 2.0, 3.0).rank


# ------------------------------------------------------------------------------------------ classification


def test_sqlite_lock_in_the_sql_store_is_a_race(tmp_path: Path) -> None:
    error = as_sql_store_raises(sqlite_busy(tmp_path))
    assert error.error_code == "TEMPORARILY_UNAVAILABLE"
    assert error.__cause__.orig.sqlite_errorcode == 5  # type: ignore[union-attr]
    assert classify(error) is Failure.RACE


def test_sqlite_unique_violation_is_a_race_though_mlflow_calls_it_bad_request() -> None:
    error = as_sql_store_raises(sqlite_error("insert into t values (1)"))
    assert error.error_code == "BAD_REQUEST"
    assert classify(error) is Failure.RACE


def test_other_database_errors_are_not_retried_though_mlflow_says_temporarily_unavailable() -> None:
    error = as_sql_store_raises(sqlite_error("select * from missing"))
    assert error.error_code == "TEMPORARILY_UNAVAILABLE"
    assert classify(error) is Failure.OTHER


@pytest.mark.parametrize(
    ("orig", "expected"),
    [
        (psycopg2.errors.SerializationFailure("could not serialize access"), Failure.RACE),
        (psycopg2.errors.DeadlockDetected("deadlock detected"), Failure.RACE),
        (psycopg2.errors.LockNotAvailable("lock timeout"), Failure.RACE),
        (psycopg2.errors.UniqueViolation("duplicate key"), Failure.RACE),
        (psycopg2.OperationalError("could not connect to server: Connection refused"), Failure.UNREACHABLE),
        (psycopg2.errors.AdminShutdown("terminating connection"), Failure.UNREACHABLE),
        (psycopg2.errors.UndefinedTable("relation does not exist"), Failure.OTHER),
    ],
)
def test_postgres_errors_by_class(orig: Exception, expected: Failure) -> None:
    assert classify(as_sql_store_raises(wrapped(orig))) is expected


def test_rest_client_failures_by_type() -> None:
    refused = requests.exceptions.ConnectionError("HTTPConnectionPool(...)")
    refused.__context__ = ConnectionRefusedError(111, "Connection refused")
    assert classify(raised_during(refused, mlflow_error("API request failed", "INTERNAL_ERROR"))) is Failure.UNREACHABLE
    timeout = requests.exceptions.ReadTimeout("read timed out")
    assert classify(raised_during(timeout, mlflow_error("API request failed", "INTERNAL_ERROR"))) is Failure.UNREACHABLE
    busy = requests.exceptions.RetryError("too many 503 error responses")
    assert classify(raised_during(busy, mlflow_error("API request failed", "INTERNAL_ERROR"))) is Failure.BUSY


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ABORTED", Failure.RACE),
        ("RESOURCE_CONFLICT", Failure.RACE),
        ("TEMPORARILY_UNAVAILABLE", Failure.BUSY),
        ("REQUEST_LIMIT_EXCEEDED", Failure.BUSY),
        ("RESOURCE_DOES_NOT_EXIST", Failure.NOT_FOUND),
        ("RESOURCE_ALREADY_EXISTS", Failure.EXISTS),
        ("INVALID_PARAMETER_VALUE", Failure.INVALID),
        ("BAD_REQUEST", Failure.INVALID),
        ("INTERNAL_ERROR", Failure.OTHER),
    ],
)
def test_server_error_codes(code: str, expected: Failure) -> None:
    assert classify(RestException({"error_code": code, "message": "x"})) is expected


def test_already_exists_wins_over_its_integrity_error_cause() -> None:
    exists = mlflow_error("Registered Model (name=m) already exists", "RESOURCE_ALREADY_EXISTS")
    exists.__cause__ = sqlite_error("insert into t values (1)")
    assert classify(exists) is Failure.EXISTS


@pytest.mark.parametrize(
    "message",
    ["(sqlite3.OperationalError) database is locked", "duplicate key value violates unique constraint", "connection"],
)
def test_words_in_a_message_are_not_a_race(message: str) -> None:
    assert classify(mlflow_error(message, "INTERNAL_ERROR")) is Failure.OTHER


# ------------------------------------------------------------------------------------- translation, retry


def test_translation() -> None:
    where = "http://bob:secret@127.0.0.1:5000"
    assert isinstance(translate(mlflow_error("x", "RESOURCE_DOES_NOT_EXIST"), "m", where), NotFoundError)
    assert isinstance(translate(mlflow_error("x", "INVALID_PARAMETER_VALUE"), "m", where), InvalidInputError)
    error = translate(mlflow_error("line one\nline two", "RESOURCE_ALREADY_EXISTS"), "model 'm'", where)
    assert type(error) is ConflictError
    assert str(error) == "model 'm' already exists: line one"
    refused = requests.exceptions.ConnectionError("pool")
    refused.__context__ = ConnectionRefusedError(111, "Connection refused")
    down = translate(raised_during(refused, mlflow_error("API request failed", "INTERNAL_ERROR")), "run 'r'", where)
    assert type(down) is NotReadyError
    assert down.exit_code == 5
    assert str(down) == "MLflow at http://bob:***@127.0.0.1:5000 is not reachable (connection refused): run 'r'"
    other = translate(mlflow_error("boom", "INTERNAL_ERROR"), "run 'r'", where)
    assert type(other) is HybridmlError
    assert str(other) == "run 'r': MLflow failed: boom"
    assert redact("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_http_settings_are_defaults_a_user_can_override() -> None:
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    configure_http(env)
    assert env == {**HTTP_SETTINGS, "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    assert int(HTTP_SETTINGS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2
    assert int(HTTP_SETTINGS["MLFLOW_HTTP_REQUEST_TIMEOUT"]) * 3 < 30


def race(tmp_path: Path) -> MlflowException:
    return as_sql_store_raises(sqlite_busy(tmp_path))


def test_retry_backs_off_then_gives_up_with_conflict(tmp_path: Path) -> None:
    sleeps: list[float] = []
    calls = 0
    lost = race(tmp_path)

    def locked() -> None:
        nonlocal calls
        calls += 1
        raise lost

    with pytest.raises(ConflictError, match="version of model 'm': backend still contended after 4 attempts"):
        retry(locked, "version of model 'm'", attempts=4, backoff_s=0.1, sleep=sleeps.append)
    assert calls == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= b for s, b in zip(sleeps, (0.1, 0.2, 0.4), strict=True))


def test_retry_returns_after_a_race_and_stops_on_everything_else(tmp_path: Path) -> None:
    answers: list[object] = [race(tmp_path), "ok"]

    def flaky() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sleeps: list[float] = []
    assert retry(flaky, "x", sleep=sleeps.append) == "ok"
    assert len(sleeps) == 1

    for error, kind in [
        (mlflow_error("no such model", "RESOURCE_DOES_NOT_EXIST"), NotFoundError),
        (mlflow_error("(sqlite3.OperationalError) database is locked", "INTERNAL_ERROR"), HybridmlError),
        (RestException({"error_code": "BAD_REQUEST", "message": "UNIQUE constraint failed"}), InvalidInputError),
    ]:
        calls = 0

        def failing(error: Exception = error) -> None:
            nonlocal calls
            calls += 1
            raise error

        with pytest.raises(kind):
            retry(failing, "model 'm'", sleep=lambda _: pytest.fail("must not retry"))
        assert calls == 1


def test_retry_does_not_touch_foreign_exceptions() -> None:
    def broken() -> None:
        raise KeyError("not from MLflow")

    with pytest.raises(KeyError):
        retry(broken, "x", sleep=lambda _: pytest.fail("must not retry"))
