"""Fetching a model by reference: the fetch functions targets use, and reading a ModelRef from a bundle's URI."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from hybridml.core.model import MANIFEST, PROFILE_FILE
from hybridml.core.profile import ReferenceProfile
from hybridml.core.schema import FeatureSchema
from hybridml.deploy.contract import ModelRef
from hybridml.errors import InvalidInputError, NotFoundError, NotReadyError

Fetch = Callable[[str, Path], Path]
"""``fetch(uri, scratch)``: the local path of the file or directory at ``uri``.

``scratch`` is an empty directory that the caller owns and removes after use: a fetch function downloads into
it, or returns a local file's own path without copying. Raises NotFoundError when nothing is at ``uri``.
"""


def _is_local(scheme: str) -> bool:
    # A one-letter scheme is a Windows drive letter, i.e. a plain path.
    return scheme in ("", "file") or len(scheme) == 1


def fetch_artifact(uri: str, scratch: Path) -> Path:
    """Fetch a file or directory from a path, ``file://`` or ``s3://`` (the default fetch of every target).

    Local files are returned in place. ``s3://BUCKET/KEY`` is downloaded into ``scratch``: the object
    ``KEY`` if there is one, else every object under ``KEY/`` (a bundle directory), refusing keys that
    escape the directory and pickle files. S3 honours the usual boto3 settings (``AWS_ENDPOINT_URL``).

    Raises:
        InvalidInputError: another scheme (MLflow URIs need :func:`mlflow_fetch`) or a malformed URI.
        NotFoundError: nothing at ``uri``.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if _is_local(scheme):
        path = Path(unquote(parts.path) if scheme == "file" else uri).expanduser()
        if not path.exists():
            raise NotFoundError(f"nothing at {uri}")
        return path
    if scheme != "s3":
        raise InvalidInputError(
            f"cannot fetch {uri!r}: scheme {scheme!r} needs a fetch function that knows it (plain fetch reads paths,"
            " file:// and s3://)"
        )
    from hybridml.adapters import storage
    from hybridml.serving.storage import resolve_model

    try:
        return storage.fetch(uri, scratch)
    except NotFoundError:
        pass
    # The trailing slash keeps s3://b/m/1 from also taking the objects of s3://b/m/10/.
    try:
        return resolve_model(uri.rstrip("/") + "/", cache_dir=scratch)
    except NotFoundError as exc:
        raise NotFoundError(f"nothing at {uri}") from exc


def mlflow_fetch(tracking_uri: str, registry_uri: str | None = None) -> Fetch:
    """A fetch function that also reads MLflow URIs (``models:/``, ``mlflow-artifacts:``, ``runs:/``).

    Paths and ``file://`` go through :func:`fetch_artifact`; everything else through MLflow's artifact
    repositories with this tracking and registry URI, never the process-global ones (so ``s3://`` uses
    MLflow's S3 settings, as the registry that wrote the model does). ``models:/NAME/VERSION[/PATH]``,
    ``models:/NAME@ALIAS[/PATH]`` and ``models:/m-ID[/PATH]`` are resolved with a client of this registry:
    MLflow's own ``models:/`` repository would ask the global default registry instead.
    """

    def fetch(uri: str, scratch: Path) -> Path:
        if _is_local(urlsplit(uri).scheme.lower()):
            return fetch_artifact(uri, scratch)
        import mlflow
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            location = uri
            if uri.startswith("models:/"):
                client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
                location = _resolve_models_uri(uri, client)
                if _is_local(urlsplit(location).scheme.lower()):
                    return fetch_artifact(location, scratch)
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location,
                dst_path=str(scratch),
                tracking_uri=tracking_uri,
                registry_uri=registry_uri or tracking_uri,
            )
        except MlflowException as exc:
            first = str(exc.message).splitlines()[0] if str(exc.message) else type(exc).__name__
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise NotFoundError(f"nothing at {uri}: {first}") from exc
            if exc.error_code == "INVALID_PARAMETER_VALUE":
                raise InvalidInputError(f"cannot fetch {uri}: {first}") from exc
            raise NotReadyError(f"cannot fetch {uri}: {first}") from exc
        except FileNotFoundError as exc:
            raise NotFoundError(f"nothing at {uri}") from exc
        except OSError as exc:
            raise NotReadyError(f"cannot fetch {uri}: {exc}") from exc
        return Path(local)

    return fetch


_MODELS_URI = re.compile(
    r"^models:/(?:(?P<model_id>m-[0-9a-f]+)|(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+)))(?P<path>/.*)?$"
)


def _resolve_models_uri(uri: str, client: Any) -> str:
    """The storage location of a ``models:/`` URI, resolved with ``client`` (its registry, not the global one)."""
    match = _MODELS_URI.match(uri)
    if match is None:
        raise InvalidInputError(
            f"cannot fetch {uri!r}: use models:/NAME/VERSION, models:/NAME@ALIAS or models:/m-ID (then /PATH)"
        )
    if match["model_id"]:
        location = str(client.get_logged_model(match["model_id"]).artifact_location)
    else:
        version = match["version"] or client.get_model_version_by_alias(match["name"], match["alias"]).version
        location = str(client.get_model_version_download_uri(match["name"], str(version)))
    return location.rstrip("/") + (match["path"] or "")


def member_uri(uri: str, member: str) -> str:
    """The URI of file ``member`` inside the directory at ``uri``."""
    if _is_local(urlsplit(uri).scheme.lower()) and "://" not in uri:
        return str(Path(uri) / member)
    return f"{uri.rstrip('/')}/{member}"


def model_ref(
    name: str, version: str | int, artifact_uri: str, fetch: Fetch = fetch_artifact, *, pipeline_run_id: str = ""
) -> ModelRef:
    """A :class:`ModelRef` for the bundle at ``artifact_uri``, with the schema and profile read from it.

    Only the manifest and the reference profile are fetched, not the model. ``pipeline_run_id`` (the version's
    lineage, from the registry) is carried to the targets that annotate what they create.

    Raises:
        NotFoundError: no hybridml bundle at ``artifact_uri``.
        InvalidInputError: a malformed manifest or profile.
    """
    with tempfile.TemporaryDirectory(prefix="hybridml-ref-") as scratch:
        try:
            manifest = fetch(member_uri(artifact_uri, MANIFEST), Path(scratch) / "manifest")
        except NotFoundError as exc:
            raise NotFoundError(f"no hybridml model at {artifact_uri}: {MANIFEST} is missing") from exc
        try:
            schema = FeatureSchema.from_dict(json.loads(manifest.read_text())["schema"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"malformed model manifest at {artifact_uri}: {exc}") from exc
        try:
            profile_path: Path | None = fetch(member_uri(artifact_uri, PROFILE_FILE), Path(scratch) / "profile")
        except NotFoundError:
            profile_path = None  # bundles saved before reference profiles existed
        profile = _read_profile(profile_path, artifact_uri) if profile_path is not None else None
    # ModelRef turns an int version into its string; a target refuses any other non-string.
    return ModelRef(
        name=name,
        version=cast(str, version),
        artifact_uri=artifact_uri,
        schema=schema,
        profile=profile,
        pipeline_run_id=pipeline_run_id,
    )


def _read_profile(path: Path, artifact_uri: str) -> ReferenceProfile:
    try:
        return ReferenceProfile.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"malformed reference profile at {artifact_uri}: {exc}") from exc
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc.message} (at {artifact_uri})") from exc
