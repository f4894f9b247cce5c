"""Registering versions: idempotent per run key, distinct version numbers under any number of writers."""

from __future__ import annotations

import re

from mlflow.entities.model_registry import ModelVersion

from hybridml.adapters.mlflow_client import Failure, classify, is_backend_error
from hybridml.core.approval import PENDING
from hybridml.core.naming import check_model_name
from hybridml.errors import HybridmlError, NotFoundError
from hybridml.registry._mlflow import history
from hybridml.registry._mlflow.backend import (
    MODEL_URI_TAG,
    RUN_KEY_TAG,
    STATUS_TAG,
    Backend,
    check_key,
    tag_value,
)
from hybridml.registry._mlflow.reads import get_version, to_info
from hybridml.registry.protocol import VersionInfo


def register(b: Backend, name: str, model_uri: str, *, run_id: str, run_key: str, tags: dict[str, str]) -> VersionInfo:
    """Register ``model_uri`` as a new version of ``name``, status ``PendingManualApproval``.

    Idempotent per ``run_key``: if a version of ``name`` already carries it, that version is returned and
    nothing is created (a retried pipeline step re-runs in full). Safe against concurrent registrations:
    MLflow allocates version numbers as MAX+1 under a unique key, and a registration that loses that race
    (or SQLite's single-writer lock) is retried.

    Raises:
        InvalidInputError: the name breaks the naming rule, or the run key or tags are malformed.
        ConflictError: the backend stayed contended after all retries.
    """
    check_model_name(name)
    check_key("run key", run_key)
    existing = find_by_run_key(b, name, run_key)
    if existing is not None:
        return to_info(existing)
    ensure_model(b, name)
    source, model_id = source_of(b, model_uri)
    all_tags = {str(k): tag_value(v) for k, v in tags.items()}
    all_tags.update({STATUS_TAG: PENDING, RUN_KEY_TAG: run_key, MODEL_URI_TAG: model_uri})
    what = f"new version of model {name!r} (run key {run_key!r})"

    def create() -> ModelVersion:
        try:
            return b.client.create_model_version(
                name, source, run_id=run_id, tags=all_tags, await_creation_for=0, model_id=model_id
            )
        except Exception as exc:
            if not is_backend_error(exc):
                raise
            # The failed call may have committed before its answer was lost: never create a twin.
            try:
                found = find_by_run_key(b, name, run_key)
            except HybridmlError:
                raise exc from None  # the look-up hit the same contention; let the retry loop judge exc
            if found is not None:
                return found
            raise

    created = b.retry(create, what)
    number = int(created.version)
    b.record(
        name, number, b.event(history.REGISTERED, number, f"registered from {model_uri}", "", None), on_model=False
    )
    return get_version(b, name, number)


def ensure_model(b: Backend, name: str) -> None:
    """Create the registered model ``name`` unless it exists (a concurrent creation is success too)."""

    def create() -> None:
        try:
            b.client.get_registered_model(name)
            return
        except Exception as exc:
            if not is_backend_error(exc) or classify(exc) is not Failure.NOT_FOUND:
                raise
        try:
            b.client.create_registered_model(name)
        except Exception as exc:
            # Another registration created it between our look and our write: that is the goal reached.
            if not is_backend_error(exc) or classify(exc) is not Failure.EXISTS:
                raise

    b.retry(create, f"registered model {name!r}")


def source_of(b: Backend, model_uri: str) -> tuple[str, str | None]:
    """Storage location and logged-model id for ``model_uri``.

    A ``models:/m-...`` URI is resolved here, with this client: MLflow's SQL store would otherwise resolve
    it through the process-global tracking URI, which need not be this registry's.
    """
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
    if match is None:
        return model_uri, None
    model_id = match.group(1)
    logged = b.call(lambda: b.client.get_logged_model(model_id), f"logged model {model_id}")
    return logged.artifact_location, model_id


def find_by_run_key(b: Backend, name: str, run_key: str) -> ModelVersion | None:
    """The version of ``name`` registered under ``run_key`` (None if none, or no such model)."""
    try:
        b.call(lambda: b.client.get_registered_model(name), f"model {name!r}")
    except NotFoundError:
        return None
    matches = [mv for mv in b.search_versions(name) if (mv.tags or {}).get(RUN_KEY_TAG) == run_key]
    # Two registrations racing on the same key both create; the oldest is the one every later call returns.
    return min(matches, key=lambda mv: int(mv.version)) if matches else None
