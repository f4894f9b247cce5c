"""The ``model.tar.gz`` SageMaker unpacks into /opt/ml/model: the bundle's files, or ``xgboost-model`` alone."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from hybridml.core.model import MANIFEST, PROFILE_FILE, XGBOOST, Bundle, read_bundle
from hybridml.core.schema import CATEGORY
from hybridml.errors import InvalidInputError

ARCHIVE = "model.tar.gz"
BUILTIN_MODEL_FILE = "xgboost-model"
PROJECT = "project"
XGBOOST_BUILTIN = "xgboost-builtin"


@dataclass(frozen=True)
class Package:
    """A packed model: the archive's bytes, their ``sha256`` hex digest and the member names, in order."""

    data: bytes
    sha256: str
    members: tuple[str, ...]


def check_builtin(bundle: Bundle) -> None:
    """Refuse a bundle SageMaker's built-in XGBoost image cannot serve as this project does.

    Raises:
        InvalidInputError: not an XGBoost model, or one with category features (the built-in image takes
            plain numbers in CSV, so the project's category encoding would be lost); the message names the
            project image as the way to serve it.
    """
    fix = "deploy it with serving='project' (the project's predictor image) instead"
    if bundle.model_type != XGBOOST:
        raise InvalidInputError(
            f"SageMaker's built-in XGBoost image serves XGBoost models only, this is {bundle.model_type}; {fix}"
        )
    categorical = [f.name for f in bundle.schema.features if f.dtype == CATEGORY]
    if categorical:
        raise InvalidInputError(
            f"SageMaker's built-in XGBoost image cannot encode category features ({', '.join(categorical)}); {fix}"
        )


def pack(directory: Path, serving: str) -> Package:
    """Pack the bundle in ``directory`` for ``serving`` (``project`` or ``xgboost-builtin``).

    ``project``: the bundle's files at the archive root (``hybridml.json``, the model file and
    ``profile.json`` when there is one), which the predictor reads from /opt/ml/model. ``xgboost-builtin``:
    the booster as ``xgboost-model`` at the root, nothing else (the built-in image loads that file; XGBoost
    recognises the JSON model by its content). The archive is byte-for-byte reproducible (sorted members, zero times and
    owners), so the same bundle always gives the same digest and a re-deploy finds what it uploaded before.

    Raises:
        InvalidInputError: not a bundle, a bundle file that is a link, or a model the built-in image refuses.
    """
    bundle = read_bundle(directory)
    if serving == XGBOOST_BUILTIN:
        check_builtin(bundle)
        files = [(BUILTIN_MODEL_FILE, directory / bundle.model_file)]
    elif serving == PROJECT:
        # Only the bundle's own files: a registry download also holds MLflow's (MLmodel, requirements...).
        names = {MANIFEST, bundle.model_file} | ({PROFILE_FILE} if (directory / PROFILE_FILE).exists() else set())
        files = []
        for name in sorted(names):
            path = directory / name
            if path.is_symlink() or not path.is_file():
                raise InvalidInputError(f"bundle {directory} holds {name!r}, which is not a plain file")
            files.append((name, path))
    else:
        raise InvalidInputError(f"unknown serving mode {serving!r} (choose from {PROJECT}, {XGBOOST_BUILTIN})")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, path in files:
            content = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            archive.addfile(info, io.BytesIO(content))
    data = gzip.compress(raw.getvalue(), mtime=0)
    return Package(data=data, sha256=hashlib.sha256(data).hexdigest(), members=tuple(name for name, _ in files))
