"""Artifact storage: resolve a data or model URI (plain path, file://, s3://) to a local file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import ParseResult, unquote, urlparse

from hybridml.errors import InvalidInputError, NotFoundError

SCHEMES = ("", "file", "s3")


def fetch(uri: str, dst_dir: str | Path) -> Path:
    """Return a local path holding the object at ``uri``, downloading ``s3://`` objects into ``dst_dir``.

    S3 honours the usual boto3 settings (``AWS_ENDPOINT_URL`` for MinIO or moto, credentials chain).

    Raises:
        InvalidInputError: unsupported scheme or malformed URI.
        NotFoundError: the object does not exist.
    """
    parsed = check_scheme(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri).expanduser()
        if not path.is_file():
            raise NotFoundError(f"data file not found: {path}")
        return path
    return _fetch_s3(parsed.netloc, parsed.path.lstrip("/"), Path(dst_dir), uri)


def check_scheme(uri: str) -> ParseResult:
    """``uri`` parsed, if its scheme is one hybridml reads data from.

    Raises:
        InvalidInputError: any other scheme, with what to do instead.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        raise InvalidInputError(
            f"cannot read data from {uri!r}: http(s) URIs are not supported (a pipeline step must be able to read"
            " the same data again); download it to a file, or copy it to S3/MinIO and give s3://BUCKET/KEY"
        )
    if parsed.scheme not in SCHEMES:
        raise InvalidInputError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use a path, file:// or s3://)")
    return parsed


def check_exists(uri: str) -> ParseResult:
    """``uri`` parsed, once its object is known to exist (nothing is downloaded).

    Raises:
        InvalidInputError: unsupported scheme or malformed URI.
        NotFoundError: the file or S3 object does not exist.
    """
    parsed = check_scheme(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri).expanduser()
        if not path.is_file():
            raise NotFoundError(f"data file not found: {path}")
        return parsed
    _s3_object(
        parsed.netloc,
        parsed.path.lstrip("/"),
        uri,
        lambda client, bucket, key: client.head_object(Bucket=bucket, Key=key),
    )
    return parsed


def _fetch_s3(bucket: str, key: str, dst_dir: Path, uri: str) -> Path:
    target = dst_dir / Path(key).name

    def download(client: Any, bucket: str, key: str) -> None:
        dst_dir.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))

    _s3_object(bucket, key, uri, download)
    return target


def _s3_object(bucket: str, key: str, uri: str, op: Callable[[Any, str, str], object]) -> None:
    """Run ``op(s3_client, bucket, key)``, turning boto3's failures into hybridml's errors for ``uri``."""
    if not bucket or not key:
        raise InvalidInputError(f"malformed S3 URI {uri!r} (expected s3://BUCKET/KEY)")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        op(boto3.client("s3"), bucket, key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            raise NotFoundError(f"data object not found: {uri}") from exc
        raise InvalidInputError(f"cannot read {uri}: {exc}") from exc
    except BotoCoreError as exc:
        raise InvalidInputError(f"cannot read {uri}: {exc}") from exc
