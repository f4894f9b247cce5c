"""Data from s3:// through boto3 against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from hybridml.adapters import storage
from hybridml.core import data
from hybridml.errors import InvalidInputError, NotFoundError
from hybridml.steps.prepare import read_input


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    patch = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="lake")
    frame, _ = data.builtin_breast_cancer()
    local = tmp_path_factory.mktemp("s3") / "cancer.parquet"
    frame.to_parquet(local, index=False)
    client.upload_file(str(local), "lake", "tables/cancer.parquet")
    yield endpoint
    patch.undo()
    server.stop()


def test_s3_object_is_fetched_and_read(s3: str, tmp_path: Path) -> None:
    path = storage.fetch("s3://lake/tables/cancer.parquet", tmp_path)
    assert path.parent == tmp_path
    frame, target = read_input("s3://lake/tables/cancer.parquet", "target")
    assert target == "target"
    assert data.content_hash(frame) == data.content_hash(data.builtin_breast_cancer()[0])


def test_missing_object_and_bad_uris(s3: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"data object not found: s3://lake/none\.csv"):
        storage.fetch("s3://lake/none.csv", tmp_path)
    with pytest.raises(NotFoundError, match="data object not found"):
        storage.fetch("s3://no-bucket/x.csv", tmp_path)
    with pytest.raises(InvalidInputError, match="malformed S3 URI"):
        storage.fetch("s3://lake", tmp_path)
    with pytest.raises(InvalidInputError, match="unsupported URI scheme 'ftp'"):
        storage.fetch("ftp://host/x.csv", tmp_path)


def test_file_uri_and_plain_path(tmp_path: Path) -> None:
    target = tmp_path / "t.csv"
    target.write_text("a,b\n1,2\n")
    assert storage.fetch(target.as_uri(), tmp_path) == target
    assert storage.fetch(str(target), tmp_path) == target


def test_preflight_checks_an_s3_object_exists_without_downloading_it(s3: str, tmp_path: Path) -> None:
    from hybridml.steps.prepare import preflight

    args = {"target": "target", "drop_columns": "", "keep_columns": "", "positive_class": ""}
    preflight(data_uri="s3://lake/tables/cancer.parquet", **args)
    with pytest.raises(NotFoundError, match=r"data object not found: s3://lake/tables/none\.parquet"):
        preflight(data_uri="s3://lake/tables/none.parquet", **args)
    with pytest.raises(NotFoundError, match="data object not found"):
        storage.check_exists("s3://no-bucket/x.csv")
    with pytest.raises(InvalidInputError, match="http\\(s\\) URIs are not supported"):
        storage.check_exists("http://host/x.csv")
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded
