"""Safe model loading: allowed storage schemes only, no path escaping the model root, no pickle files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from hybridml.errors import InvalidInputError, NotFoundError

SCHEMES = ("file", "s3")
# Formats that execute code when loaded; hybridml bundles never need them.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".dill", ".cloudpickle", ".sav")
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
MAX_OBJECTS = 1000


def _decoded(text: str) -> str:
    """``text`` percent-decoded until stable (at most 3 rounds), so ``%252e%252e`` cannot hide a ``..``."""
    for _ in range(3):
        decoded = unquote(text)
        if decoded == text:
            return text
        text = decoded
    raise InvalidInputError(f"path {text[:100]!r} is percent-encoded too many times")


def safe_relative(path: str) -> PurePosixPath:
    """``path`` as a relative path that stays inside its root, or InvalidInputError.

    Refuses absolute paths, ``..`` segments (also percent-encoded), backslashes, NUL and drive letters.
    """
    text = _decoded(path)
    if "\x00" in text or "\\" in text:
        raise InvalidInputError(f"path {path[:100]!r} contains a NUL or backslash")
    pure = PurePosixPath(text)
    if pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise InvalidInputError(f"path {path[:100]!r} is absolute; only paths inside the model root are allowed")
    if ".." in pure.parts:
        raise InvalidInputError(f"path {path[:100]!r} escapes the model root")
    return pure


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that resolves (symlinks included) outside ``root``."""
    base = root.resolve()
    target = (base / safe_relative(relative)).resolve()
    if target != base and base not in target.parents:
        raise InvalidInputError(f"path {relative[:100]!r} resolves outside the model root {base}")
    return target


def check_no_pickle(directory: Path, *, allow_pickle: bool = False) -> None:
    """Refuse a model directory holding pickle-based files (by suffix or pickle header) unless allowed."""
    if allow_pickle:
        return
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise InvalidInputError(f"refusing pickle-based model file {path.name} (pass --allow-pickle to accept)")
        with path.open("rb") as handle:
            if handle.read(2) in _PICKLE_MAGIC:
                raise InvalidInputError(f"refusing pickle-format file {path.name} (pass --allow-pickle to accept)")


def resolve_model(
    uri: str,
    *,
    model_root: Path | None = None,
    cache_dir: Path | None = None,
    allow_pickle: bool = False,
    s3_client: Any = None,
) -> Path:
    """The local directory of the model at ``uri``, fetched first if remote.

    Args:
        uri: ``file:///abs/dir``, ``s3://bucket/prefix`` or a path. With ``model_root`` set, local paths
            and ``file://`` URIs are taken relative to it and may not leave it.
        model_root: the only directory local models may come from (None: any local directory).
        cache_dir: where remote models are downloaded (None: a new temporary directory).
        allow_pickle: accept directories that contain pickle-based files.
        s3_client: a boto3 S3 client (None: one from the environment, ``AWS_ENDPOINT_URL`` included).

    Raises:
        InvalidInputError: a scheme that is not allowed, an escaping path or a pickle file.
        NotFoundError: nothing at ``uri``.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme and len(scheme) > 1 and scheme not in SCHEMES:
        raise InvalidInputError(f"storage scheme {scheme!r} is not allowed (allowed: {', '.join(SCHEMES)})")
    if scheme == "s3":
        return _fetch_s3(parts.netloc, parts.path, cache_dir, s3_client, allow_pickle=allow_pickle)
    raw = parts.path if scheme == "file" else uri
    text = _decoded(raw)
    if ".." in PurePosixPath(text).parts:
        raise InvalidInputError(f"path {raw[:100]!r} contains '..'")
    if model_root is None:
        directory = Path(text).resolve()
    elif text.startswith("/"):
        # An absolute path is accepted only if it already lies inside the root (symlinks resolved).
        root, directory = model_root.resolve(), Path(text).resolve()
        if directory != root and root not in directory.parents:
            raise InvalidInputError(f"path {raw[:100]!r} is outside the model root {root}")
    else:
        directory = inside(model_root, text)
    if not directory.is_dir():
        raise NotFoundError(f"model directory {directory} does not exist")
    check_no_pickle(directory, allow_pickle=allow_pickle)
    return directory


def _fetch_s3(bucket: str, prefix: str, cache_dir: Path | None, client: Any, *, allow_pickle: bool) -> Path:
    if not bucket:
        raise InvalidInputError("s3 URI needs a bucket: s3://BUCKET/PREFIX")
    prefix = prefix.strip("/")
    if prefix:
        safe_relative(prefix)
    listing = f"{prefix}/" if prefix else ""  # a folder: s3://b/m/1 must not also take the objects of m/10/
    if client is None:
        import boto3  # only remote models need it

        client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    destination = Path(tempfile.mkdtemp(prefix="model-", dir=cache_dir))
    try:
        listed = 0
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=listing):
            for item in page.get("Contents", []):
                key: str = item["Key"]
                relative = key[len(listing) :].lstrip("/") if listing else key
                if not relative or key.endswith("/"):
                    continue
                listed += 1
                if listed > MAX_OBJECTS:
                    raise InvalidInputError(f"s3://{bucket}/{prefix} holds more than {MAX_OBJECTS} objects")
                target = inside(destination, relative)  # a key like 'x/../../etc' is refused, not written
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(target))
        if not listed:
            raise NotFoundError(f"no objects under s3://{bucket}/{prefix}")
        check_no_pickle(destination, allow_pickle=allow_pickle)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)  # refused, failed or empty: nothing of it stays in the cache
        raise
    return destination
