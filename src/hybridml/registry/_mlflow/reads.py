"""Reading the MLflow registry: versions, references, listings, aliases, history and downloads."""

from __future__ import annotations

import re
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from hybridml.core.approval import PENDING
from hybridml.core.model import Bundle, read_bundle
from hybridml.errors import InvalidInputError, NotFoundError
from hybridml.registry._mlflow import history
from hybridml.registry._mlflow.backend import (
    BRANCH_TAG,
    DATA_HASH_TAG,
    MODEL_URI_TAG,
    PIPELINE_RUN_ID_TAG,
    ROC_AUC_TAG,
    STATUS_TAG,
    Backend,
    name_matches,
    version_number,
)
from hybridml.registry.protocol import CHAMPION, HistoryEvent, ModelSummary, VersionInfo


def to_info(mv: ModelVersion, aliases: tuple[str, ...] | None = None) -> VersionInfo:
    """A version as hybridml sees it (history tags left out of ``tags``)."""
    tags = {k: v for k, v in (mv.tags or {}).items() if not k.startswith(history.HISTORY_PREFIX)}
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
        model_id=getattr(mv, "model_id", None) or model_id_of(tags.get(MODEL_URI_TAG)),
    )


def get_version(b: Backend, name: str, version: int | str) -> VersionInfo:
    """One version of ``name``.

    Raises:
        NotFoundError: the model or the version does not exist.
    """
    return to_info(b.get_mv(name, version_number(version)))


def resolve(b: Backend, ref: str) -> VersionInfo:
    """The version that ``ref`` names: ``NAME@alias``, ``NAME/VERSION`` or ``NAME`` (its latest version).

    A leading ``models:/`` is accepted, so MLflow model URIs resolve too.

    Raises:
        InvalidInputError: ``ref`` is malformed.
        NotFoundError: the model, version or alias does not exist.
    """
    text = ref.strip().removeprefix("models:/")
    if "@" in text:
        name, _, alias = text.partition("@")
        if not alias or "@" in alias or "/" in alias or not name_matches(name):
            raise InvalidInputError(f"malformed model reference {ref!r} (expected NAME@ALIAS)")
        # Looked up in the model's alias map: MLflow reports a missing alias as an invalid parameter.
        target = aliases(b, name).get(alias)
        if target is None:
            raise NotFoundError(f"model {name!r} has no alias {alias!r}")
        return get_version(b, name, target)
    if "/" in text:
        name, _, version = text.partition("/")
        if not version.isdigit() or not name_matches(name):
            raise InvalidInputError(f"malformed model reference {ref!r} (expected NAME/VERSION)")
        return get_version(b, name, int(version))
    if not name_matches(text):
        raise InvalidInputError(f"malformed model reference {ref!r} (expected NAME, NAME/VERSION or NAME@ALIAS)")
    versions = list_versions(b, text)
    if not versions:
        raise NotFoundError(f"model {text!r} has no versions")
    return versions[-1]


def list_models(b: Backend) -> list[ModelSummary]:
    """Every registered model, sorted by name."""
    summaries = []
    for rm in b.paged(lambda token: b.client.search_registered_models(max_results=1000, page_token=token)):
        numbers = [int(mv.version) for mv in b.search_versions(rm.name)]
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


def list_versions(b: Backend, name: str) -> list[VersionInfo]:
    """All versions of ``name``, oldest first.

    Raises:
        NotFoundError: the model does not exist.
    """
    by_version = aliases_by_version(b, name)
    infos = [to_info(mv, by_version.get(int(mv.version), ())) for mv in b.search_versions(name)]
    return sorted(infos, key=lambda info: info.version)


def aliases(b: Backend, name: str) -> dict[str, int]:
    """Alias -> version number of ``name``.

    Raises:
        NotFoundError: the model does not exist.
    """
    return {k: int(v) for k, v in (b.get_model(name).aliases or {}).items()}


def aliases_by_version(b: Backend, name: str) -> dict[int, tuple[str, ...]]:
    """Version number -> its aliases, sorted."""
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases(b, name).items():
        by_version.setdefault(version, []).append(alias)
    return {v: tuple(sorted(a)) for v, a in by_version.items()}


def champion(b: Backend, name: str) -> VersionInfo | None:
    """The version the ``champion`` alias points to, or None if there is none.

    Raises:
        NotFoundError: the model does not exist.
    """
    version = aliases(b, name).get(CHAMPION)
    return None if version is None else get_version(b, name, version)


def events(b: Backend, name: str, version: int | None = None) -> list[HistoryEvent]:
    """Events of ``name`` (or of one version: its own plus alias moves that involved it), oldest first.

    Raises:
        NotFoundError: the model (or version) does not exist.
    """
    model = b.get_model(name)
    pairs = history.collect(name, dict(model.tags or {}))
    if version is not None:
        number = version_number(version)
        mv = b.get_mv(name, number)
        pairs = [p for p in pairs if p[1].version == number or history.mentions(p[1].detail, number)]
        pairs += history.collect(name, dict(mv.tags or {}))
    else:
        for mv in b.search_versions(name):
            pairs += history.collect(name, dict(mv.tags or {}))
    return history.ordered(pairs)


def download(b: Backend, name: str, version: int | str, dst: Path) -> Bundle:
    """Download version ``version`` of ``name`` into ``dst`` and return it as a bundle.

    Raises:
        NotFoundError: the model or version does not exist.
        InvalidInputError: the downloaded directory is not a hybridml bundle (or holds untrusted types).
    """
    number = version_number(version)
    b.get_mv(name, number)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    what = f"model {name!r} version {number}"
    # Resolve models:/NAME/VERSION with this client: MLflow's models:/ repository would ask the global registry.
    location = b.call(lambda: b.client.get_model_version_download_uri(name, str(number)), what)
    repo = get_artifact_repository(location, tracking_uri=b.tracking_uri)
    # "" = the model directory's contents, straight into dst (not into dst/<last path part>).
    local = b.call(lambda: repo.download_artifacts("", dst_path=str(dst)), what)
    return read_bundle(local)


def model_id_of(model_uri: str | None) -> str | None:
    """``m-...`` of a ``models:/m-...`` URI, else None."""
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri or "")
    return match.group(1) if match else None


def _float_or_none(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None
