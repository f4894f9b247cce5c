"""Fixtures of the SageMaker tests: one moto_server process per session, bundles, and targets pointed at it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle
from hybridml.deploy.factory import make_target
from hybridml.deploy.sagemaker import SageMakerTarget
from tests.integration.sagemaker import motoserver
from tests.integration.sagemaker.motoserver import MotoServer, config


@dataclass
class SmBundles:
    """Bundles saved once per session."""

    v1: Path
    v2: Path
    logistic: Path
    categorical: Path
    broken: Path
    rows: list[dict[str, float]]


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with motoserver.running(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto account with the model bucket, and the AWS chain of this process pointed at it."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)
    moto.reset()
    return moto


@pytest.fixture(scope="session")
def sm_bundles(tmp_path_factory: pytest.TempPathFactory) -> SmBundles:
    root = tmp_path_factory.mktemp("sagemaker-bundles")
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    for name, trees in (("v1", 8), ("v2", 3)):
        save_bundle(fit("xgboost", {"n_estimators": trees}, X, y), "xgboost", {}, schema, root / name)
    save_bundle(fit("logistic_regression", {}, X, y), "logistic_regression", {}, schema, root / "logistic")
    small = pd.DataFrame(
        {"amount": [float(i % 13) for i in range(60)], "city": ["a", "b", "c"] * 20, "label": ["no", "yes"] * 30}
    )
    small_schema = infer_schema(small, "label")
    model = fit(
        "xgboost", {"n_estimators": 2}, encode_features(small, small_schema), encode_labels(small, small_schema)
    )
    save_bundle(model, "xgboost", {}, small_schema, root / "categorical")
    shutil.copytree(root / "v1", root / "broken")
    (root / "broken" / "model.json").write_text("{broken")
    rows = [{k: float(v) for k, v in frame[schema.names].iloc[i].items()} for i in (0, 1, 7)]
    return SmBundles(root / "v1", root / "v2", root / "logistic", root / "categorical", root / "broken", rows)


@pytest.fixture
def make(aws: MotoServer) -> Callable[..., SageMakerTarget]:
    """``make(sleep=..., **config overrides)``: a SageMaker target built by the factory, clients from the AWS chain."""

    def build(sleep: Callable[[float], None] = time.sleep, **overrides: Any) -> SageMakerTarget:
        target = make_target(config(**overrides), sleep=sleep)
        assert isinstance(target, SageMakerTarget)
        return target

    return build


@dataclass
class RegistryHome:
    """An MLflow registry on SQLite under a hybridml home, and a way to register the v1 bundle under a name."""

    home: Path
    tracking_uri: str
    register: Callable[[str], int]


@pytest.fixture(scope="session")
def registry_home(tmp_path_factory: pytest.TempPathFactory, sm_bundles: SmBundles) -> RegistryHome:
    import mlflow

    from hybridml.core.model import read_bundle
    from hybridml.registry import Registry
    from hybridml.steps import release

    home = tmp_path_factory.mktemp("sm-home")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("sagemaker", artifact_location=(home / "artifacts").as_uri())

    def register(name: str) -> int:
        run_id = client.create_run(experiment).info.run_id
        model_uri = Registry(uri, user="test").log_bundle(run_id, read_bundle(sm_bundles.v1))
        client.set_terminated(run_id)
        return release.register(
            model_name=name, model_uri=model_uri, run_id=run_id, roc_auc=0.95, data_hash="sha256:x",
            pipeline_run_id=f"p-{name}", branch="direct", run_key=f"p-{name}/direct", tracking_uri=uri,
        ).model_version  # fmt: skip

    return RegistryHome(home, uri, register)
