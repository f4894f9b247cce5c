"""LocalTarget end to end: deploy, canary split, promote, failed deploys and delete, with real server processes."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from hybridml.deploy.local import LocalTarget
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError
from hybridml.serving import client
from hybridml.serving.predictor import BundlePredictor

pytestmark = pytest.mark.integration

NAME = "cancer"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    local = LocalTarget(tmp_path_factory.mktemp("deployments"), start_timeout_s=90)
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
    first = target.deploy(NAME, 1, xgb_bundle)
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
        target.deploy(NAME, 2, corrupt)
    with pytest.raises(InvalidInputError, match="traffic percent"):
        target.deploy(NAME, 2, xgb_bundle_v2, traffic_percent=0)
    with pytest.raises(ConflictError, match="no canary"):
        target.rollback(NAME)
    assert target.status(NAME).ready and target.status(NAME).stable_version == "1"

    canary = target.deploy(NAME, 2, xgb_bundle_v2, traffic_percent=30)
    assert (canary.stable_version, canary.canary_version, canary.canary_percent, canary.ready) == ("1", "2", 30, True)
    seen = _variants(canary.endpoint, row, 60)
    assert set(seen) == {"stable:1", "canary:2"}
    assert 5 <= seen["canary:2"] <= 35  # about 30% of 60
    assert not client.is_ready(first.endpoint, NAME) or first.endpoint == canary.endpoint

    promoted = target.promote(NAME)
    assert (promoted.stable_version, promoted.canary_version, promoted.canary_percent) == ("2", None, 0)
    assert promoted.endpoint == canary.endpoint  # restarted on the same port
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


def test_server_that_cannot_start_leaves_previous_state(tmp_path: Path, xgb_bundle: Path) -> None:
    # An interpreter that exits at once stands in for a server that crashes while starting.
    failing = LocalTarget(tmp_path, python=shutil.which("false") or "/bin/false")
    with pytest.raises(NotReadyError, match="exited with code 1 before it was ready"):
        failing.deploy("broken", 1, xgb_bundle)
    assert failing.list() == []
    with pytest.raises(InvalidInputError, match="has no stable version"):
        failing.deploy("broken", 2, xgb_bundle, traffic_percent=10)
