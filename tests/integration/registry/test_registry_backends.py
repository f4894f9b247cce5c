"""The registry adapter against real MLflow backends: direct SQLite, a server on SQLite, a server on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from hybridml.adapters.registry import CHAMPION, RUN_KEY_TAG, Registry, VersionInfo
from hybridml.core.approval import APPROVED, PENDING, REJECTED
from hybridml.core.model import load_estimator, positive_scores
from hybridml.errors import NotFoundError

if TYPE_CHECKING:  # fixtures' types only; conftest modules are not importable by name
    from conftest import Backend, Trained

pytestmark = pytest.mark.integration

N_CONCURRENT = 20


def lineage(i: int = 0) -> dict[str, str]:
    return {"roc_auc": f"0.9{i}", "data_hash": f"sha256:{i:064x}", "pipeline_run_id": f"p-{i}", "branch": "main"}


def test_lifecycle(backend: Backend, trained: Trained, model_name: str, tmp_path: Path) -> None:
    """Register, retry, approve, supersede, reject and download, as a pipeline and a reviewer would."""
    reg = Registry(backend.uri, user="pipeline")
    run_id = backend.new_run()
    uri = reg.log_bundle(run_id, trained.bundle)
    assert uri.startswith("models:/m-")

    v1 = reg.register(model_name, uri, run_id=run_id, run_key="run-1/register", tags=lineage(1))
    assert (v1.version, v1.status, v1.aliases) == (1, PENDING, ())
    assert (v1.roc_auc, v1.data_hash, v1.pipeline_run_id, v1.branch) == (0.91, f"sha256:{1:064x}", "p-1", "main")
    assert v1.run_id == run_id
    assert v1.tags[RUN_KEY_TAG] == "run-1/register"

    # A retried step registers again with the same run key: same version, nothing new.
    again = reg.register(model_name, uri, run_id=run_id, run_key="run-1/register", tags=lineage(1))
    assert again.version == 1
    assert len(reg.list_versions(model_name)) == 1

    approved = reg.set_status(model_name, 1, APPROVED, reason="beats threshold", actor="alice")
    assert approved.status == APPROVED
    assert approved.aliases == (CHAMPION,)
    assert reg.aliases(model_name) == {CHAMPION: 1}

    v2 = reg.register(model_name, uri, run_id=run_id, run_key="run-2/register", tags=lineage(2))
    assert v2.version == 2
    reg.set_status(model_name, 2, APPROVED, reason="better model", actor="bob")
    champion = reg.champion(model_name)
    assert champion is not None
    assert champion.version == 2
    assert reg.get_version(model_name, 1).aliases == ()

    reg.set_status(model_name, 2, REJECTED, reason="bad in production", actor="carol")
    assert reg.champion(model_name) is None
    assert reg.get_version(model_name, 2).status == REJECTED

    events = [(e.action, e.version, e.detail, e.actor, e.reason) for e in reg.history(model_name)]
    assert events == [
        ("registered", 1, f"registered from {uri}", "pipeline", ""),
        ("status", 1, f"{PENDING} -> {APPROVED}", "alice", "beats threshold"),
        ("alias", 1, f"{CHAMPION}: none -> 1", "alice", "beats threshold"),
        ("registered", 2, f"registered from {uri}", "pipeline", ""),
        ("status", 2, f"{PENDING} -> {APPROVED}", "bob", "better model"),
        ("alias", 2, f"{CHAMPION}: 1 -> 2", "bob", "better model"),
        ("status", 2, f"{APPROVED} -> {REJECTED}", "carol", "bad in production"),
        ("alias", None, f"{CHAMPION}: 2 -> none", "carol", "bad in production"),
    ]

    bundle = reg.download(model_name, 1, tmp_path / "download")
    assert bundle.path == tmp_path / "download"
    assert (bundle.model_type, bundle.schema, bundle.params) == (
        "xgboost",
        trained.bundle.schema,
        trained.bundle.params,
    )
    np.testing.assert_allclose(positive_scores(load_estimator(bundle), trained.X), trained.scores, rtol=1e-6)
    assert (tmp_path / "download" / "MLmodel").is_file()


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


def test_concurrent_registrations_threads(backend: Backend, trained: Trained, model_name: str) -> None:
    """20 registrations started at once, model not yet created: 20 distinct versions, no error."""
    reg = Registry(backend.uri, user="pipeline")
    run_id = backend.new_run()
    uri = reg.log_bundle(run_id, trained.bundle)
    keys = [f"run-{i}/register" for i in range(N_CONCURRENT)]
    returned = register_many(backend.uri, model_name, uri, run_id, keys)
    assert_distinct_versions(reg, model_name, returned, keys)


def _child(uri: str, name: str, model_uri: str, run_id: str, keys: list[str], out: multiprocessing.Queue) -> None:
    try:
        out.put(register_many(uri, name, model_uri, run_id, keys))
    except BaseException as exc:
        out.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_concurrent_registrations_processes(backend: Backend, trained: Trained, model_name: str) -> None:
    """4 processes x 5 threads against one server: 20 distinct versions."""
    if backend.kind == "sqlite":
        pytest.skip("forked children would share the parent's SQLite connections; covered by the thread test")
    reg = Registry(backend.uri, user="pipeline")
    run_id = backend.new_run()
    uri = reg.log_bundle(run_id, trained.bundle)
    keys = [f"run-{i}/register" for i in range(N_CONCURRENT)]
    # fork: children reuse the imported modules, so they start in milliseconds, not seconds.
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(backend.uri, model_name, uri, run_id, keys[i::4], out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [r for r in results if isinstance(r, str)]
    assert not errors, errors
    returned = [v for r in results for v in r]
    assert_distinct_versions(reg, model_name, returned, keys)


def test_missing_version_changes_nothing(backend: Backend, trained: Trained, model_name: str) -> None:
    reg = Registry(backend.uri, user="pipeline")
    run_id = backend.new_run()
    uri = reg.log_bundle(run_id, trained.bundle)
    reg.register(model_name, uri, run_id=run_id, run_key="k", tags=lineage())
    reg.set_status(model_name, 1, APPROVED, reason="ok")
    before = (len(reg.list_versions(model_name)), reg.aliases(model_name), len(reg.history(model_name)))

    with pytest.raises(NotFoundError, match=rf"model '{model_name}' has no version 7"):
        reg.set_status(model_name, 7, APPROVED, reason="typo")
    with pytest.raises(NotFoundError, match=rf"model '{model_name}' has no version 7"):
        reg.set_alias(model_name, "challenger", 7, reason="typo")
    with pytest.raises(NotFoundError, match="model 'no-such-model' not found"):
        reg.set_status("no-such-model", 1, APPROVED, reason="typo")

    after = (len(reg.list_versions(model_name)), reg.aliases(model_name), len(reg.history(model_name)))
    assert after == before
