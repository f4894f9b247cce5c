"""The release steps deploy by reference: registry version -> ModelRef -> target fetches it -> wait -> invoke."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, positive_scores, read_bundle, save_bundle
from hybridml.core.profile import build_profile
from hybridml.deploy import LocalConfig, make_target, mlflow_fetch, model_ref
from hybridml.errors import InvalidInputError, NotFoundError
from hybridml.registry import Registry
from hybridml.serving.predictor import BundlePredictor
from hybridml.steps import release

NAME = "cancer"


@dataclass
class Registered:
    tracking_uri: str
    home: Path
    version: int
    bundle: Path
    test_path: str
    schema_path: str


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    root = tmp_path_factory.mktemp("release")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    model = fit("xgboost", {"n_estimators": 10}, X, y)
    profile = build_profile(frame, schema, positive_scores(model, X))
    bundle = save_bundle(model, "xgboost", {"n_estimators": 10}, schema, root / "bundle", profile=profile)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("release", artifact_location=(root / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    model_uri = Registry(uri, user="test").log_bundle(run_id, bundle)
    version = release.register(
        model_name=NAME,
        model_uri=model_uri,
        run_id=run_id,
        roc_auc=0.95,
        data_hash=schema.data_hash,
        pipeline_run_id="p-1",
        branch="direct",
        run_key="p-1/direct",
        tracking_uri=uri,
    ).model_version
    status = release.approve(
        model_name=NAME, version=version, threshold=0.5, tolerance=0.01, auto_approve=True, tracking_uri=uri
    )
    assert status == "Approved"
    test_path, schema_path = root / "test.parquet", root / "schema.json"
    frame.head(20).to_parquet(test_path, index=False)
    schema_path.write_text(json.dumps(schema.to_dict()))
    home = root / "home"
    yield Registered(uri, home, version, root / "bundle", str(test_path), str(schema_path))
    target = make_target(LocalConfig(home / "deployments"))
    for deployment in target.list():
        target.delete(deployment.name)


def test_deploy_wait_and_infer_go_through_the_target(registered: Registered) -> None:
    home = str(registered.home)
    endpoint = release.deploy(
        model_name=NAME,
        version=registered.version,
        target="local",
        traffic_percent=100,
        home=home,
        tracking_uri=registered.tracking_uri,
    )
    assert release.wait_ready(model_name=NAME, target="local", timeout_s=30, home=home) == endpoint
    # The target fetched its own copy from the version's artifact URI: no staging download is left anywhere.
    copy = registered.home / "deployments" / NAME / str(registered.version)
    assert read_bundle(copy).schema == read_bundle(registered.bundle).schema
    assert read_bundle(copy).profile == read_bundle(registered.bundle).profile
    state = make_target(LocalConfig(registered.home / "deployments")).state(NAME)
    info = Registry(registered.tracking_uri, user="test").get_version(NAME, registered.version)
    assert state["stable"]["artifact_uri"] == info.source
    assert json.loads(info.tags["deployment"]) == {"target": "local", "endpoint": endpoint}

    scores = release.infer(
        model_name=NAME,
        test_path=registered.test_path,
        schema_path=registered.schema_path,
        n_rows=4,
        target="local",
        home=home,
    )
    frame, _ = builtin_breast_cancer()
    rows = json.loads(frame[read_bundle(registered.bundle).schema.names].head(4).to_json(orient="records"))
    assert scores == pytest.approx(BundlePredictor.load(registered.bundle).predict(rows), abs=1e-6)


def test_step_deploy_config_is_typed_and_checked(registered: Registered) -> None:
    with pytest.raises(InvalidInputError, match="unknown local deploy config key 'port'"):
        release.deploy_target("local", str(registered.home), '{"port": 1}')
    with pytest.raises(InvalidInputError, match="deploy config is for target 'kserve', not 'local'"):
        release.deploy_target("local", str(registered.home), "target: kserve")
    target = release.deploy_target("", str(registered.home), '{"start_timeout_s": 7}')
    assert target.config == LocalConfig(registered.home / "deployments", start_timeout_s=7)  # type: ignore[attr-defined]
    with pytest.raises(NotFoundError, match="no local deployment named 'ghost'"):
        release.wait_ready(model_name="ghost", target="local", timeout_s=0, home=str(registered.home))


def test_an_mlflow_uri_is_fetched_through_mlflow(registered: Registered) -> None:
    fetch = mlflow_fetch(registered.tracking_uri)
    uri = f"models:/{NAME}/{registered.version}"
    ref = model_ref(NAME, registered.version, uri, fetch)
    original = read_bundle(registered.bundle)
    assert (ref.version, ref.schema, ref.profile) == (str(registered.version), original.schema, original.profile)
    target = make_target(LocalConfig(registered.home / "deployments"), fetch=fetch)
    deployed = target.deploy(ref)
    assert (deployed.stable_version, deployed.ready) == (str(registered.version), True)
    assert target.state(NAME)["stable"]["artifact_uri"] == uri
    assert [p.name for p in (registered.home / "deployments" / NAME).iterdir()] == [str(registered.version)]
    with pytest.raises(NotFoundError, match=f"no hybridml model at models:/{NAME}/99"):
        model_ref(NAME, 99, f"models:/{NAME}/99", fetch)
