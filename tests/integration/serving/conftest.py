"""Model bundles and a helper that starts the real model server process on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle
from hybridml.serving.client import is_ready


@pytest.fixture(scope="session")
def cancer() -> tuple[pd.DataFrame, str]:
    return builtin_breast_cancer()


def _build(directory: Path, frame: pd.DataFrame, target: str, n_estimators: int) -> Path:
    schema = infer_schema(frame, target)
    model = fit("xgboost", {"n_estimators": n_estimators}, encode_features(frame, schema), encode_labels(frame, schema))
    save_bundle(model, "xgboost", {"n_estimators": n_estimators}, schema, directory)
    return directory


@pytest.fixture(scope="session")
def xgb_bundle(tmp_path_factory: pytest.TempPathFactory, cancer: tuple[pd.DataFrame, str]) -> Path:
    return _build(tmp_path_factory.mktemp("bundles") / "xgb", *cancer, n_estimators=20)


@pytest.fixture(scope="session")
def xgb_bundle_v2(tmp_path_factory: pytest.TempPathFactory, cancer: tuple[pd.DataFrame, str]) -> Path:
    """A second, different model with the same features (for canaries)."""
    return _build(tmp_path_factory.mktemp("bundles") / "xgb2", *cancer, n_estimators=5)


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    endpoint: str
    ready_after_s: float

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(model_dir: Path, name: str, log: Path, *extra: str) -> Launched:
    """Start ``python -m hybridml.serving`` on a free loopback port and wait until it answers ready."""
    port = free_port()
    command = [sys.executable, "-m", "hybridml.serving", "--model-dir", str(model_dir), "--model-name", name]
    command += ["--bind-port", str(port), *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    while time.monotonic() - start < 60:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if is_ready(endpoint, name, timeout_s=0.5):
            return Launched(process, endpoint, time.monotonic() - start)
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"server not ready after 60s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def launch() -> Callable[..., Launched]:
    """``launch(model_dir, name, log, *extra_flags)`` starts a server process and waits until it is ready."""
    return _launch
