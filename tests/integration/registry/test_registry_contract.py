"""The ModelRegistry contract, one suite run on every backend: direct SQLite, a server on SQLite, one on PostgreSQL.

Like Optuna's storage tests: every test takes the parametrised ``backend`` fixture, so a new backend runs the
whole contract by being added to ``conftest.BACKENDS``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from hybridml.core.approval import APPROVED, PENDING, REJECTED
from hybridml.core.model import load_estimator, positive_scores
from hybridml.core.naming import RULE
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError
from hybridml.registry import CHAMPION, RUN_KEY_TAG, HistoryEvent, ModelRegistry, Registry, VersionInfo
from hybridml.registry._mlflow.history import iso_utc
from tests.integration.registry.races import forced_race, replay

if TYPE_CHECKING:  # fixtures' types only; conftest modules are not importable by name
    from conftest import Backend, Trained

pytestmark = pytest.mark.integration

N_CONCURRENT = 20
FROZEN = 1_700_000_000.0


@pytest.fixture(scope="module")
def logged(backend: Backend, trained: Trained) -> tuple[str, str]:
    """(run id, model URI) of one bundle logged on this backend; registering needs no new artifacts."""
    run_id = backend.new_run()
    return run_id, Registry(backend.uri, user="pipeline").log_bundle(run_id, trained.bundle)


def lineage(i: int = 0) -> dict[str, str]:
    return {"roc_auc": f"0.9{i}", "data_hash": f"sha256:{i:064x}", "pipeline_run_id": f"p-{i}", "branch": "main"}


def register(reg: ModelRegistry, name: str, logged: tuple[str, str], key: str, i: int = 0) -> int:
    run_id, uri = logged
    return reg.register(name, uri, run_id=run_id, run_key=key, tags=lineage(i)).version


# ------------------------------------------------------------------------------- lifecycle and history


def test_lifecycle_champion_rule_and_every_history_field(
    backend: Backend, trained: Trained, model_name: str, tmp_path: Path
) -> None:
    """Register, retry, approve, supersede, reject and download, as a pipeline and reviewers would."""
    ticks = itertools.count()
    reg = Registry(backend.uri, user="pipeline", clock=lambda: FROZEN + next(ticks))
    assert isinstance(reg, ModelRegistry)
    run_id = backend.new_run()
    uri = reg.log_bundle(run_id, trained.bundle)
    assert uri.startswith("models:/m-")

    v1 = reg.register(model_name, uri, run_id=run_id, run_key="run-1/register", tags=lineage(1))
    assert (v1.name, v1.version, v1.status, v1.aliases, v1.is_champion, v1.ref) == (
        model_name,
        1,
        PENDING,
        (),
        False,
        f"{model_name}/1",
    )
    assert (v1.roc_auc, v1.data_hash, v1.pipeline_run_id, v1.branch) == (0.91, f"sha256:{1:064x}", "p-1", "main")
    assert (v1.run_id, v1.model_id) == (run_id, uri.removeprefix("models:/"))
    assert v1.tags[RUN_KEY_TAG] == "run-1/register"
    assert v1.source and v1.created_at > 0

    approved = reg.set_status(model_name, 1, APPROVED, reason="beats threshold", actor="alice")
    assert (approved.status, approved.aliases, approved.is_champion) == (APPROVED, (CHAMPION,), True)
    assert reg.aliases(model_name) == {CHAMPION: 1}

    v2 = reg.register(model_name, uri, run_id=run_id, run_key="run-2/register", tags=lineage(2))
    assert v2.version == 2
    reg.set_status(model_name, 2, APPROVED, reason="better model", actor="bob")
    champion = reg.champion(model_name)
    assert champion is not None
    assert champion.version == 2
    assert reg.get_version(model_name, 1).aliases == ()
    assert reg.get_version(model_name, 1).status == APPROVED

    rejected = reg.set_status(model_name, 2, REJECTED, reason="bad in production", actor="carol")
    assert (rejected.status, rejected.aliases) == (REJECTED, ())
    assert reg.champion(model_name) is None
    with pytest.raises(ConflictError, match=f"model '{model_name}': version 2 is Rejected; only an Approved"):
        reg.set_alias(model_name, CHAMPION, 2, reason="sneak it back")
    with pytest.raises(ConflictError, match="version 2 is Rejected; it cannot become PendingManualApproval"):
        reg.set_status(model_name, 2, PENDING, reason="undo")

    at = [iso_utc(FROZEN + i) for i in range(8)]
    expected = [
        HistoryEvent(at[0], "pipeline", "registered", model_name, 1, f"registered from {uri}", ""),
        HistoryEvent(at[1], "alice", "status", model_name, 1, f"{PENDING} -> {APPROVED}", "beats threshold"),
        HistoryEvent(at[2], "alice", "alias", model_name, 1, f"{CHAMPION}: none -> 1", "beats threshold"),
        HistoryEvent(at[3], "pipeline", "registered", model_name, 2, f"registered from {uri}", ""),
        HistoryEvent(at[4], "bob", "status", model_name, 2, f"{PENDING} -> {APPROVED}", "better model"),
        HistoryEvent(at[5], "bob", "alias", model_name, 2, f"{CHAMPION}: 1 -> 2", "better model"),
        HistoryEvent(at[6], "carol", "status", model_name, 2, f"{APPROVED} -> {REJECTED}", "bad in production"),
        HistoryEvent(at[7], "carol", "alias", model_name, None, f"{CHAMPION}: 2 -> none", "bad in production"),
    ]
    assert replay(reg, model_name) == expected
    assert at[0] == "2023-11-14T22:13:20.000Z"
    # One version's history: its own events and the alias moves that involved it.
    assert reg.history(model_name, 1) == [expected[i] for i in (0, 1, 2, 5)]

    bundle = reg.download(model_name, 1, tmp_path / "download")
    assert bundle.path == tmp_path / "download"
    assert (bundle.model_type, bundle.params) == ("xgboost", trained.bundle.params)
    assert bundle.schema == trained.bundle.schema
    np.testing.assert_allclose(positive_scores(load_estimator(bundle), trained.X), trained.scores, rtol=1e-6)


def test_register_is_idempotent_per_run_key_and_refuses_bad_names(
    backend: Backend, logged: tuple[str, str], model_name: str
) -> None:
    reg = Registry(backend.uri, user="pipeline")
    first = reg.register(model_name, logged[1], run_id=logged[0], run_key="run-1/register", tags=lineage(1))
    again = reg.register(model_name, logged[1], run_id=logged[0], run_key="run-1/register", tags=lineage(2))
    assert again == first  # the same version, tags as first registered: nothing new was written
    assert [v.version for v in reg.list_versions(model_name)] == [1]
    assert [e.action for e in reg.history(model_name)] == ["registered"]

    for bad in ("My Model", "model_1", "x" * 41, "9lives", "ends-"):
        with pytest.raises(InvalidInputError, match=f"invalid model name '{bad}': use ") as info:
            reg.register(bad, logged[1], run_id=logged[0], run_key="k", tags={})
        assert str(info.value).endswith(RULE)
    with pytest.raises(NotFoundError, match="model 'My Model' not found"):
        reg.list_versions("My Model")  # refused before anything was created


def test_missing_things_are_not_found_and_change_nothing(
    backend: Backend, logged: tuple[str, str], model_name: str
) -> None:
    reg = Registry(backend.uri, user="pipeline")
    register(reg, model_name, logged, "k")
    reg.set_status(model_name, 1, APPROVED, reason="ok")
    before = (reg.list_versions(model_name), reg.aliases(model_name), reg.history(model_name))

    with pytest.raises(NotFoundError, match=rf"^model '{model_name}' has no version 7$"):
        reg.set_status(model_name, 7, APPROVED, reason="typo")
    with pytest.raises(NotFoundError, match=rf"^model '{model_name}' has no version 7$"):
        reg.set_alias(model_name, "challenger", 7, reason="typo")
    with pytest.raises(NotFoundError, match=rf"^model '{model_name}' has no version 7$"):
        reg.get_version(model_name, 7)
    with pytest.raises(NotFoundError, match=rf"^model '{model_name}' has no version 7$"):
        reg.history(model_name, 7)
    with pytest.raises(NotFoundError, match=rf"^model '{model_name}' has no alias 'challenger'$"):
        reg.resolve(f"{model_name}@challenger")
    for call in (
        lambda: reg.set_status("no-such-model", 1, APPROVED, reason="typo"),
        lambda: reg.get_version("no-such-model", 1),
        lambda: reg.list_versions("no-such-model"),
        lambda: reg.aliases("no-such-model"),
        lambda: reg.champion("no-such-model"),
        lambda: reg.history("no-such-model"),
    ):
        with pytest.raises(NotFoundError, match=r"^model 'no-such-model' not found$"):
            call()
    with pytest.raises(InvalidInputError, match="unknown approval status 'Deployed'"):
        reg.set_status(model_name, 1, "Deployed", reason="?")
    with pytest.raises(InvalidInputError, match="invalid model version 'one'"):
        reg.get_version(model_name, "one")

    assert (reg.list_versions(model_name), reg.aliases(model_name), reg.history(model_name)) == before


def test_recorded_events_join_the_history_and_refusals_write_nothing(
    backend: Backend, logged: tuple[str, str], model_name: str
) -> None:
    reg = Registry(backend.uri, user="pipeline")
    register(reg, model_name, logged, "k")
    reg.set_status(model_name, 1, APPROVED, reason="ok")
    event = reg.record_event(model_name, 1, "canary", "promote", reason='{"canary_auc": 0.91}', actor="canary-analysis")
    assert (event.action, event.version, event.detail, event.reason, event.actor, event.model) == (
        "canary", 1, "promote", '{"canary_auc": 0.91}', "canary-analysis", model_name,
    )  # fmt: skip
    assert event.at.endswith("Z")
    history = reg.history(model_name, 1)
    assert [e.action for e in history] == ["registered", "status", "alias", "canary"]
    assert history[-1] == event
    assert reg.record_event(model_name, "1", "deployment", "local: applied 100%").actor == "pipeline"
    assert reg.get_version(model_name, 1).status == APPROVED  # a recorded event changes no state
    before = reg.history(model_name)

    for action in ("status", "alias", "registered", "deploy"):
        with pytest.raises(InvalidInputError, match=f"history action '{action}' cannot be recorded"):
            reg.record_event(model_name, 1, action, "x")
    with pytest.raises(NotFoundError, match=rf"^model '{model_name}' has no version 7$"):
        reg.record_event(model_name, 7, "canary", "x")
    with pytest.raises(NotFoundError, match=r"^model 'no-such-model' not found$"):
        reg.record_event("no-such-model", 1, "canary", "x")
    assert reg.history(model_name) == before


# ------------------------------------------------------------------------------------- concurrency


def register_many(uri: str, name: str, model_uri: str, run_id: str, keys: list[str]) -> list[int]:
    """Register one version per key, all at once, each thread with its own Registry (own client)."""

    def one(key: str) -> int:
        return (
            Registry(uri, user="pipeline").register(name, model_uri, run_id=run_id, run_key=key, tags=lineage()).version
        )

    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        return list(pool.map(one, keys))


def assert_distinct_versions(reg: Registry, name: str, returned: list[int], keys: list[str]) -> None:
    assert sorted(returned) == list(range(1, len(keys) + 1))
    versions: list[VersionInfo] = reg.list_versions(name)
    assert [v.version for v in versions] == list(range(1, len(keys) + 1))
    assert sorted(v.tags[RUN_KEY_TAG] for v in versions) == sorted(keys)
    assert {v.status for v in versions} == {PENDING}
    registered = [e for e in reg.history(name) if e.action == "registered"]
    assert sorted(e.version or 0 for e in registered) == list(range(1, len(keys) + 1))


def test_concurrent_registrations_threads(backend: Backend, logged: tuple[str, str], model_name: str) -> None:
    """20 registrations started at once, model not yet created: 20 distinct versions, no error."""
    keys = [f"run-{i}/register" for i in range(N_CONCURRENT)]
    returned = register_many(backend.uri, model_name, logged[1], logged[0], keys)
    assert_distinct_versions(Registry(backend.uri, user="pipeline"), model_name, returned, keys)


def _in_child(work: Any, out: Any, *args: Any) -> None:
    try:
        out.put(work(*args))
    except BaseException as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def in_processes(work: Any, arg_lists: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``work(*args)`` in one forked process per argument list; return their results."""
    # fork: children reuse the imported modules, so they start in milliseconds, not seconds.
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_in_child, args=(work, out, *args)) for args in arg_lists]
    for p in procs:
        p.start()
    results = [out.get(timeout=150) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [r for r in results if isinstance(r, str)]
    assert not errors, errors
    return results


def needs_server(backend: Backend) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    if backend.kind == "sqlite":
        pytest.skip("forked children would share the parent's SQLite connections; covered by the thread tests")


def test_concurrent_registrations_processes(backend: Backend, logged: tuple[str, str], model_name: str) -> None:
    """4 processes x 5 threads against one server: 20 distinct versions."""
    needs_server(backend)
    keys = [f"run-{i}/register" for i in range(N_CONCURRENT)]
    shares = [(backend.uri, model_name, logged[1], logged[0], keys[i::4]) for i in range(4)]
    results = in_processes(register_many, shares)
    returned = [v for r in results for v in r]
    assert_distinct_versions(Registry(backend.uri, user="pipeline"), model_name, returned, keys)


# ------------------------------------------------------------------------ compare-and-set transitions

# (first writer's call, second writer's call, final status, final champion, history after registration)
# A call is (actor, status, expected status or None). The second call is injected at the first one's "planned"
# point: after the first writer read the state, before it wrote anything.
RACES = {
    "approve-then-reject": (
        ("alice", APPROVED, None),
        ("bob", REJECTED, None),
        REJECTED,
        None,
        [
            ("alice", "status", 1, f"{PENDING} -> {APPROVED}"),
            ("alice", "alias", 1, f"{CHAMPION}: none -> 1"),
            ("bob", "status", 1, f"{APPROVED} -> {REJECTED}"),
            ("bob", "alias", None, f"{CHAMPION}: 1 -> none"),
        ],
    ),
    "reject-then-approve": (
        ("alice", REJECTED, None),
        ("bob", APPROVED, None),
        APPROVED,
        1,
        [
            ("alice", "status", 1, f"{PENDING} -> {REJECTED}"),
            ("bob", "status", 1, f"{REJECTED} -> {APPROVED}"),
            ("bob", "alias", 1, f"{CHAMPION}: none -> 1"),
        ],
    ),
    "reject-then-approve-if-pending": (
        ("alice", REJECTED, None),
        ("bob", APPROVED, PENDING),
        REJECTED,
        None,
        [("alice", "status", 1, f"{PENDING} -> {REJECTED}")],
    ),
    "two-approvers": (
        ("alice", APPROVED, None),
        ("bob", APPROVED, None),
        APPROVED,
        1,
        [
            ("alice", "status", 1, f"{PENDING} -> {APPROVED}"),
            ("alice", "alias", 1, f"{CHAMPION}: none -> 1"),
            ("bob", "status", 1, f"{APPROVED} -> {APPROVED}"),
        ],
    ),
}


@pytest.mark.parametrize("race", list(RACES))
def test_forced_race_is_serialised(backend: Backend, logged: tuple[str, str], model_name: str, race: str) -> None:
    """The second writer arrives while the first is between its read and its write: it waits, then sees the
    first one's result, so the outcome is the serial one and the history one story."""
    first, second, final_status, final_champion, story = RACES[race]
    register(Registry(backend.uri, user="pipeline"), model_name, logged, "k")

    result, other, second_points = forced_race(backend.uri, model_name, first, second, "planned")

    assert result.status == first[1]
    assert "lock-busy" in second_points  # the interleaving really happened: the second writer was held back
    assert second_points.index("lock-busy") < second_points.index("lock-acquired")
    if second[2] is not None and second[2] != first[1]:
        assert isinstance(other, ConflictError)
        assert str(other) == (
            f"model '{model_name}' version 1 is {first[1]}, not {second[2]}: someone changed it meanwhile; "
            "nothing was changed"
        )
    else:
        assert isinstance(other, VersionInfo)
        assert other.status == final_status
    final = Registry(backend.uri, user="pipeline").get_version(model_name, 1)
    assert final.status == final_status
    assert final.aliases == ((CHAMPION,) if final_champion else ())
    events = replay(Registry(backend.uri, user="pipeline"), model_name)
    assert [(e.actor, e.action, e.version, e.detail) for e in events[1:]] == story
    assert all(e.reason == f"{e.actor}'s review" for e in events[1:])


def transition_all(uri: str, name: str, ops: list[tuple[int, str]], tag: str) -> list[str]:
    """Apply every (version, status) at once, one thread and Registry each; return the resulting statuses."""
    barrier = threading.Barrier(len(ops))

    def one(i: int) -> str:
        version, status = ops[i]
        reg = Registry(uri, user=f"{tag}-{i}")
        barrier.wait(30)
        return reg.set_status(name, version, status, reason=f"review {tag}-{i}").status

    with ThreadPoolExecutor(max_workers=len(ops)) as pool:
        return list(pool.map(one, range(len(ops))))


OPS = [(2, APPROVED), (2, REJECTED), (1, REJECTED), (2, APPROVED), (1, APPROVED), (2, REJECTED)]


def prepare_two_versions(uri: str, name: str, logged: tuple[str, str]) -> Registry:
    reg = Registry(uri, user="pipeline")
    register(reg, name, logged, "a")
    register(reg, name, logged, "b")
    reg.set_status(name, 1, APPROVED, reason="first champion")
    return reg


def test_concurrent_transitions_threads_keep_one_history(
    backend: Backend, logged: tuple[str, str], model_name: str
) -> None:
    """Approvals and rejections of two versions at once: every call lands, in some serial order."""
    reg = prepare_two_versions(backend.uri, model_name, logged)
    statuses = transition_all(backend.uri, model_name, OPS, "t")
    assert statuses == [status for _, status in OPS]  # each call returns the state it left
    events = replay(reg, model_name)
    changes = [e for e in events if e.action == "status"]
    assert len(changes) == 1 + len(OPS)
    assert sorted(e.reason for e in changes[1:]) == sorted(f"review t-{i}" for i in range(len(OPS)))


def test_concurrent_transitions_processes_keep_one_history(
    backend: Backend, logged: tuple[str, str], model_name: str
) -> None:
    """3 processes x 2 threads against one server."""
    needs_server(backend)
    reg = prepare_two_versions(backend.uri, model_name, logged)
    in_processes(transition_all, [(backend.uri, model_name, OPS[i::3], f"p{i}") for i in range(3)])
    events = replay(reg, model_name)
    assert len([e for e in events if e.action == "status"]) == 1 + len(OPS)
