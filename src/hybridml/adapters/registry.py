"""MLflow model registry adapter: bundles as logged models, versions, approval status, champion alias and history."""

from __future__ import annotations

import importlib.metadata
import logging
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from hybridml.adapters import _history
from hybridml.adapters._history import ALIAS, REGISTERED, STATUS, HistoryEvent
from hybridml.core.approval import APPROVED, PENDING, REJECTED, STATUSES
from hybridml.core.model import MANIFEST, XGBOOST, Bundle, load_estimator, read_bundle
from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError, NotReadyError

__all__ = [
    "CHAMPION",
    "RUN_KEY_TAG",
    "STATUS_TAG",
    "HistoryEvent",
    "ModelSummary",
    "Registry",
    "VersionInfo",
    "retry",
]

_log = logging.getLogger(__name__)

CHAMPION = "champion"
STATUS_TAG = "approval_status"  # SageMaker's ModelApprovalStatus values
RUN_KEY_TAG = "hybridml.run_key"
MODEL_URI_TAG = "hybridml.model_uri"
# Plain tag keys the pipeline passes to register(); VersionInfo exposes them as typed fields.
ROC_AUC_TAG = "roc_auc"
DATA_HASH_TAG = "data_hash"
PIPELINE_RUN_ID_TAG = "pipeline_run_id"
BRANCH_TAG = "branch"

_NAME_RE = re.compile(r"^[^/:@'\"\\\s][^/:@'\"\\]{0,254}$")
_KEY_RE = re.compile(r"^[^'\"\\]{1,200}$")

# Writes race on MLflow's MAX(version)+1 and on SQLite's single writer; these are the marks such a race leaves.
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "ABORTED"}
_TRANSIENT_TEXT = (
    "database is locked",
    "database table is locked",
    "unique constraint",
    "duplicate key",
    "integrityerror",
    "operationalerror",
    "could not serialize",
    "deadlock",
    "already exists",
    "connection",
    "timed out",
    "max retries exceeded",
)
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"}
_INVALID_CODES = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST", "INVALID_STATE"}

T = TypeVar("T")


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
        """``NAME/VERSION``, accepted by :meth:`Registry.resolve`."""
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


