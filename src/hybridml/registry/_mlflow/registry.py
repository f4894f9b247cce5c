"""The MLflow-backed model registry: one object over the writing, registration, read and transition modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hybridml.adapters import mlflow_client
from hybridml.core.model import Bundle
from hybridml.errors import InvalidInputError
from hybridml.registry._mlflow import reads, registration, transitions, writing
from hybridml.registry._mlflow.backend import Backend, Hook, _no_hook
from hybridml.registry._mlflow.lock import ModelLock
from hybridml.registry.protocol import HistoryEvent, ModelSummary, Policy, VersionInfo


class Registry:
    """The registry of one MLflow tracking/registry URI, acting on behalf of ``user``.

    Keeps the :class:`~hybridml.registry.protocol.ModelRegistry` contract on a direct SQL store (SQLite,
    PostgreSQL) and on an ``mlflow server``. Every MLflow failure leaves as a
    :class:`~hybridml.errors.HybridmlError`; only writes that lose a race with other writers are retried
    (jittered backoff); status and alias changes are serialised per model by a lease lock made of tags
    (:mod:`hybridml.registry._mlflow.lock`).
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        user: str,
        clock: Callable[[], float] = time.time,
        attempts: int = 10,
        backoff_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
        lease_s: float = 60.0,
        lock_wait_s: float = 90.0,
        hook: Hook | None = None,
    ) -> None:
        """Connect lazily to ``tracking_uri`` (nothing is contacted until the first call).

        Args:
            tracking_uri: MLflow tracking URI, also used as the registry URI.
            user: Recorded as the actor of history events when a call names none.
            clock: Seconds since the epoch for history timestamps; injected for tests.
            attempts: Tries of one contended write before :class:`~hybridml.errors.ConflictError`.
            backoff_s: First backoff step; each retry waits a random time up to twice the previous bound.
            sleep: Injected for tests of the retry loop.
            lease_s: How long a status/alias change may hold the model's lock (a crashed writer blocks
                others at most this long).
            lock_wait_s: How long a change waits for another one on the same model before giving up.
            hook: ``hook(point, details)`` at named points of a change ("planned", "status-written",
                "alias-written", "lock-claimed", ...); tests inject conflicting writes there.
        """
        if attempts < 1:
            raise InvalidInputError(f"attempts must be at least 1, got {attempts}")
        self.tracking_uri = tracking_uri
        self.user = user
        self._b = Backend(
            tracking_uri=tracking_uri,
            user=user,
            client=mlflow_client.client(tracking_uri),
            clock=clock,
            attempts=attempts,
            backoff_s=backoff_s,
            sleep=sleep,
            hook=hook or _no_hook,
        )
        self._lease_s = lease_s
        self._lock_wait_s = lock_wait_s

    def _lock(self, backend: Backend, name: str, actor: str) -> ModelLock:
        return ModelLock(backend, name, actor=actor, lease_s=self._lease_s, wait_s=self._lock_wait_s)

    # ------------------------------------------------------------------ writing and registration

    def log_bundle(self, run_id: str, bundle: Bundle) -> str:
        """Log ``bundle`` as an MLflow model of run ``run_id``; return its ``models:/m-...`` URI."""
        return writing.log_bundle(self._b, run_id, bundle)

    def register(self, name: str, model_uri: str, *, run_id: str, run_key: str, tags: dict[str, str]) -> VersionInfo:
        """Register ``model_uri`` as a new pending version of ``name``; idempotent per ``run_key``.

        Raises:
            InvalidInputError: the name breaks :func:`hybridml.core.naming.check_model_name`, or the run key
                or tags are malformed.
            ConflictError: the backend stayed contended after all retries.
        """
        return registration.register(self._b, name, model_uri, run_id=run_id, run_key=run_key, tags=tags)

    # ------------------------------------------------------------------ reading

    def get_version(self, name: str, version: int | str) -> VersionInfo:
        """One version of ``name`` (NotFoundError if the model or version does not exist)."""
        return reads.get_version(self._b, name, version)

    def resolve(self, ref: str) -> VersionInfo:
        """The version ``NAME@alias``, ``NAME/VERSION`` or ``NAME`` (its latest version) names."""
        return reads.resolve(self._b, ref)

    def list_models(self) -> list[ModelSummary]:
        """Every registered model, sorted by name."""
        return reads.list_models(self._b)

    def list_versions(self, name: str) -> list[VersionInfo]:
        """All versions of ``name``, oldest first."""
        return reads.list_versions(self._b, name)

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version number of ``name``."""
        return reads.aliases(self._b, name)

    def champion(self, name: str) -> VersionInfo | None:
        """The version the ``champion`` alias points to, or None if there is none."""
        return reads.champion(self._b, name)

    def history(self, name: str, version: int | None = None) -> list[HistoryEvent]:
        """Events of ``name`` (or of one version: its own plus alias moves that involved it), oldest first."""
        return reads.events(self._b, name, version)

    def download(self, name: str, version: int | str, dst: Path) -> Bundle:
        """Download a version into ``dst`` and return it as a bundle."""
        return reads.download(self._b, name, version, dst)

    # ------------------------------------------------------------------ changing

    def set_status(
        self,
        name: str,
        version: int | str,
        status: str,
        *,
        reason: str,
        actor: str | None = None,
        expected: str | None = None,
    ) -> VersionInfo:
        """Set the approval status of a version and record who, when and why.

        ``Approved`` moves the ``champion`` alias here; ``Rejected`` of the current champion removes the alias
        (the rule is :func:`hybridml.core.approval.plan`). With ``expected``, the change happens only if the
        status is still ``expected`` (compare-and-set), else :class:`~hybridml.errors.ConflictError`.
        """
        return transitions.set_status(
            self._b, self._lock, name, version, status, reason=reason, actor=actor, expected=expected
        )

    def transition(self, name: str, version: int | str, policy: Policy, *, actor: str | None = None) -> VersionInfo:
        """Apply the decision ``policy(current, champion)`` takes, read and written as one step."""
        return transitions.transition(self._b, self._lock, name, version, policy, actor=actor)

    def set_alias(self, name: str, alias: str, version: int | str, *, reason: str, actor: str | None = None) -> None:
        """Point ``alias`` of ``name`` at ``version`` and record the move (``champion``: Approved versions only)."""
        transitions.set_alias(self._b, self._lock, name, alias, version, reason=reason, actor=actor)

    def set_version_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        """Set one tag of a version (not the status or history: those have their own methods)."""
        transitions.set_version_tag(self._b, name, version, key, value)

    def record_event(
        self, name: str, version: int | str, action: str, detail: str, *, reason: str = "", actor: str | None = None
    ) -> HistoryEvent:
        """Append a deployment, canary, mirror or monitor event to a version's history (and return it)."""
        return transitions.record_event(self._b, name, version, action, detail, reason=reason, actor=actor)
