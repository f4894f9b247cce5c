"""Registry behaviour that does not depend on the backend, checked on the fastest one (a direct SQLite URI)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pytest

from hybridml.adapters._history import HISTORY_PREFIX, MAX_REASON_CHARS
from hybridml.adapters.registry import CHAMPION, STATUS_TAG, Registry
from hybridml.core.approval import APPROVED, PENDING
from hybridml.core.model import fit, load_estimator, positive_scores, save_bundle
from hybridml.errors import InvalidInputError, NotFoundError

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
