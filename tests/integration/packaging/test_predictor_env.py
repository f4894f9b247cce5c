"""The predictor runs from the base install alone (what serving/Dockerfile installs): no MLflow, kfp or pandas."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle

ROOT = Path(__file__).resolve().parents[3]
UV = ROOT / ".tools" / "bin" / "uv"
PIPELINE_ONLY = ("mlflow", "kfp", "optuna", "pandas", "pyarrow", "matplotlib", "typer", "rich", "kserve")


@pytest.fixture(scope="module")
def predictor_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not UV.exists():
        pytest.skip(f"{UV} is missing: run `make setup` first (it installs the pinned uv)")
    env_dir = tmp_path_factory.mktemp("predictor") / "env"
    subprocess.run(
        [str(UV), "sync", "--frozen", "--no-dev", "--no-install-project", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(env_dir)},
        check=True,
        timeout=600,
    )
    return env_dir


def _python(env_dir: Path) -> list[str]:
    return [str(env_dir / "bin" / "python")]


def _env() -> dict[str, str]:
    # The project's own source (not installed into that env, as --no-install-project leaves it) on the path.
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def test_base_install_lacks_the_pipeline_stack(predictor_env: Path) -> None:
    probe = (
        "import importlib.util, json, sys;"
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    found = json.loads(
        subprocess.run(
            [*_python(predictor_env), "-c", probe, *PIPELINE_ONLY, "xgboost", "sklearn", "skops", "uvicorn"],
            capture_output=True, text=True, check=True, env=_env(),
        ).stdout
    )  # fmt: skip
    assert {m for m, present in found.items() if present} == {"xgboost", "sklearn", "skops", "uvicorn"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    out = {}
    for model_type in ("xgboost", "logistic_regression"):
        directory = tmp_path_factory.mktemp("bundles") / model_type
        save_bundle(fit(model_type, {}, X, y), model_type, {}, schema, directory)
        out[model_type] = directory
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(predictor_env: Path, tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def serve(model_dir: Path) -> str:
        port = _free_port()
        log = (tmp_path / f"{model_dir.name}.log").open("wb")
        process = subprocess.Popen(
            [*_python(predictor_env), "-m", "hybridml.serving", "--model-dir", str(model_dir),
             "--model-name", "m", "--bind-port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=_env(),
        )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / f"{model_dir.name}.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return url
            except OSError:
                time.sleep(0.1)
        raise AssertionError("predictor not ready within 60 s")

    yield serve
    for process in started:
        process.terminate()
        process.wait(timeout=15)


@pytest.mark.parametrize("model_type", ["xgboost", "logistic_regression"])
def test_predictor_serves_from_the_base_install(served: object, bundles: dict[str, Path], model_type: str) -> None:
    frame, target = builtin_breast_cancer()
    row = frame.drop(columns=[target]).iloc[0].to_dict()
    url = served(bundles[model_type])  # type: ignore[operator]
    request = urllib.request.Request(
        f"{url}/v1/models/m:predict", data=json.dumps({"instances": [row]}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        scores = json.loads(answer.read())["predictions"]
    assert len(scores) == 1 and 0.0 <= scores[0] <= 1.0
