"""LocalTarget end to end: deploy, canary split, promote, failed deploys, live status and delete, with real servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest
import requests

from hybridml.deploy import LocalConfig, ModelRef, make_target, model_ref
from hybridml.deploy.local import LocalTarget
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError
from hybridml.serving import client
from hybridml.serving.control import ControlClient
from hybridml.serving.predictor import BundlePredictor

pytestmark = pytest.mark.integration

NAME = "cancer"


def ref(version: int | str, bundle: Path, name: str = NAME) -> ModelRef:
    return model_ref(name, version, bundle.as_uri())


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    local = make_target(LocalConfig(tmp_path_factory.mktemp("deployments"), start_timeout_s=90))
    yield local
    for deployment in local.list():  # never leave a server behind, whatever failed
        local.delete(deployment.name)


@pytest.fixture(scope="module")
def row(cancer: tuple[pd.DataFrame, str], xgb_bundle: Path) -> dict[str, float]:
    frame, _ = cancer
    return {k: float(v) for k, v in frame[BundlePredictor.load(xgb_bundle).feature_names].iloc[0].items()}


def _variants(endpoint: str, row: dict[str, float], n: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(n):
        response = requests.post(f"{endpoint}/v1/models/{NAME}:predict", json={"instances": [row]}, timeout=10)
        assert response.status_code == 200, response.text
        key = f"{response.headers['X-Hybridml-Variant']}:{response.headers['X-Hybridml-Version']}"
        seen[key] = seen.get(key, 0) + 1
    return seen


def test_lifecycle(
    target: LocalTarget, xgb_bundle: Path, xgb_bundle_v2: Path, row: dict[str, float], tmp_path: Path
) -> None:
    first = target.deploy(ref(1, xgb_bundle))
    ready = target.wait_until_ready(NAME, timeout_s=30)
    assert (first.stable_version, first.canary_version, ready.ready) == ("1", None, True)
    expected_v1 = BundlePredictor.load(xgb_bundle).predict([row])
    assert client.predict(ready.endpoint, NAME, [row]) == pytest.approx(expected_v1, abs=1e-6)
    assert (target.state_dir / NAME / "1" / "hybridml.json").is_file()  # served from its own copy

    # A broken bundle is refused before anything starts; version 1 keeps serving.
    corrupt = tmp_path / "corrupt"
    shutil.copytree(xgb_bundle, corrupt)
    (corrupt / "model.json").write_text("{broken")
    with pytest.raises(InvalidInputError, match="cannot load model file"):
        target.deploy(ref(2, corrupt))
    with pytest.raises(InvalidInputError, match="traffic percent"):
        target.deploy(ref(2, xgb_bundle_v2), traffic_percent=0)
    with pytest.raises(ConflictError, match="no canary"):
        target.rollback(NAME)
    assert target.status(NAME).ready and target.status(NAME).stable_version == "1"

    canary = target.deploy(ref(2, xgb_bundle_v2), traffic_percent=30)
    assert (canary.stable_version, canary.canary_version, canary.canary_percent, canary.ready) == ("1", "2", 30, True)
    seen = _variants(canary.endpoint, row, 60)
    assert set(seen) == {"stable:1", "canary:2"}
    assert 5 <= seen["canary:2"] <= 35  # about 30% of 60
    assert not client.is_ready(first.endpoint, NAME) or first.endpoint == canary.endpoint

    promoted = target.promote(NAME)
    assert (promoted.stable_version, promoted.canary_version, promoted.canary_percent) == ("2", None, 0)
    assert promoted.endpoint == canary.endpoint  # promoted in the running router, on the same port
    assert set(_variants(promoted.endpoint, row, 10)) == {"stable:2"}
    expected_v2 = BundlePredictor.load(xgb_bundle_v2).predict([row])
    assert client.predict(promoted.endpoint, NAME, [row]) == pytest.approx(expected_v2, abs=1e-6)

    assert [d.name for d in target.list()] == [NAME]
    pid = int(json.loads((target.state_dir / f"{NAME}.json").read_text())["pid"])
    target.delete(NAME)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(NotFoundError):
        target.status(NAME)
    assert not client.is_ready(promoted.endpoint, NAME)
    assert (target.state_dir / f"{NAME}.log").is_file()  # the log outlives the deployment
    assert not (target.state_dir / NAME).exists()  # the bundle copies do not


def test_server_that_cannot_start_leaves_previous_state(tmp_path: Path, xgb_bundle: Path) -> None:
    # An interpreter that exits at once stands in for a server that crashes while starting.
    failing = make_target(LocalConfig(tmp_path, python=shutil.which("false") or "/bin/false"))
    with pytest.raises(NotReadyError, match="exited with code 1 before it was ready"):
        failing.deploy(ref(1, xgb_bundle, name="broken"))
    assert failing.list() == []
    with pytest.raises(InvalidInputError, match="has no stable version"):
        failing.deploy(ref(2, xgb_bundle, name="broken"), traffic_percent=10)


def test_status_after_a_canary_crash_is_live(target: LocalTarget, xgb_bundle: Path, xgb_bundle_v2: Path) -> None:
    name = "crashing"
    target.deploy(ref(1, xgb_bundle, name=name))
    target.deploy(ref(2, xgb_bundle_v2, name=name), traffic_percent=40)
    state = target.state(name)
    assert state["control"].startswith("http://127.0.0.1:") and state["control"] != state["endpoint"]
    live = ControlClient(state["control"]).state()
    assert (live["canary_percent"], live["variants"]["canary"]["version"]) == (40, "2")
    os.kill(live["variants"]["canary"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    status = target.status(name)
    while status.canary_percent != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        status = target.status(name)
    assert (status.stable_version, status.canary_version, status.canary_percent, status.ready) == ("1", "2", 0, True)
    assert "canary 2 is down, stable answers all requests" in status.detail
    with pytest.raises(ConflictError, match="no live canary to promote"):
        target.promote(name)
    assert target.rollback(name).canary_version is None
    target.delete(name)


@pytest.fixture(scope="module")
def s3_models(xgb_bundle: Path) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    patch = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patch.setenv(key, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    for path in xgb_bundle.iterdir():
        s3.upload_file(str(path), "models", f"cancer/1/{path.name}")
    # A neighbour whose prefix starts like version 1's: it must not leak into version 1's download.
    s3.put_object(Bucket="models", Key="cancer/10/model.json", Body=b"not this one")
    yield "s3://models/cancer/1"
    patch.undo()
    server.stop()


def test_deploy_from_s3(target: LocalTarget, s3_models: str, xgb_bundle: Path, row: dict[str, float]) -> None:
    reference = model_ref("from-s3", 1, s3_models)
    assert reference.schema == model_ref("x", 1, xgb_bundle.as_uri()).schema
    deployed = target.deploy(reference)
    assert (deployed.stable_version, deployed.ready) == ("1", True)
    copy = target.state_dir / "from-s3" / "1"
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in xgb_bundle.iterdir())
    assert (copy / "model.json").read_bytes() == (xgb_bundle / "model.json").read_bytes()
    assert [p.name for p in (target.state_dir / "from-s3").iterdir()] == ["1"]  # the download was moved, not left
    expected = BundlePredictor.load(xgb_bundle).predict([row])
    assert target.invoke("from-s3", [row]) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(NotFoundError, match="no hybridml model at s3://models/cancer/2"):
        model_ref("from-s3", 2, "s3://models/cancer/2")
    target.delete("from-s3")