class Registry:
    """The registry of one MLflow tracking/registry URI, acting on behalf of ``user``.

    Every MLflow failure leaves this class as a :class:`~hybridml.errors.HybridmlError`; writes that lose a
    race with other writers (version numbers, SQLite's lock) are retried with jittered backoff.
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
    ) -> None:
        """Connect lazily to ``tracking_uri`` (nothing is contacted until the first call).

        Args:
            tracking_uri: MLflow tracking URI, also used as the registry URI.
            user: Recorded as the actor of history events when a call names none.
            clock: Seconds since the epoch; injected for tests of history timestamps.
            attempts: Tries of one contended write before :class:`ConflictError`.
            backoff_s: First backoff step; each retry waits a random time up to twice the previous bound.
            sleep: Injected for tests of the retry loop.
        """
        if attempts < 1:
            raise InvalidInputError(f"attempts must be at least 1, got {attempts}")
        self.tracking_uri = tracking_uri
        self.user = user
        self._clock = clock
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # ------------------------------------------------------------------ logging and registration

    def log_bundle(self, run_id: str, bundle: Bundle) -> str:
        """Log ``bundle`` as an MLflow model of run ``run_id``; return its ``models:/m-...`` URI.

        The model directory holds MLflow's flavor files (XGBoost JSON or scikit-learn skops, never pickle) plus
        the bundle's manifest, so a downloaded copy is itself a valid bundle. Works whether or not ``run_id``
        is the active run: only the client API is used, no global MLflow state.
        """
        run = self._call(lambda: self._client.get_run(run_id), f"run {run_id!r}")
        estimator = load_estimator(bundle)
        logged = self._call(
            lambda: self._client.create_logged_model(
                experiment_id=run.info.experiment_id,
                name="model",
                source_run_id=run_id,
                params={k: _tag_value(v) for k, v in bundle.params.items()},
                tags={"hybridml.model_type": bundle.model_type},
            ),
            f"logged model of run {run_id!r}",
        )
        model_id = logged.model_id
        try:
            with tempfile.TemporaryDirectory(prefix="hybridml-log-") as tmp:
                local = Path(tmp) / "model"
                mlflow_model = Model(
                    artifact_path=logged.artifact_location, model_uuid=model_id, run_id=run_id, model_id=model_id
                )
                if bundle.model_type == XGBOOST:
                    import mlflow.xgboost

                    mlflow.xgboost.save_model(
                        estimator,
                        str(local),
                        mlflow_model=mlflow_model,
                        model_format="json",
                        pip_requirements=_requirements(bundle.model_type),
                    )
                else:
                    import mlflow.sklearn
                    import skops.io as sio

                    mlflow.sklearn.save_model(
                        estimator,
                        str(local),
                        mlflow_model=mlflow_model,
                        serialization_format="skops",
                        # load_estimator above already vetted every type in the file against core's allow-list.
                        skops_trusted_types=sio.get_untrusted_types(file=bundle.path / bundle.model_file),
                        pip_requirements=_requirements(bundle.model_type),
                    )
                # The manifest names the same file name MLflow just wrote (model.json / model.skops).
                shutil.copyfile(bundle.path / MANIFEST, local / MANIFEST)
                read_bundle(local)
                self._call(lambda: self._client.log_model_artifacts(model_id, str(local)), f"model {model_id}")
            self._call(
                lambda: self._client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)]),
                f"run {run_id!r}",
            )
        except BaseException:
            # A half-written model must not look usable.
            try:
                self._client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
            except MlflowException:
                _log.warning("could not mark logged model %s as failed", model_id)
            raise
        self._call(lambda: self._client.finalize_logged_model(model_id, LoggedModelStatus.READY), f"model {model_id}")
        return f"models:/{model_id}"

    def register(self, name: str, model_uri: str, *, run_id: str, run_key: str, tags: dict[str, str]) -> VersionInfo:
        """Register ``model_uri`` as a new version of ``name``, status ``PendingManualApproval``.

        Idempotent per ``run_key``: if a version of ``name`` already carries it, that version is returned and
        nothing is created (a retried pipeline step re-runs in full). Safe against concurrent registrations.

        Args:
            name: Registered model name (created if missing).
            model_uri: What :meth:`log_bundle` returned, or any source MLflow accepts.
            run_id: The MLflow run that produced the model.
            run_key: Identifies the producing step execution, e.g. ``<pipeline run id>/<step>``.
            tags: Lineage tags such as ``roc_auc``, ``data_hash``, ``pipeline_run_id``, ``branch``.

        Raises:
            InvalidInputError: malformed name, run key or tags.
            ConflictError: the backend stayed contended after all retries.
        """
        _check_name(name)
        _check_key("run key", run_key)
        existing = self._find_by_run_key(name, run_key)
        if existing is not None:
            return self._info(existing)
        self._ensure_model(name)
        source, model_id = self._source_of(model_uri)
        all_tags = {str(k): _tag_value(v) for k, v in tags.items()}
        all_tags.update({STATUS_TAG: PENDING, RUN_KEY_TAG: run_key, MODEL_URI_TAG: model_uri})
        what = f"new version of model {name!r} (run key {run_key!r})"

        def create() -> ModelVersion:
            try:
                return self._client.create_model_version(
                    name, source, run_id=run_id, tags=all_tags, await_creation_for=0, model_id=model_id
                )
            except MlflowException as exc:
                # The failed call may have committed before its answer was lost: never create a twin.
                try:
                    found = self._find_by_run_key(name, run_key)
                except HybridmlError:
                    raise exc from None  # the look-up hit the same contention; let the retry loop judge exc
                if found is not None:
                    return found
                raise

        created = self._retry(create, what)
        self._record(name, int(created.version), REGISTERED, f"registered from {model_uri}", "", actor=None)
        return self.get_version(name, created.version)

    # ------------------------------------------------------------------ reading

    def get_version(self, name: str, version: int | str) -> VersionInfo:
        """One version of ``name``.

        Raises:
            NotFoundError: the model or the version does not exist.
        """
        return self._info(self._get_mv(name, _version_number(version)))

    def resolve(self, ref: str) -> VersionInfo:
        """The version that ``ref`` names: ``NAME@alias``, ``NAME/VERSION`` or ``NAME`` (its latest version).

        A leading ``models:/`` is accepted, so MLflow model URIs resolve too.

        Raises:
            InvalidInputError: ``ref`` is malformed.
            NotFoundError: the model, version or alias does not exist.
        """
        text = ref.strip().removeprefix("models:/")
        if "@" in text:
            name, _, alias = text.partition("@")
            if not alias or "@" in alias or "/" in alias or not _NAME_RE.match(name):
                raise InvalidInputError(f"malformed model reference {ref!r} (expected NAME@ALIAS)")
            # Looked up in the model's alias map: MLflow reports a missing alias as an invalid parameter.
            target = self.aliases(name).get(alias)
            if target is None:
                raise NotFoundError(f"model {name!r} has no alias {alias!r}")
            return self.get_version(name, target)
        if "/" in text:
            name, _, version = text.partition("/")
            if not version.isdigit() or not _NAME_RE.match(name):
                raise InvalidInputError(f"malformed model reference {ref!r} (expected NAME/VERSION)")
            return self.get_version(name, int(version))
        if not _NAME_RE.match(text):
            raise InvalidInputError(f"malformed model reference {ref!r} (expected NAME, NAME/VERSION or NAME@ALIAS)")
        versions = self.list_versions(text)
        if not versions:
            raise NotFoundError(f"model {text!r} has no versions")
        return versions[-1]

    def list_models(self) -> list[ModelSummary]:
        """Every registered model, sorted by name."""
        summaries = []
        for rm in self._paged(lambda token: self._client.search_registered_models(max_results=1000, page_token=token)):
            numbers = [int(mv.version) for mv in self._search_versions(rm.name)]
            summaries.append(
                ModelSummary(
                    name=rm.name,
                    latest_version=max(numbers) if numbers else None,
                    n_versions=len(numbers),
                    aliases={k: int(v) for k, v in (rm.aliases or {}).items()},
                    description=rm.description or "",
                )
            )
        return sorted(summaries, key=lambda s: s.name)

    def list_versions(self, name: str) -> list[VersionInfo]:
        """All versions of ``name``, oldest first.

        Raises:
            NotFoundError: the model does not exist.
        """
        aliases = self._aliases_by_version(name)
        infos = [self._info(mv, aliases.get(int(mv.version), ())) for mv in self._search_versions(name)]
        return sorted(infos, key=lambda info: info.version)

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version number of ``name``.

        Raises:
            NotFoundError: the model does not exist.
        """
        return {k: int(v) for k, v in (self._get_model(name).aliases or {}).items()}

    def champion(self, name: str) -> VersionInfo | None:
        """The version the ``champion`` alias points to, or None if there is none.

        Raises:
            NotFoundError: the model does not exist.
        """
        version = self.aliases(name).get(CHAMPION)
        return None if version is None else self.get_version(name, version)

    def history(self, name: str, version: int | None = None) -> list[HistoryEvent]:
        """Events of ``name`` (or of one version: its own plus alias moves that involved it), oldest first.

        Raises:
            NotFoundError: the model (or version) does not exist.
        """
        model = self._get_model(name)
        pairs = _history.collect(name, dict(model.tags or {}))
        if version is not None:
            number = _version_number(version)
            mv = self._get_mv(name, number)
            pairs = [p for p in pairs if p[1].version == number or _mentions(p[1].detail, number)]
            pairs += _history.collect(name, dict(mv.tags or {}))
        else:
            for mv in self._search_versions(name):
                pairs += _history.collect(name, dict(mv.tags or {}))
        return _history.ordered(pairs)

    def download(self, name: str, version: int | str, dst: Path) -> Bundle:
        """Download version ``version`` of ``name`` into ``dst`` and return it as a bundle.

        Raises:
            NotFoundError: the model or version does not exist.
            InvalidInputError: the downloaded directory is not a hybridml bundle.
        """
        number = _version_number(version)
        self._get_mv(name, number)
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        what = f"model {name!r} version {number}"
        # Resolve models:/NAME/VERSION with this client: MLflow's models:/ repository would ask the global registry.
        location = self._call(lambda: self._client.get_model_version_download_uri(name, str(number)), what)
        repo = get_artifact_repository(location, tracking_uri=self.tracking_uri)
        # "" = the model directory's contents, straight into dst (not into dst/<last path part>).
        local = self._call(lambda: repo.download_artifacts("", dst_path=str(dst)), what)
        return read_bundle(local)

    # ------------------------------------------------------------------ writing

    def set_status(
        self, name: str, version: int | str, status: str, *, reason: str, actor: str | None = None
    ) -> VersionInfo:
        """Set the approval status of a version and record who, when and why.

        ``Approved`` moves the ``champion`` alias here; ``Rejected`` of the current champion removes the alias.
        Each change is recorded in the history.

        Raises:
            InvalidInputError: ``status`` is not one of the approval statuses.
            NotFoundError: the model or version does not exist (nothing is changed).
        """
        if status not in STATUSES:
            raise InvalidInputError(f"unknown approval status {status!r} (choose from {', '.join(STATUSES)})")
        number = _version_number(version)
        mv = self._get_mv(name, number)
        old = (mv.tags or {}).get(STATUS_TAG, PENDING)
        self._set_mv_tag(name, number, STATUS_TAG, status)
        self._record(name, number, STATUS, f"{old} -> {status}", reason, actor=actor)
        champion = self.aliases(name).get(CHAMPION)
        if status == APPROVED and champion != number:
            self._move_alias(name, CHAMPION, number, champion, reason=reason, actor=actor)
        elif status == REJECTED and champion == number:
            self._call(
                lambda: self._client.delete_registered_model_alias(name, CHAMPION), f"alias champion of model {name!r}"
            )
            self._record(name, None, ALIAS, f"{CHAMPION}: {number} -> none", reason, actor=actor, on_model=True)
        return self.get_version(name, number)

    def set_alias(self, name: str, alias: str, version: int | str, *, reason: str, actor: str | None = None) -> None:
        """Point ``alias`` of ``name`` at ``version`` and record the move.

        Raises:
            InvalidInputError: the alias name is not allowed by MLflow (e.g. ``latest`` or ``v3``).
            NotFoundError: the model or version does not exist (nothing is changed).
        """
        number = _version_number(version)
        self._get_mv(name, number)
        old = self.aliases(name).get(alias)
        self._move_alias(name, alias, number, old, reason=reason, actor=actor)

    def set_version_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        """Set one tag of a version (retried when contended).

        Raises:
            NotFoundError: the model or version does not exist.
        """
        number = _version_number(version)
        self._get_mv(name, number)
        self._set_mv_tag(name, number, key, _tag_value(value))

    # ------------------------------------------------------------------ internals

    def _move_alias(
        self, name: str, alias: str, number: int, old: int | None, *, reason: str, actor: str | None
    ) -> None:
        self._retry(
            lambda: self._client.set_registered_model_alias(name, alias, str(number)),
            f"alias {alias!r} of model {name!r}",
        )
        before = "none" if old is None else str(old)
        self._record(name, number, ALIAS, f"{alias}: {before} -> {number}", reason, actor=actor, on_model=True)

    def _record(
        self,
        name: str,
        version: int | None,
        action: str,
        detail: str,
        reason: str,
        *,
        actor: str | None,
        on_model: bool = False,
    ) -> None:
        """Write one history event: alias moves on the registered model, the rest on the version."""
        key, value = _history.encode(
            clock_s=self._clock(),
            actor=actor or self.user,
            action=action,
            version=version,
            detail=detail,
            reason=reason,
        )
        if on_model or version is None:
            self._retry(lambda: self._client.set_registered_model_tag(name, key, value), f"history of model {name!r}")
        else:
            self._set_mv_tag(name, version, key, value)

    def _set_mv_tag(self, name: str, number: int, key: str, value: str) -> None:
        self._retry(
            lambda: self._client.set_model_version_tag(name, str(number), key, value),
            f"tag {key!r} of model {name!r} version {number}",
        )

    def _ensure_model(self, name: str) -> None:
        def create() -> None:
            try:
                self._client.get_registered_model(name)
                return
            except MlflowException as exc:
                if exc.error_code not in _NOT_FOUND_CODES:
                    raise
            try:
                self._client.create_registered_model(name)
            except MlflowException as exc:
                # Another registration created it between our look and our write: that is the goal reached.
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

        self._retry(create, f"registered model {name!r}")

    def _source_of(self, model_uri: str) -> tuple[str, str | None]:
        """Storage location and logged-model id for ``model_uri``.

        A ``models:/m-...`` URI is resolved here, with this client: MLflow's SQL store would otherwise resolve
        it through the process-global tracking URI, which need not be this registry's.
        """
        match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
        if match is None:
            return model_uri, None
        model_id = match.group(1)
        logged = self._call(lambda: self._client.get_logged_model(model_id), f"logged model {model_id}")
        return logged.artifact_location, model_id

    def _find_by_run_key(self, name: str, run_key: str) -> ModelVersion | None:
        try:
            self._client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND_CODES:
                return None
            raise _translate(exc, f"model {name!r}") from exc
        matches = [mv for mv in self._search_versions(name) if (mv.tags or {}).get(RUN_KEY_TAG) == run_key]
        # Two registrations racing on the same key both create; the oldest is the one every later call returns.
        return min(matches, key=lambda mv: int(mv.version)) if matches else None

    def _search_versions(self, name: str) -> list[ModelVersion]:
        _check_name(name)
        self._get_model(name)
        return list(
            self._paged(
                lambda token: self._client.search_model_versions(
                    f"name = '{name}'", max_results=10_000, page_token=token
                )
            )
        )

    def _paged(self, fetch: Callable[[str | None], Any]) -> Iterator[Any]:
        token: str | None = None
        while True:
            page = self._call(lambda token=token: fetch(token), "registry search")  # type: ignore[misc]
            yield from page
            token = page.token
            if not token:
                return

    def _get_model(self, name: str) -> Any:
        _check_name(name)
        try:
            return self._retry(lambda: self._client.get_registered_model(name), f"model {name!r}")
        except NotFoundError as exc:
            raise NotFoundError(f"model {name!r} not found") from exc.__cause__

    def _get_mv(self, name: str, number: int) -> ModelVersion:
        self._get_model(name)
        try:
            return self._retry(
                lambda: self._client.get_model_version(name, str(number)), f"model {name!r} version {number}"
            )
        except NotFoundError as exc:
            raise NotFoundError(f"model {name!r} has no version {number}") from exc.__cause__

    def _aliases_by_version(self, name: str) -> dict[int, tuple[str, ...]]:
        by_version: dict[int, list[str]] = {}
        for alias, version in self.aliases(name).items():
            by_version.setdefault(version, []).append(alias)
        return {v: tuple(sorted(a)) for v, a in by_version.items()}

    def _info(self, mv: ModelVersion, aliases: tuple[str, ...] | None = None) -> VersionInfo:
        tags = {k: v for k, v in (mv.tags or {}).items() if not k.startswith(_history.HISTORY_PREFIX)}
        return VersionInfo(
            name=mv.name,
            version=int(mv.version),
            status=tags.get(STATUS_TAG, PENDING),
            roc_auc=_float_or_none(tags.get(ROC_AUC_TAG)),
            data_hash=tags.get(DATA_HASH_TAG),
            run_id=mv.run_id or None,
            pipeline_run_id=tags.get(PIPELINE_RUN_ID_TAG),
            branch=tags.get(BRANCH_TAG),
            source=mv.source or "",
            aliases=tuple(sorted(mv.aliases or ())) if aliases is None else aliases,
            tags=tags,
            created_at=int(mv.creation_timestamp or 0),
            model_id=getattr(mv, "model_id", None) or _model_id_of(tags.get(MODEL_URI_TAG)),
        )

    def _call(self, op: Callable[[], T], what: str) -> T:
        """Run one MLflow call once, translating its failure."""
        try:
            return op()
        except MlflowException as exc:
            raise _translate(exc, what) from exc

    def _retry(self, op: Callable[[], T], what: str) -> T:
        return retry(op, what, attempts=self._attempts, backoff_s=self._backoff_s, sleep=self._sleep)


