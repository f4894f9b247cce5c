"""Registry behaviour that does not depend on the backend, checked on the fastest one (a direct SQLite URI)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pytest

from hybridml.core.approval import APPROVED, PENDING, REJECTED
from hybridml.core.data import builtin_breast_cancer
from hybridml.core.model import PROFILE_FILE, fit, load_estimator, positive_scores, save_bundle
from hybridml.core.profile import build_profile
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError
from hybridml.registry import CHAMPION, HISTORY_PREFIX, MAX_REASON_CHARS, STATUS_TAG, Registry
from hybridml.registry._mlflow.backend import Backend as MlflowBackend
from hybridml.registry._mlflow.lock import LOCK_PREFIX, Claim
from tests.integration.registry.races import forced_race, replay
from tests.mlflow_errors import as_sql_store_raises, mlflow_error, sqlite_busy

if TYPE_CHECKING:  # fixtures' types only; conftest modules are not importable by name
    from conftest import Backend, Trained

pytestmark = pytest.mark.integration

FROZEN = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture(scope="module")
def logged(sqlite_backend: Backend, trained: Trained) -> tuple[str, str]:
    """(run id, model URI) of one logged bundle, shared: registering needs no new artifacts."""
    run_id = sqlite_backend.new_run()
    return run_id, Registry(sqlite_backend.uri, user="pipeline").log_bundle(run_id, trained.bundle)


@pytest.fixture
def reg(sqlite_backend: Backend) -> Registry:
    return Registry(sqlite_backend.uri, user="pipeline", clock=lambda: FROZEN)


def register(reg: Registry, name: str, logged: tuple[str, str], key: str) -> int:
    run_id, uri = logged
    return reg.register(name, uri, run_id=run_id, run_key=key, tags={"roc_auc": "0.95"}).version


def test_resolve_references(reg: Registry, model_name: str, logged: tuple[str, str]) -> None:
    for key in ("a", "b", "c"):
        register(reg, model_name, logged, key)
    reg.set_status(model_name, 2, APPROVED, reason="ok")

    assert reg.resolve(f"{model_name}@{CHAMPION}").version == 2
    assert reg.resolve(f"{model_name}/1").version == 1
    assert reg.resolve(model_name).version == 3
    assert reg.resolve(f"models:/{model_name}/3").version == 3
    assert reg.resolve(f" {model_name}@champion ").version == 2

    for bad in ("", "@champion", f"{model_name}@", f"{model_name}/", f"{model_name}/x", f"{model_name}/1/2", "a@b@c"):
        with pytest.raises(InvalidInputError, match="malformed model reference"):
            reg.resolve(bad)
    with pytest.raises(InvalidInputError):
        reg.resolve(f"{model_name}/0")
    with pytest.raises(NotFoundError, match=model_name):
        reg.resolve(f"{model_name}@challenger")
    with pytest.raises(NotFoundError, match=f"model '{model_name}' has no version 9"):
        reg.resolve(f"{model_name}/9")
    with pytest.raises(NotFoundError, match="model 'nope' not found"):
        reg.resolve("nope")


def test_errors_name_model_and_version(reg: Registry, model_name: str, logged: tuple[str, str]) -> None:
    register(reg, model_name, logged, "k")
    with pytest.raises(NotFoundError, match=f"^model '{model_name}' has no version 7$"):
        reg.get_version(model_name, 7)
    with pytest.raises(NotFoundError, match=r"^model 'nope' not found$"):
        reg.get_version("nope", 1)
    with pytest.raises(NotFoundError, match=r"^model 'nope' not found$"):
        reg.list_versions("nope")
    with pytest.raises(NotFoundError):
        reg.history("nope")
    with pytest.raises(InvalidInputError, match="invalid model version"):
        reg.get_version(model_name, "one")
    with pytest.raises(InvalidInputError, match="invalid model name"):
        register(reg, "bad/name", logged, "k")
    with pytest.raises(InvalidInputError, match="invalid run key"):
        register(reg, model_name, logged, "it's")


def test_invalid_status_changes_nothing(reg: Registry, model_name: str, logged: tuple[str, str]) -> None:
    register(reg, model_name, logged, "k")
    with pytest.raises(InvalidInputError, match="unknown approval status 'Deployed'"):
        reg.set_status(model_name, 1, "Deployed", reason="?")
    assert reg.get_version(model_name, 1).status == PENDING
    assert [e.action for e in reg.history(model_name)] == ["registered"]


def test_history_records_actor_reason_and_time(reg: Registry, model_name: str, logged: tuple[str, str]) -> None:
    register(reg, model_name, logged, "a")
    register(reg, model_name, logged, "b")
    reg.set_status(model_name, 1, APPROVED, reason="first good one", actor="alice")
    reg.set_alias(model_name, "challenger", 2, reason="shadow traffic")
    reg.set_alias(model_name, "challenger", 1, reason="roll back", actor="bob")

    events = reg.history(model_name)
    assert {e.at for e in events} == {"2023-11-14T22:13:20.000Z"}  # the injected clock
    # A frozen clock still keeps the order in which one process wrote the events.
    assert [(e.action, e.version, e.detail, e.actor, e.reason) for e in events] == [
        ("registered", 1, f"registered from {logged[1]}", "pipeline", ""),
        ("registered", 2, f"registered from {logged[1]}", "pipeline", ""),
        ("status", 1, f"{PENDING} -> {APPROVED}", "alice", "first good one"),
        ("alias", 1, f"{CHAMPION}: none -> 1", "alice", "first good one"),
        ("alias", 2, "challenger: none -> 2", "pipeline", "shadow traffic"),
        ("alias", 1, "challenger: 2 -> 1", "bob", "roll back"),
    ]
    assert all(e.model == model_name for e in events)
    # One version's history: its own events and the alias moves that involved it.
    assert [e.detail for e in reg.history(model_name, 2)] == [
        f"registered from {logged[1]}",
        "challenger: none -> 2",
        "challenger: 2 -> 1",
    ]
    assert reg.aliases(model_name) == {CHAMPION: 1, "challenger": 1}
    # History tags stay out of the version's tags.
    assert not any(k.startswith(HISTORY_PREFIX) for k in reg.get_version(model_name, 1).tags)


def test_long_reason_is_truncated(
    reg: Registry, model_name: str, logged: tuple[str, str], sqlite_backend: Backend
) -> None:
    register(reg, model_name, logged, "k")
    reg.set_status(model_name, 1, APPROVED, reason="x" * 20_000)
    events = reg.history(model_name)
    assert all(len(e.reason) <= MAX_REASON_CHARS for e in events)
    assert events[-1].reason.endswith("…")
    raw = mlflow.MlflowClient(sqlite_backend.uri).get_registered_model(model_name).tags
    assert all(len(v) < 5000 for k, v in raw.items() if k.startswith(HISTORY_PREFIX))
    assert json.loads(next(v for k, v in raw.items() if k.startswith(HISTORY_PREFIX)))["action"] == "alias"


def test_alias_rules_of_mlflow_become_invalid_input(reg: Registry, model_name: str, logged: tuple[str, str]) -> None:
    register(reg, model_name, logged, "k")
    with pytest.raises(InvalidInputError, match=model_name):
        reg.set_alias(model_name, "latest", 1, reason="reserved by MLflow")
    assert reg.aliases(model_name) == {}


def test_tags_listing_and_approval_again(reg: Registry, model_name: str, logged: tuple[str, str]) -> None:
    register(reg, model_name, logged, "a")
    register(reg, model_name, logged, "b")
    reg.set_version_tag(model_name, 2, "deployed_to", "staging")
    assert reg.get_version(model_name, "2").tags["deployed_to"] == "staging"
    assert reg.get_version(model_name, 2).tags[STATUS_TAG] == PENDING
    reg.set_status(model_name, 2, APPROVED, reason="ok")
    # Approving the champion again records the decision but does not "move" the alias.
    reg.set_status(model_name, 2, APPROVED, reason="re-reviewed")
    assert [e.detail for e in reg.history(model_name) if e.action == "alias"] == [f"{CHAMPION}: none -> 2"]

    summary = next(m for m in reg.list_models() if m.name == model_name)
    assert (summary.latest_version, summary.n_versions, summary.aliases) == (2, 2, {CHAMPION: 2})
    versions = reg.list_versions(model_name)
    assert [(v.version, v.aliases, v.roc_auc) for v in versions] == [(1, (), 0.95), (2, (CHAMPION,), 0.95)]


def test_sklearn_bundle_round_trips_as_skops(
    reg: Registry, model_name: str, sqlite_backend: Backend, trained: Trained, tmp_path: Path
) -> None:
    X = trained.X[:, :5]
    y = (trained.scores > 0.5).astype(int)
    schema = replace(trained.bundle.schema, features=trained.bundle.schema.features[:5])
    model = fit("logistic_regression", {"C": 1.0}, X, y)
    bundle = save_bundle(model, "logistic_regression", {"C": 1.0}, schema, tmp_path / "lr")
    run_id = sqlite_backend.new_run()
    uri = reg.log_bundle(run_id, bundle)
    version = reg.register(model_name, uri, run_id=run_id, run_key="lr", tags={}).version

    downloaded = reg.download(model_name, version, tmp_path / "download")
    assert downloaded.model_file == "model.skops"
    assert not list((tmp_path / "download").glob("*.pkl"))
    np.testing.assert_allclose(positive_scores(load_estimator(downloaded), X), positive_scores(model, X))


def test_a_logged_bundle_keeps_its_reference_profile(
    reg: Registry, model_name: str, sqlite_backend: Backend, trained: Trained, tmp_path: Path
) -> None:
    frame, _ = builtin_breast_cancer()
    reference = build_profile(frame, trained.bundle.schema, trained.scores)
    bundle = save_bundle(
        load_estimator(trained.bundle),
        "xgboost",
        trained.bundle.params,
        trained.bundle.schema,
        tmp_path / "b",
        profile=reference,
    )
    run_id = sqlite_backend.new_run()
    version = reg.register(model_name, reg.log_bundle(run_id, bundle), run_id=run_id, run_key="p", tags={})
    downloaded = reg.download(model_name, version.version, tmp_path / "download")
    assert (tmp_path / "download" / PROFILE_FILE).is_file()
    assert downloaded.profile == reference


def test_registry_tags_are_changed_only_through_their_methods(
    reg: Registry, model_name: str, logged: tuple[str, str]
) -> None:
    register(reg, model_name, logged, "k")
    for key in (STATUS_TAG, f"{HISTORY_PREFIX}1-a"):
        with pytest.raises(InvalidInputError, match=f"tag '{key}' is kept by the registry itself"):
            reg.set_version_tag(model_name, 1, key, APPROVED)
    assert reg.get_version(model_name, 1).status == PENDING
    with pytest.raises(ConflictError, match="version 1 is PendingManualApproval; only an Approved version"):
        reg.set_alias(model_name, CHAMPION, 1, reason="skip the review")
    assert reg.aliases(model_name) == {}


# ------------------------------------------------------------------------- retries: only real races


def test_register_retries_one_injected_race_and_nothing_else(
    sqlite_backend: Backend, model_name: str, logged: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first create_model_version fails as MLflow fails when another writer holds SQLite: retried once."""
    sleeps: list[float] = []
    reg = Registry(sqlite_backend.uri, user="pipeline", sleep=sleeps.append)
    client = reg._b.client
    real = client.create_model_version
    calls: list[str] = []
    lost = as_sql_store_raises(sqlite_busy(tmp_path))

    def once_locked(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        if len(calls) == 1:
            raise lost
        return real(*args, **kwargs)

    monkeypatch.setattr(client, "create_model_version", once_locked)
    assert register(reg, model_name, logged, "k") == 1
    assert (len(calls), len(sleeps)) == (2, 1)
    assert [v.version for v in reg.list_versions(model_name)] == [1]

    # A refusal that is not a race is raised at once, on the first try.
    def refused(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        raise mlflow_error("Invalid source 'x'", "INVALID_PARAMETER_VALUE")

    monkeypatch.setattr(client, "create_model_version", refused)
    with pytest.raises(InvalidInputError, match=r"new version of model '.*' \(run key 'k2'\): Invalid source 'x'"):
        register(reg, model_name, logged, "k2")
    assert (len(calls), len(sleeps)) == (3, 1)
    assert [v.version for v in reg.list_versions(model_name)] == [1]


def test_register_never_creates_a_twin_when_the_answer_is_lost(
    sqlite_backend: Backend, model_name: str, logged: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write commits but its answer is a race error: the version is found by its run key, not made twice."""
    reg = Registry(sqlite_backend.uri, user="pipeline", sleep=lambda _: pytest.fail("nothing to retry"))
    client = reg._b.client
    real = client.create_model_version
    lost = as_sql_store_raises(sqlite_busy(tmp_path))

    def committed_then_lost(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise lost

    monkeypatch.setattr(client, "create_model_version", committed_then_lost)
    assert register(reg, model_name, logged, "k") == 1
    assert [v.version for v in reg.list_versions(model_name)] == [1]
    assert [e.action for e in reg.history(model_name)] == ["registered"]


# ----------------------------------------------------------------------------- the lock and its races


class _NoLock:
    """What the registry would be without its lock: the negative control of the race tests."""

    held = True

    def __enter__(self) -> _NoLock:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def check(self) -> None:
        return None


class Unlocked(Registry):
    def _lock(self, backend: MlflowBackend, name: str, actor: str) -> Any:
        return _NoLock()


def test_without_the_lock_the_forced_race_leaves_the_champion_on_a_rejected_version(
    sqlite_backend: Backend, model_name: str, logged: tuple[str, str]
) -> None:
    """Proves the hook really forces the interleaving: an unlocked registry ends in the state the lock prevents."""
    register(Registry(sqlite_backend.uri, user="pipeline"), model_name, logged, "k")
    bob = Unlocked(sqlite_backend.uri, user="bob")
    fired: list[str] = []

    def between_status_and_alias(point: str, details: dict[str, Any]) -> None:
        if point == "status-written" and not fired:
            fired.append(point)
            bob.set_status(model_name, 1, REJECTED, reason="bias found")

    Unlocked(sqlite_backend.uri, user="alice", hook=between_status_and_alias).set_status(
        model_name, 1, APPROVED, reason="good"
    )
    reg = Registry(sqlite_backend.uri, user="pipeline")
    assert reg.get_version(model_name, 1).status == REJECTED
    assert reg.aliases(model_name) == {CHAMPION: 1}  # the broken state
    with pytest.raises(AssertionError, match="champion at a non-approved version"):
        replay(reg, model_name)


@pytest.mark.parametrize("point", ["lock-acquired", "planned", "status-written"])
def test_with_the_lock_the_same_forced_race_is_serialised(
    sqlite_backend: Backend, model_name: str, logged: tuple[str, str], point: str
) -> None:
    register(Registry(sqlite_backend.uri, user="pipeline"), model_name, logged, "k")
    first, second, _ = forced_race(
        sqlite_backend.uri, model_name, ("alice", APPROVED, None), ("bob", REJECTED, None), point
    )
    assert (first.status, first.aliases) == (APPROVED, (CHAMPION,))
    assert (second.status, second.aliases) == (REJECTED, ())  # type: ignore[union-attr]
    events = replay(Registry(sqlite_backend.uri, user="pipeline"), model_name)
    assert [(e.actor, e.detail) for e in events[1:]] == [
        ("alice", f"{PENDING} -> {APPROVED}"),
        ("alice", f"{CHAMPION}: none -> 1"),
        ("bob", f"{APPROVED} -> {REJECTED}"),
        ("bob", f"{CHAMPION}: 1 -> none"),
    ]


def test_two_claims_written_at_once_are_settled_by_age(
    sqlite_backend: Backend, model_name: str, logged: tuple[str, str]
) -> None:
    """Both writers saw the lock free and both wrote a claim: the younger withdraws, the older goes first."""
    reg = Registry(sqlite_backend.uri, user="pipeline")
    register(reg, model_name, logged, "a")
    register(reg, model_name, logged, "b")
    points: dict[str, list[str]] = {"alice": [], "bob": []}
    alice_claimed, bob_claimed = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def bob_hook(point: str, details: dict[str, Any]) -> None:
        points["bob"].append(point)
        if point == "lock-claimed" and not bob_claimed.is_set():
            bob_claimed.set()
            assert alice_claimed.wait(30)  # hold on until alice's claim is written too

    def run_bob() -> None:
        try:
            Registry(sqlite_backend.uri, user="bob", hook=bob_hook).set_status(model_name, 2, APPROVED, reason="b")
        except BaseException as exc:
            errors.append(exc)

    bob = threading.Thread(target=run_bob)

    def alice_hook(point: str, details: dict[str, Any]) -> None:
        points["alice"].append(point)
        if point == "lock-free" and not bob.is_alive() and not bob_claimed.is_set():
            bob.start()
            assert bob_claimed.wait(30)  # bob saw the lock free too and claimed first
        if point == "lock-claimed":
            alice_claimed.set()

    Registry(sqlite_backend.uri, user="alice", hook=alice_hook).set_status(model_name, 1, APPROVED, reason="a")
    bob.join(60)
    assert not errors
    assert "lock-withdrew" in points["alice"] and "lock-withdrew" not in points["bob"]
    events = replay(reg, model_name)
    assert [(e.actor, e.detail) for e in events[2:]] == [
        ("bob", f"{PENDING} -> {APPROVED}"),
        ("bob", f"{CHAMPION}: none -> 2"),
        ("alice", f"{PENDING} -> {APPROVED}"),
        ("alice", f"{CHAMPION}: 2 -> 1"),
    ]
    assert not [
        k
        for k in mlflow.MlflowClient(sqlite_backend.uri).get_registered_model(model_name).tags
        if k.startswith(LOCK_PREFIX)
    ]


def write_claim(uri: str, name: str, holder: str, since: float, expires: float) -> str:
    claim = Claim(f"{holder}0000", holder, since, expires)
    mlflow.MlflowClient(uri).set_registered_model_tag(name, claim.key, claim.encode())
    return claim.key


def test_a_crashed_writers_claim_counts_until_it_expires(
    sqlite_backend: Backend, model_name: str, logged: tuple[str, str]
) -> None:
    register(Registry(sqlite_backend.uri, user="pipeline"), model_name, logged, "k")
    now = time.time()
    stale = write_claim(sqlite_backend.uri, model_name, "crashed", now - 120, now - 60)
    live = write_claim(sqlite_backend.uri, model_name, "ghost", now, now + 600)

    waiting = Registry(sqlite_backend.uri, user="alice", lock_wait_s=1.0)
    with pytest.raises(
        ConflictError, match=rf"^model '{model_name}' is being changed by ghost \(since .+Z\); gave up after 1 s"
    ):
        waiting.set_status(model_name, 1, APPROVED, reason="ok")
    tags = mlflow.MlflowClient(sqlite_backend.uri).get_registered_model(model_name).tags
    assert [k for k in tags if k.startswith(LOCK_PREFIX)] == [live]  # the stale claim went, ours was withdrawn
    assert waiting.get_version(model_name, 1).status == PENDING

    mlflow.MlflowClient(sqlite_backend.uri).delete_registered_model_tag(model_name, live)
    assert waiting.set_status(model_name, 1, APPROVED, reason="ok").status == APPROVED
    assert stale not in mlflow.MlflowClient(sqlite_backend.uri).get_registered_model(model_name).tags
