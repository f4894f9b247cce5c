"""The registry's retry rule (registry/_mlflow/retries.py) and its approval state changes
(registry/_mlflow/transitions.py) driven in process against an in-memory MLflow client, a fake lock and a fake
clock: every refusal, the order of every write, every field of every history event, the retry boundaries (issue 12:
only integration tests, in server processes that mutants never reach, exercised them)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    ABORTED,
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from hybridml.core.approval import APPROVED, PENDING, REJECTED, Change
from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError, NotReadyError
from hybridml.registry._mlflow import registration, retries, transitions
from hybridml.registry._mlflow.backend import STATUS_TAG, Backend
from hybridml.registry._mlflow.history import HISTORY_PREFIX, decode, iso_utc
from hybridml.registry._mlflow.retries import retry
from hybridml.registry.protocol import HistoryEvent, VersionInfo

pytestmark = pytest.mark.unit

EPOCH = 1_700_000_000.0
REASON = "reviewed"


def race(text: str = "lost the race\nsecond line") -> MlflowException:
    return MlflowException(text, error_code=ABORTED)


def busy(text: str = "try again later") -> MlflowException:
    return MlflowException(text, error_code=TEMPORARILY_UNAVAILABLE)


@pytest.fixture(autouse=True)
def widest_jitter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """random.uniform returns the top of its range; the ranges asked for are recorded."""
    asked: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return high

    monkeypatch.setattr(retries.random, "uniform", uniform)
    return asked


class Failing:
    """An operation that raises the given exceptions in turn, then returns ``result``."""

    def __init__(self, *failures: BaseException, result: str = "done") -> None:
        self.failures = list(failures)
        self.calls = 0
        self.result = result

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


# ------------------------------------------------------------------ retries.py


def test_a_first_success_neither_sleeps_nor_retries(widest_jitter: list[tuple[float, float]]) -> None:
    sleeps: list[float] = []
    op = Failing()
    assert retry(op, "w", sleep=sleeps.append) == "done"
    assert (op.calls, sleeps, widest_jitter) == (1, [], [])


def test_races_and_busy_answers_are_retried_with_a_doubling_bound_capped_at_two_seconds(
    widest_jitter: list[tuple[float, float]],
) -> None:
    sleeps: list[float] = []
    op = Failing(race(), busy(), race(), race(), race())
    assert retry(op, "w", attempts=6, backoff_s=0.5, sleep=sleeps.append) == "done"
    assert op.calls == 6
    assert widest_jitter == [(0, 0.5), (0, 1.0), (0, 2.0), (0, 2.0), (0, 2.0)]
    assert sleeps == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_the_defaults_are_ten_attempts_from_a_50_ms_bound(widest_jitter: list[tuple[float, float]]) -> None:
    sleeps: list[float] = []
    op = Failing(*[race() for _ in range(20)])
    with pytest.raises(ConflictError) as caught:
        retry(op, "tag 'x'", sleep=sleeps.append)
    assert op.calls == 10
    assert sleeps == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert [low for low, _ in widest_jitter] == [0] * 9
    assert caught.value.message == "tag 'x': backend still contended after 10 attempts: lost the race"


def test_still_racing_on_the_last_attempt_is_a_conflict_naming_what_and_the_count() -> None:
    sleeps: list[float] = []
    last = race("third\nmore")
    op = Failing(race(), race(), last, race())
    with pytest.raises(ConflictError) as caught:
        retry(op, "alias 'a'", where="http://reg", attempts=3, sleep=sleeps.append)
    assert type(caught.value) is ConflictError
    assert caught.value.message == "alias 'a': backend still contended after 3 attempts: third"
    assert caught.value.__cause__ is last
    assert (op.calls, len(sleeps)) == (3, 2)


def test_still_busy_on_the_last_attempt_is_not_ready_naming_the_store() -> None:
    last = busy("busy now\nmore")
    op = Failing(race(), last)
    with pytest.raises(NotReadyError) as caught:
        retry(op, "model 'm'", where="http://reg:5000", attempts=2, sleep=lambda s: None)
    assert caught.value.message == "model 'm': MLflow at http://reg:5000 still busy after 2 attempts: busy now"
    assert caught.value.__cause__ is last
    assert op.calls == 2


def test_one_attempt_fails_at_once_without_sleeping() -> None:
    sleeps: list[float] = []
    op = Failing(race("r"))
    with pytest.raises(ConflictError, match=r"^w: backend still contended after 1 attempts: r$"):
        retry(op, "w", attempts=1, sleep=sleeps.append)
    assert (op.calls, sleeps) == (1, [])


@pytest.mark.parametrize(
    ("failure", "error", "message"),
    [
        (MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST), NotFoundError, "model 'm' not found: gone"),
        (MlflowException("bad", error_code=INVALID_PARAMETER_VALUE), InvalidInputError, "model 'm': bad"),
        (MlflowException("boom"), HybridmlError, "model 'm': MLflow failed: boom"),
    ],
)
def test_other_backend_failures_are_translated_at_once(
    failure: MlflowException, error: type[HybridmlError], message: str
) -> None:
    sleeps: list[float] = []
    op = Failing(failure)
    with pytest.raises(error) as caught:
        retry(op, "model 'm'", where="http://reg", sleep=sleeps.append)
    assert type(caught.value) is error
    assert caught.value.message == message
    assert caught.value.__cause__ is failure
    assert (op.calls, sleeps) == (1, [])


def test_an_unreachable_store_is_reported_at_once_naming_the_store() -> None:
    failure = requests.exceptions.ConnectionError("no route")
    op = Failing(failure)
    with pytest.raises(NotReadyError) as caught:
        retry(op, "model 'm'", where="http://reg:5000", sleep=lambda s: pytest.fail("slept"))
    assert caught.value.message == "MLflow at http://reg:5000 is not reachable (connection failed): model 'm'"
    assert caught.value.__cause__ is failure
    assert op.calls == 1
    with pytest.raises(NotReadyError) as caught:
        retry(Failing(failure), "w", sleep=lambda s: None)
    assert caught.value.message == "MLflow at  is not reachable (connection failed): w"  # no store named


def test_an_error_that_is_not_the_backends_passes_through_untouched() -> None:
    failure = ValueError("a bug")
    op = Failing(failure)
    with pytest.raises(ValueError, match=r"^a bug$") as caught:
        retry(op, "w", sleep=lambda s: pytest.fail("slept"))
    assert caught.value is failure
    assert op.calls == 1


def test_each_retry_is_logged_with_what_the_failure_kind_and_the_attempt(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=retries.__name__)
    retry(Failing(race("r1"), busy("b2")), "w", sleep=lambda s: None)
    assert [r.getMessage() for r in caplog.records] == [
        "retrying w after race (attempt 1): r1",
        "retrying w after busy (attempt 2): b2",
    ]


# ------------------------------------------------------------------ transitions.py


class FakeClient:
    """The MLflow client calls the registry makes, on dicts; every write is logged in order."""

    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log
        self.model_tags: dict[str, str] = {}
        self.alias_map: dict[str, str] = {}
        self.versions: dict[int, dict[str, str]] = {}
        self.inject: dict[str, list[BaseException]] = {}
        self.exists = True  # whether model "m" is registered (the only model there is)
        self.committed_then_lost: list[BaseException] = []  # create_model_version commits, then raises these

    def _fail(self, op: str) -> None:
        if self.inject.get(op):
            raise self.inject[op].pop(0)

    def get_registered_model(self, name: str) -> SimpleNamespace:
        self._fail("get_registered_model")
        if name != "m" or not self.exists:
            raise MlflowException(f"model {name} missing", error_code=RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(name=name, tags=dict(self.model_tags), aliases=dict(self.alias_map))

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        assert isinstance(version, str)
        self.get_registered_model(name)
        if int(version) not in self.versions:
            raise MlflowException(f"version {version} missing", error_code=RESOURCE_DOES_NOT_EXIST)
        return self._mv(name, int(version))

    def _mv(self, name: str, number: int) -> SimpleNamespace:
        return SimpleNamespace(
            name=name,
            version=str(number),
            tags=dict(self.versions[number]),
            run_id="run",
            source="s3://b/m",
            aliases=[],
            creation_timestamp=5,
        )

    def search_model_versions(self, query: str, max_results: int, page_token: str | None) -> list[SimpleNamespace]:
        assert (query, page_token) == ("name = 'm'", None)
        page = _Page(self._mv("m", n) for n in sorted(self.versions, reverse=True))
        page.token = None
        return page

    def create_registered_model(self, name: str) -> None:
        self._fail("create_registered_model")
        self.log.append(("create-model", name))
        self.exists = True

    def create_model_version(self, name: str, source: str, **kw: Any) -> SimpleNamespace:
        self._fail("create_model_version")
        number = max(self.versions, default=0) + 1
        self.versions[number] = dict(kw["tags"])
        self.log.append(("create-version", name, source, number, kw))
        if self.committed_then_lost:
            raise self.committed_then_lost.pop(0)
        return self._mv(name, number)

    def get_logged_model(self, model_id: str) -> SimpleNamespace:
        self.log.append(("logged-model", model_id))
        return SimpleNamespace(artifact_location=f"s3://art/{model_id}")

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._fail("set_model_version_tag")
        self.log.append(("version-tag", name, version, key, value))
        self.versions[int(version)][key] = value

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._fail("set_registered_model_tag")
        self.log.append(("model-tag", name, key, value))
        self.model_tags[key] = value

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self._fail("set_registered_model_alias")
        assert isinstance(version, str)
        self.log.append(("set-alias", name, alias, version))
        self.alias_map[alias] = version

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self._fail("delete_registered_model_alias")
        self.log.append(("delete-alias", name, alias))
        del self.alias_map[alias]


class _Page(list[SimpleNamespace]):
    token: str | None


class FakeLock:
    """The model lock: taking it and each check are logged; ``refuse`` makes check() fail from that call on."""

    def __init__(self, log: list[tuple[Any, ...]], refuse_from: int | None) -> None:
        self.log = log
        self.checks = 0
        self.refuse_from = refuse_from

    def __enter__(self) -> FakeLock:
        self.log.append(("locked",))
        return self

    def __exit__(self, *exc: object) -> None:
        self.log.append(("unlocked",))

    def check(self) -> None:
        self.checks += 1
        if self.refuse_from is not None and self.checks >= self.refuse_from:
            raise ConflictError("lock lost")
        self.log.append(("check",))


class Registry:
    """A Backend over a FakeClient, with the lock factory the transitions take."""

    def __init__(self, versions: dict[int, str], champion: int | None = None) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.client = FakeClient(self.log)
        self.client.versions = {n: ({STATUS_TAG: s} if s else {}) for n, s in versions.items()}
        if champion is not None:
            self.client.alias_map["champion"] = str(champion)
        self.hooks: list[tuple[str, dict[str, Any]]] = []
        self.sleeps: list[float] = []
        self.ticks = 0
        self.b = Backend(
            tracking_uri="http://reg",
            user="svc",
            client=self.client,  # type: ignore[arg-type]
            clock=self.clock,
            attempts=3,
            sleep=self.sleeps.append,
            hook=lambda point, details: self.hooks.append((point, details)),
        )
        self.locks: list[tuple[str, str]] = []
        self.refuse_from: int | None = None

    def clock(self) -> float:
        self.ticks += 1
        return EPOCH + self.ticks

    def lock(self, b: Backend, name: str, who: str) -> FakeLock:
        assert b is self.b
        self.locks.append((name, who))
        return FakeLock(self.log, self.refuse_from)

    def writes(self) -> list[tuple[Any, ...]]:
        """The log with history values decoded (keys checked and dropped)."""
        shown: list[tuple[Any, ...]] = []
        for entry in self.log:
            if entry[0] in ("version-tag", "model-tag") and entry[-2].startswith(HISTORY_PREFIX):
                event = decode("m", entry[-2], entry[-1])
                assert event is not None
                shown.append((*entry[:-2], "history", event))
            else:
                shown.append(entry)
        return shown

    def set_status(self, version: int | str, status: str, **kw: Any) -> VersionInfo:
        kw.setdefault("reason", REASON)
        kw.setdefault("actor", "ann")
        return transitions.set_status(self.b, self.lock, "m", version, status, **kw)  # type: ignore[arg-type]


def event(action: str, version: int | None, detail: str, tick: int, actor: str = "ann") -> HistoryEvent:
    return HistoryEvent(iso_utc(EPOCH + tick), actor, action, "m", version, detail, REASON)


def test_approving_a_pending_version_writes_status_then_history_then_the_champion_alias() -> None:
    reg = Registry({1: PENDING})
    info = reg.set_status(1, APPROVED)
    assert (info.version, info.status) == (1, APPROVED)
    assert reg.locks == [("m", "ann")]
    assert reg.writes() == [
        ("locked",),
        ("check",),
        ("version-tag", "m", "1", STATUS_TAG, APPROVED),
        ("version-tag", "m", "1", "history", event("status", 1, f"{PENDING} -> {APPROVED}", 1)),
        ("check",),
        ("set-alias", "m", "champion", "1"),
        ("model-tag", "m", "history", event("alias", 1, "champion: none -> 1", 2)),
        ("unlocked",),
    ]
    change = Change(1, PENDING, APPROVED, None, 1)
    assert reg.hooks == [
        ("planned", {"model": "m", "version": 1, "change": change}),
        ("status-written", {"model": "m", "version": 1}),
    ]
    assert reg.sleeps == []


def test_approving_another_version_moves_the_champion_and_names_both_sides() -> None:
    reg = Registry({1: APPROVED, 2: ""}, champion=1)
    reg.set_status("2", APPROVED, actor=None)
    assert reg.locks == [("m", "svc")]
    assert reg.writes()[2:7] == [
        ("version-tag", "m", "2", STATUS_TAG, APPROVED),
        ("version-tag", "m", "2", "history", event("status", 2, f"{PENDING} -> {APPROVED}", 1, "svc")),
        ("check",),
        ("set-alias", "m", "champion", "2"),
        ("model-tag", "m", "history", event("alias", 2, "champion: 1 -> 2", 2, "svc")),
    ]


def test_rejecting_the_champion_removes_the_alias_before_the_status_changes() -> None:
    reg = Registry({1: APPROVED}, champion=1)
    info = reg.set_status(1, REJECTED)
    assert info.status == REJECTED
    assert reg.client.alias_map == {}
    assert reg.writes() == [
        ("locked",),
        ("check",),
        ("delete-alias", "m", "champion"),
        ("model-tag", "m", "history", event("alias", None, "champion: 1 -> none", 2)),
        ("check",),
        ("version-tag", "m", "1", STATUS_TAG, REJECTED),
        ("version-tag", "m", "1", "history", event("status", 1, f"{APPROVED} -> {REJECTED}", 1)),
        ("unlocked",),
    ]
    assert [point for point, _ in reg.hooks] == ["planned", "alias-written"]
    assert reg.hooks[1][1] == {"model": "m", "version": 1}


@pytest.mark.parametrize(
    ("versions", "champion", "version", "status"),
    [
        ({1: APPROVED, 2: PENDING}, 1, 2, REJECTED),  # rejecting another version leaves the champion alone
        ({1: APPROVED}, 1, 1, APPROVED),  # re-approving the champion does not move it
        ({1: REJECTED}, None, 1, REJECTED),  # rejecting again only records the reason
    ],
)
def test_a_change_that_leaves_the_champion_writes_only_the_status(
    versions: dict[int, str], champion: int | None, version: int, status: str
) -> None:
    reg = Registry(versions, champion)
    reg.set_status(version, status)
    before = versions[version]
    assert reg.writes() == [
        ("locked",),
        ("check",),
        ("version-tag", "m", str(version), STATUS_TAG, status),
        ("version-tag", "m", str(version), "history", event("status", version, f"{before} -> {status}", 1)),
        ("unlocked",),
    ]
    assert [point for point, _ in reg.hooks] == ["planned", "status-written"]
    assert reg.client.alias_map == ({} if champion is None else {"champion": str(champion)})


def test_unknown_statuses_are_refused_before_the_lock_is_taken() -> None:
    reg = Registry({1: PENDING})
    with pytest.raises(InvalidInputError, match=r"^unknown approval status 'Done'"):
        reg.set_status(1, "Done")
    with pytest.raises(InvalidInputError, match=r"^unknown approval status 'Maybe'"):
        reg.set_status(1, APPROVED, expected="Maybe")
    assert (reg.log, reg.locks) == ([], [])


def test_an_unexpected_current_status_is_a_conflict_and_nothing_is_written() -> None:
    reg = Registry({1: REJECTED})
    with pytest.raises(ConflictError) as caught:
        reg.set_status(1, APPROVED, expected=PENDING)
    assert caught.value.message == (
        f"model 'm' version 1 is {REJECTED}, not {PENDING}: someone changed it meanwhile; nothing was changed"
    )
    assert reg.writes() == [("locked",), ("unlocked",)]
    reg.set_status(1, APPROVED, expected=REJECTED)
    assert reg.client.versions[1][STATUS_TAG] == APPROVED


def test_going_back_to_pending_is_a_conflict_naming_the_model_and_nothing_is_written() -> None:
    reg = Registry({1: APPROVED}, champion=1)
    with pytest.raises(ConflictError) as caught:
        reg.set_status(1, PENDING)
    assert caught.value.message.startswith(f"model 'm': version 1 is {APPROVED}; it cannot become {PENDING}")
    assert reg.writes() == [("locked",), ("unlocked",)]
    assert reg.hooks == []


def test_a_missing_version_fails_before_the_lock_is_taken() -> None:
    reg = Registry({1: PENDING})
    with pytest.raises(NotFoundError, match=r"^model 'm' has no version 7$"):
        reg.set_status(7, APPROVED)
    with pytest.raises(InvalidInputError, match="invalid model version '0'"):
        reg.set_status("0", APPROVED)
    assert (reg.log, reg.locks) == ([], [])


def test_a_lost_lock_stops_each_write_before_it_is_made() -> None:
    reg = Registry({1: PENDING})
    reg.refuse_from = 1
    with pytest.raises(ConflictError, match="lock lost"):
        reg.set_status(1, APPROVED)
    assert reg.writes() == [("locked",), ("unlocked",)]
    reg = Registry({1: PENDING})
    reg.refuse_from = 2  # the status is written, the alias is not
    with pytest.raises(ConflictError, match="lock lost"):
        reg.set_status(1, APPROVED)
    assert [w[0] for w in reg.writes()] == ["locked", "check", "version-tag", "version-tag", "unlocked"]
    assert reg.client.alias_map == {}
    reg = Registry({1: APPROVED}, champion=1)
    reg.refuse_from = 2  # rejecting the champion: the alias goes, the status stays
    with pytest.raises(ConflictError, match="lock lost"):
        reg.set_status(1, REJECTED)
    assert [w[0] for w in reg.writes()] == ["locked", "check", "delete-alias", "model-tag", "unlocked"]
    assert reg.client.versions[1][STATUS_TAG] == APPROVED


def test_the_policy_sees_the_current_version_and_the_champion_and_none_changes_nothing() -> None:
    reg = Registry({1: APPROVED, 2: PENDING}, champion=1)
    seen: list[tuple[VersionInfo, VersionInfo | None]] = []

    def policy(current: VersionInfo, champion: VersionInfo | None) -> None:
        seen.append((current, champion))

    info = transitions.transition(reg.b, reg.lock, "m", 2, policy, actor="bob")  # type: ignore[arg-type]
    [(current, champion)] = seen
    assert (current.version, current.status) == (2, PENDING)
    assert champion is not None and (champion.version, champion.status) == (1, APPROVED)
    assert (info.version, info.status) == (2, PENDING)
    assert reg.writes() == [("locked",), ("unlocked",)]
    assert reg.locks == [("m", "bob")]
    seen.clear()
    transitions.transition(reg.b, reg.lock, "m", 1, policy, actor=None)  # type: ignore[arg-type]
    assert seen[0][1] is seen[0][0]  # the champion itself: read once
    assert reg.locks[-1] == ("m", "svc")
    reg = Registry({1: PENDING})
    transitions.transition(reg.b, reg.lock, "m", 1, policy, actor=None)  # type: ignore[arg-type]
    assert seen[-1][1] is None


def test_alias_writes_are_retried_and_name_the_alias_when_they_keep_failing() -> None:
    reg = Registry({1: PENDING})
    reg.client.inject["set_registered_model_alias"] = [race()]
    reg.set_status(1, APPROVED)
    assert reg.client.alias_map == {"champion": "1"}
    assert len(reg.sleeps) == 1
    reg = Registry({1: APPROVED}, champion=1)
    reg.client.inject["delete_registered_model_alias"] = [race(), race(), race("third")]
    with pytest.raises(ConflictError) as caught:
        reg.set_status(1, REJECTED)
    assert caught.value.message == "alias champion of model 'm': backend still contended after 3 attempts: third"
    reg = Registry({1: PENDING})
    reg.client.inject["set_registered_model_alias"] = [race(), race(), race("again")]
    with pytest.raises(ConflictError) as caught:
        reg.set_status(1, APPROVED)
    assert caught.value.message == "alias champion of model 'm': backend still contended after 3 attempts: again"


def test_set_alias_points_the_alias_and_records_the_move_under_the_lock() -> None:
    reg = Registry({1: PENDING, 2: PENDING})
    transitions.set_alias(reg.b, reg.lock, "m", "staging", 1, reason=REASON, actor="ann")  # type: ignore[arg-type]
    transitions.set_alias(reg.b, reg.lock, "m", "staging", "2", reason=REASON, actor=None)  # type: ignore[arg-type]
    assert reg.writes() == [
        ("locked",),
        ("check",),
        ("set-alias", "m", "staging", "1"),
        ("model-tag", "m", "history", event("alias", 1, "staging: none -> 1", 1)),
        ("unlocked",),
        ("locked",),
        ("check",),
        ("set-alias", "m", "staging", "2"),
        ("model-tag", "m", "history", event("alias", 2, "staging: 1 -> 2", 2, "svc")),
        ("unlocked",),
    ]
    assert reg.locks == [("m", "ann"), ("m", "svc")]
    assert reg.hooks == [
        ("planned", {"model": "m", "version": 1, "alias": "staging"}),
        ("planned", {"model": "m", "version": 2, "alias": "staging"}),
    ]
    reg.client.inject["set_registered_model_alias"] = [race(), race(), race("r")]
    with pytest.raises(ConflictError, match=r"^alias 'staging' of model 'm': backend still contended"):
        transitions.set_alias(reg.b, reg.lock, "m", "staging", 1, reason=REASON, actor=None)  # type: ignore[arg-type]


def test_set_alias_refuses_a_champion_that_is_not_approved_and_a_missing_version() -> None:
    reg = Registry({1: PENDING, 2: APPROVED})
    with pytest.raises(ConflictError) as caught:
        transitions.set_alias(reg.b, reg.lock, "m", "champion", 1, reason=REASON, actor=None)  # type: ignore[arg-type]
    assert caught.value.message == f"model 'm': version 1 is {PENDING}; only an Approved version can be the champion"
    assert reg.writes() == [("locked",), ("unlocked",)]
    with pytest.raises(NotFoundError):
        transitions.set_alias(reg.b, reg.lock, "m", "champion", 3, reason=REASON, actor=None)  # type: ignore[arg-type]
    assert reg.locks == [("m", "svc")]
    transitions.set_alias(reg.b, reg.lock, "m", "champion", 2, reason=REASON, actor=None)  # type: ignore[arg-type]
    assert reg.client.alias_map == {"champion": "2"}
    reg.refuse_from = 1
    with pytest.raises(ConflictError, match="lock lost"):
        transitions.set_alias(reg.b, reg.lock, "m", "other", 2, reason=REASON, actor=None)  # type: ignore[arg-type]
    assert "other" not in reg.client.alias_map


def test_set_version_tag_writes_a_string_and_refuses_the_registrys_own_keys() -> None:
    reg = Registry({1: PENDING})
    transitions.set_version_tag(reg.b, "m", "1", "note", 3)  # type: ignore[arg-type]
    assert reg.log == [("version-tag", "m", "1", "note", "3")]
    for key in (STATUS_TAG, f"{HISTORY_PREFIX}x"):
        with pytest.raises(InvalidInputError) as caught:
            transitions.set_version_tag(reg.b, "m", 1, key, "v")
        assert caught.value.message == f"tag {key!r} is kept by the registry itself; change a status with set_status"
    transitions.set_version_tag(reg.b, "m", 1, "hybridml.historyx", "v")  # only the prefix with its dot is kept
    with pytest.raises(NotFoundError):
        transitions.set_version_tag(reg.b, "m", 2, "note", "v")
    assert len(reg.log) == 2


def test_record_event_writes_one_version_event_and_returns_it() -> None:
    reg = Registry({1: PENDING})
    got = transitions.record_event(reg.b, "m", "1", "deployment", "applied", reason="r", actor=None)
    assert got == HistoryEvent(iso_utc(EPOCH + 1), "svc", "deployment", "m", 1, "applied", "r")
    [(kind, name, version, key, value)] = reg.log
    assert (kind, name, version, key[: len(HISTORY_PREFIX)]) == ("version-tag", "m", "1", HISTORY_PREFIX)
    assert json.loads(value)["actor"] == "svc"
    assert transitions.record_event(reg.b, "m", 1, "monitor", "d", reason="r", actor="ann").actor == "ann"
    with pytest.raises(InvalidInputError) as caught:
        transitions.record_event(reg.b, "m", 1, "status", "d", reason="r", actor=None)
    assert caught.value.message == (
        "history action 'status' cannot be recorded; use one of deployment, canary, mirror, monitor"
    )
    with pytest.raises(NotFoundError):
        transitions.record_event(reg.b, "m", 9, "canary", "d", reason="r", actor=None)
    assert len(reg.log) == 2


# ------------------------------------------------------------------ registration.py


def new_registry(**versions: dict[str, str]) -> Registry:
    reg = Registry({})
    reg.client.exists = bool(versions)
    reg.client.versions = {int(n.removeprefix("v")): tags for n, tags in versions.items()}
    reg.client.committed_then_lost = []
    return reg


def register(reg: Registry, uri: str = "s3://b/m/1", run_key: str = "key-1", **tags: Any) -> VersionInfo:
    return registration.register(reg.b, "m", uri, run_id="run-9", run_key=run_key, tags=tags)


def test_registering_creates_the_model_and_a_pending_version_with_every_tag_and_its_history() -> None:
    reg = new_registry()
    info = register(reg, auc=0.91, branch="hpo")
    assert (info.name, info.version, info.status) == ("m", 1, PENDING)
    tags = {
        "auc": "0.91",
        "branch": "hpo",
        STATUS_TAG: PENDING,
        "hybridml.run_key": "key-1",
        "hybridml.model_uri": "s3://b/m/1",
    }
    assert reg.writes() == [
        ("create-model", "m"),
        (
            "create-version",
            "m",
            "s3://b/m/1",
            1,
            {"run_id": "run-9", "tags": tags, "await_creation_for": 0, "model_id": None},
        ),
        (
            "version-tag",
            "m",
            "1",
            "history",
            HistoryEvent(iso_utc(EPOCH + 1), "svc", "registered", "m", 1, "registered from s3://b/m/1", ""),
        ),
    ]
    assert reg.sleeps == []


def test_a_logged_model_uri_is_resolved_with_this_client() -> None:
    reg = new_registry()
    register(reg, uri="models:/m-0a1f")
    created = [w for w in reg.log if w[0] == "create-version"]
    assert reg.log[1] == ("logged-model", "m-0a1f")
    assert (created[0][2], created[0][4]["model_id"]) == ("s3://art/m-0a1f", "m-0a1f")
    assert created[0][4]["tags"]["hybridml.model_uri"] == "models:/m-0a1f"
    for uri in ("models:/m-XYZ", "models:/churn/1", "xmodels:/m-0a1f"):
        assert registration.source_of(reg.b, uri) == (uri, None)


def test_a_run_key_already_registered_returns_its_oldest_version_and_creates_nothing() -> None:
    reg = new_registry(
        v1={"hybridml.run_key": "other"},
        v2={"hybridml.run_key": "key-1", STATUS_TAG: APPROVED},
        v3={"hybridml.run_key": "key-1"},
        v4={},
    )
    info = register(reg)
    assert (info.version, info.status) == (2, APPROVED)
    assert reg.log == []
    assert register(reg, run_key="key-2").version == 5


def test_registration_refuses_a_bad_name_or_run_key_before_any_call() -> None:
    reg = new_registry()
    with pytest.raises(InvalidInputError, match=r"^invalid model name 'a/b'"):
        registration.register(reg.b, "a/b", "s3://x", run_id="r", run_key="k", tags={})
    with pytest.raises(InvalidInputError, match=r"^invalid run key \"it's\""):
        register(reg, run_key="it's")
    assert reg.log == []


def test_a_lost_race_on_create_is_retried_once_and_makes_one_version() -> None:
    reg = new_registry()
    reg.client.inject["create_model_version"] = [race()]
    assert register(reg).version == 1
    assert [w[0] for w in reg.log] == ["create-model", "create-version", "version-tag"]
    assert len(reg.sleeps) == 1


def test_a_create_whose_answer_was_lost_returns_the_committed_version_instead_of_a_twin() -> None:
    reg = new_registry()
    reg.client.committed_then_lost = [race()]
    assert register(reg).version == 1
    assert sorted(reg.client.versions) == [1]
    assert reg.sleeps == []
    reg = new_registry()
    reg.client.committed_then_lost = [ValueError("a bug")]
    with pytest.raises(ValueError, match=r"^a bug$"):
        register(reg)


def test_a_lost_create_with_nothing_committed_is_judged_by_the_retry_loop() -> None:
    reg = new_registry()
    reg.client.inject["create_model_version"] = [race(), race(), race("still")]
    with pytest.raises(ConflictError) as caught:
        register(reg)
    assert caught.value.message == (
        "new version of model 'm' (run key 'key-1'): backend still contended after 3 attempts: still"
    )
    assert reg.client.versions == {}


def test_a_look_up_that_hits_the_same_contention_lets_the_retry_loop_judge_the_first_failure() -> None:
    reg = new_registry()
    first = race("create lost")
    calls = {"n": 0}

    def create(name: str, source: str, **kw: Any) -> SimpleNamespace:
        calls["n"] += 1
        if calls["n"] == 1:
            reg.client.inject["get_registered_model"] = [race("look-up lost")]
            raise first
        return FakeClient.create_model_version(reg.client, name, source, **kw)

    reg.client.create_model_version = create  # type: ignore[method-assign]
    assert register(reg).version == 1
    assert (calls["n"], len(reg.sleeps)) == (2, 1)


def test_a_model_created_meanwhile_by_another_registration_is_success() -> None:
    reg = new_registry()

    def beaten(name: str) -> None:
        reg.client.exists = True  # the other registration's
        raise MlflowException("exists", error_code=RESOURCE_ALREADY_EXISTS)

    reg.client.create_registered_model = beaten  # type: ignore[method-assign]
    assert register(reg).version == 1
    assert reg.sleeps == []
    reg = new_registry()
    reg.client.inject["create_registered_model"] = [MlflowException("bad name", error_code=INVALID_PARAMETER_VALUE)]
    with pytest.raises(InvalidInputError, match=r"^registered model 'm': bad name$"):
        register(reg)
    reg = new_registry()
    reg.client.inject["create_registered_model"] = [ValueError("a bug")]
    with pytest.raises(ValueError, match=r"^a bug$"):
        registration.ensure_model(reg.b, "m")


def test_ensure_model_creates_nothing_when_the_model_exists_and_stops_on_other_look_up_failures() -> None:
    reg = new_registry(v1={})
    registration.ensure_model(reg.b, "m")
    assert reg.log == []
    reg = new_registry()
    reg.client.inject["get_registered_model"] = [MlflowException("bad", error_code=INVALID_PARAMETER_VALUE)]
    with pytest.raises(InvalidInputError, match=r"^registered model 'm': bad$"):
        registration.ensure_model(reg.b, "m")
    assert reg.log == []
    reg = new_registry()
    reg.client.inject["get_registered_model"] = [ValueError("a bug")]
    with pytest.raises(ValueError, match=r"^a bug$"):
        registration.ensure_model(reg.b, "m")


def test_find_by_run_key_is_none_for_a_missing_model() -> None:
    assert registration.find_by_run_key(new_registry().b, "m", "key-1") is None


def test_look_up_failures_name_what_was_looked_up() -> None:
    reg = new_registry()
    reg.client.inject["get_registered_model"] = [MlflowException("bad", error_code=INVALID_PARAMETER_VALUE)]
    with pytest.raises(InvalidInputError, match=r"^model 'm': bad$"):
        register(reg)
    reg = new_registry()

    def missing(model_id: str) -> None:
        raise MlflowException("no such id", error_code=RESOURCE_DOES_NOT_EXIST)

    reg.client.get_logged_model = missing  # type: ignore[method-assign]
    with pytest.raises(NotFoundError, match=r"^logged model m-0a not found: no such id$"):
        register(reg, uri="models:/m-0a")
    assert reg.client.versions == {}