def retry(
    op: Callable[[], T],
    what: str,
    *,
    attempts: int = 10,
    backoff_s: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``op``, retrying transient MLflow failures with jittered exponential backoff.

    Raises:
        ConflictError: still failing transiently after ``attempts`` tries (the message names ``what``).
        HybridmlError: the translation of a non-transient failure (not found, invalid, ...).
    """
    bound = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return op()
        except MlflowException as exc:
            if not _is_transient(exc):
                raise _translate(exc, what) from exc
            if attempt == attempts:
                raise ConflictError(
                    f"{what}: backend still contended after {attempt} attempts: {_first_line(exc)}"
                ) from exc
            _log.debug("retrying %s after transient error (attempt %d): %s", what, attempt, exc)
        # Full jitter: concurrent writers that collided once should not collide again in lock-step.
        sleep(random.uniform(0, bound))  # noqa: S311 - jitter, not security
        bound = min(bound * 2, 2.0)
    raise AssertionError("unreachable")  # pragma: no cover


def _is_transient(exc: MlflowException) -> bool:
    if exc.error_code in _NOT_FOUND_CODES:
        return False
    # MLflow's SQL store reports an IntegrityError that outlived its own retries as BAD_REQUEST, so the
    # message, not the code, tells a lost race from a bad argument.
    text = str(exc).lower()
    return exc.error_code in _TRANSIENT_CODES or any(mark in text for mark in _TRANSIENT_TEXT)


def _translate(exc: MlflowException, what: str) -> HybridmlError:
    code = exc.error_code
    detail = _first_line(exc)
    if code in _NOT_FOUND_CODES:
        return NotFoundError(f"{what} not found: {detail}")
    if code in _INVALID_CODES:
        return InvalidInputError(f"{what}: {detail}")
    if code == "RESOURCE_ALREADY_EXISTS":
        return ConflictError(f"{what} already exists: {detail}")
    if code in _TRANSIENT_CODES and any(m in detail.lower() for m in ("connection", "max retries", "timed out")):
        return NotReadyError(f"{what}: MLflow is not reachable: {detail}")
    return ConflictError(f"{what}: {detail}")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return _history.truncate(text, 300)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInputError(f"invalid model name {name!r} (no '/', ':', '@', quotes; at most 255 characters)")


def _check_key(what: str, value: str) -> None:
    if not isinstance(value, str) or not _KEY_RE.match(value):
        raise InvalidInputError(f"invalid {what} {value!r} (1-200 characters, no quotes or backslashes)")


def _version_number(version: int | str) -> int:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"invalid model version {version!r} (expected a positive integer)")
    return int(text)


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _float_or_none(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _model_id_of(model_uri: str | None) -> str | None:
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri or "")
    return match.group(1) if match else None


def _mentions(detail: str, number: int) -> bool:
    """Whether an alias event's detail (``alias: old -> new``) names ``number`` on either side."""
    _, _, moves = detail.partition(": ")
    return str(number) in {side.strip() for side in moves.split("->")}


def _requirements(model_type: str) -> list[str]:
    """Pinned requirements of the logged model, given explicitly: MLflow's inference costs seconds per model."""
    pins = []
    for dists in (("xgboost-cpu", "xgboost"), ("scikit-learn",), ("skops",), ("numpy",)):
        if dists[0] == "skops" and model_type == XGBOOST:
            continue
        for dist in dists:
            try:
                pins.append(f"{dist}=={importlib.metadata.version(dist)}")
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return pins
