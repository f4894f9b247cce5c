"""What every model registry backend must do (the contract its conformance suite checks), and its value types."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hybridml.core.approval import CHAMPION, Decision

if TYPE_CHECKING:
    from hybridml.core.model import Bundle

__all__ = ["CHAMPION", "HistoryEvent", "ModelRegistry", "ModelSummary", "Policy", "VersionInfo"]


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version as hybridml sees it (lineage and approval read from its tags)."""

    name: str
    version: int
    status: str
    roc_auc: float | None
    data_hash: str | None
    run_id: str | None
    pipeline_run_id: str | None
    branch: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(hash=False)
    created_at: int
    model_id: str | None = None

    @property
    def ref(self) -> str:
        """``NAME/VERSION``, accepted by :meth:`ModelRegistry.resolve`."""
        return f"{self.name}/{self.version}"

    @property
    def is_champion(self) -> bool:
        """Whether the ``champion`` alias points here."""
        return CHAMPION in self.aliases


@dataclass(frozen=True)
class ModelSummary:
    """One registered model in a listing."""

    name: str
    latest_version: int | None
    n_versions: int
    aliases: dict[str, int] = field(hash=False)
    description: str = ""


@dataclass(frozen=True)
class HistoryEvent:
    """One change of a registered model or version: who did what, when and why.

    ``action`` is ``registered``, ``status`` or ``alias`` (written by the registry itself), or ``deployment``,
    ``canary``, ``mirror`` or ``monitor`` (recorded by other parts); for the first three ``detail`` reads like
    ``PendingManualApproval -> Approved`` (status) or ``champion: 2 -> 3`` (alias; ``none`` for no version).
    """

    at: str
    actor: str
    action: str
    model: str
    version: int | None
    detail: str
    reason: str


# Given the version as it is now and the current champion (None: none), the decision to apply, or None.
Policy = Callable[[VersionInfo, "VersionInfo | None"], "Decision | None"]


@runtime_checkable
class ModelRegistry(Protocol):
    """A model registry: named models, numbered versions with an approval status, aliases, and their history.

    The contract every backend keeps (``tests/integration/registry/test_registry_contract.py`` checks it):

    - **Idempotent registration per run key.** :meth:`register` with a run key that a version of the model
      already carries returns that version and creates nothing, so a retried pipeline step is harmless.
    - **Thread and process safety.** Any number of threads and processes may call any method at once against
      one store. Concurrent registrations get distinct, gap-free version numbers (1, 2, ...); a write that
      loses a race with another writer is retried, and only such races are.
    - **Compare-and-set transitions.** :meth:`set_status`, :meth:`transition` and :meth:`set_alias` read the
      current state and write the change as one step with respect to each other (per model): two approvers
      of one version, or an approval racing a rejection, end in one of the serial outcomes, never a mix. The
      champion rule of :mod:`hybridml.core.approval` holds at every moment: the ``champion`` alias never
      points at a version that is not Approved (it leaves a version before the version stops being Approved
      and reaches one only after it is). ``expected`` makes the compare explicit: the change happens only if
      the status is still the one the caller saw.
    - **History.** Every registration, status change and alias move is recorded once, with who, when (UTC,
      ISO-8601, milliseconds), what (``detail``: ``old -> new``) and why; :meth:`history` returns them
      oldest first, and the ``old`` side of each change is the ``new`` side of the change before it.
    - **Names.** A model is created only under a name that passes
      :func:`hybridml.core.naming.check_model_name` (refused with the rule spelled out).
    - **Errors.** Failures leave as :mod:`hybridml.errors` types: a missing model, version or alias is
      :class:`~hybridml.errors.NotFoundError` naming it, and changes nothing; a malformed argument is
      :class:`~hybridml.errors.InvalidInputError`; a refused transition or a lost compare is
      :class:`~hybridml.errors.ConflictError`; an unreachable store is :class:`~hybridml.errors.NotReadyError`.
    """

    def log_bundle(self, run_id: str, bundle: Bundle) -> str:
        """Store ``bundle`` as the model of run ``run_id``; return a URI that :meth:`register` accepts."""
        ...

    def register(self, name: str, model_uri: str, *, run_id: str, run_key: str, tags: dict[str, str]) -> VersionInfo:
        """A new version of ``name`` (created if missing), pending approval; idempotent per ``run_key``."""
        ...

    def get_version(self, name: str, version: int | str) -> VersionInfo:
        """One version of ``name``."""
        ...

    def resolve(self, ref: str) -> VersionInfo:
        """The version ``NAME@alias``, ``NAME/VERSION`` or ``NAME`` (its latest) names."""
        ...

    def list_models(self) -> list[ModelSummary]:
        """Every registered model, sorted by name."""
        ...

    def list_versions(self, name: str) -> list[VersionInfo]:
        """All versions of ``name``, oldest first."""
        ...

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version number of ``name``."""
        ...

    def champion(self, name: str) -> VersionInfo | None:
        """The version the ``champion`` alias points to, or None."""
        ...

    def history(self, name: str, version: int | None = None) -> list[HistoryEvent]:
        """Events of ``name`` (or of one version), oldest first."""
        ...

    def download(self, name: str, version: int | str, dst: Path) -> Bundle:
        """Download a version into ``dst`` and return it as a bundle."""
        ...

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
        """Set a version's approval status (compare-and-set against ``expected`` when given)."""
        ...

    def transition(self, name: str, version: int | str, policy: Policy, *, actor: str | None = None) -> VersionInfo:
        """Apply the decision ``policy`` takes on the current state, as one compare-and-set step."""
        ...

    def set_alias(self, name: str, alias: str, version: int | str, *, reason: str, actor: str | None = None) -> None:
        """Point ``alias`` at ``version`` (``champion`` only at an Approved version)."""
        ...

    def set_version_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        """Set one tag of a version."""
        ...

    def record_event(
        self, name: str, version: int | str, action: str, detail: str, *, reason: str = "", actor: str | None = None
    ) -> HistoryEvent:
        """Append an event of another part of the platform to a version's history.

        ``action`` is one of ``deployment``, ``canary``, ``mirror``, ``monitor``; ``detail`` is a short summary
        (cut at 300 characters), ``reason`` the why and the figures (cut at 1,000). Unknown actions are refused
        with InvalidInputError, a missing version with NotFoundError; nothing is written then.
        """
        ...
