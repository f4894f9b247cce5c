"""The SageMaker target's exact requests where moto cannot go (UpdateEndpoint) and its failure paths (Stubber).

botocore's Stubber checks each request against the service model and answers in order; an unexpected or
missing call fails the test, so every test states the whole conversation with SageMaker and S3.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle
from hybridml.deploy import model_ref
from hybridml.deploy.config import SageMakerConfig
from hybridml.deploy.sagemaker import Clients, SageMakerTarget, pack
from hybridml.deploy.sagemaker.naming import config_name, features_tag, model_name
from hybridml.errors import ConflictError, InvalidInputError, NotReadyError
from tests.contract.harness import FakeClock

ROLE = "arn:aws:iam::123456789012:role/hybridml-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/hybridml-predictor:1"
BUCKET = "models"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ARN = "arn:aws:sagemaker:us-east-1:123456789012"
ALARMS = ("churn-5xx", "churn-latency")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stub-bundles")
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    for name, trees in (("v1", 4), ("v2", 2)):
        save_bundle(fit("xgboost", {"n_estimators": trees}, X, y), "xgboost", {}, schema, root / name)
    return {"v1": root / "v1", "v2": root / "v2"}


@dataclass
class Stubs:
    """A target over stubbed clients, the stubbers, and its fake clock."""

    target: SageMakerTarget
    sm: Stubber
    runtime: Stubber
    s3: Stubber
    clock: FakeClock


@pytest.fixture
def stubs() -> Stubs:
    return make_stubs()


def make_stubs(**overrides: Any) -> Stubs:
    session = boto3.session.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1")
    clients = Clients(session.client("sagemaker"), session.client("sagemaker-runtime"), session.client("s3"))
    settings: dict[str, Any] = {
        "image_uri": IMAGE,
        "role_arn": ROLE,
        "bucket": BUCKET,
        "ready_timeout_s": 60.0,
        "poll_s": 1.0,
        "rollback_alarms": ALARMS,
        "canary_size_percent": 20,
        "canary_wait_s": 300,
        "termination_wait_s": 120,
    }
    settings.update(overrides)
    clock = FakeClock()
    target = SageMakerTarget(SageMakerConfig(**settings), clock=clock, sleep=clock.sleep, clients=clients)
    stubs = Stubs(target, Stubber(clients.sagemaker), Stubber(clients.runtime), Stubber(clients.s3), clock)
    for stubber in (stubs.sm, stubs.runtime, stubs.s3):
        stubber.activate()
    return stubs


# ----- canned answers -----


def endpoint(config: str, status: str = "InService", weights: dict[str, float] | None = None, **extra: Any) -> dict:
    variants = [
        {"VariantName": role, "CurrentWeight": w, "DesiredWeight": w, "CurrentInstanceCount": 1}
        for role, w in (weights or {"stable": 100.0}).items()
    ]
    return {
        "EndpointName": "churn",
        "EndpointArn": f"{ARN}:endpoint/churn",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "ProductionVariants": variants,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        **extra,
    }


def variant(role: str, model: str, weight: float) -> dict[str, Any]:
    return {
        "VariantName": role,
        "ModelName": model,
        "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large",
        "InitialVariantWeight": weight,
    }


def missing(stubber: Stubber, method: str, what: str, params: dict[str, Any]) -> None:
    stubber.add_client_error(
        method,
        service_error_code="ValidationException",
        service_message=f"Could not find {what}.",
        expected_params=params,
    )


def config_tags(features: str, **roles: str) -> list[dict[str, str]]:
    tags = {"hybridml:endpoint": "churn", "hybridml:features": features, "hybridml:serving": "project"}
    tags.update({f"hybridml:{role}": version for role, version in roles.items()})
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def expect_read(
    stubs: Stubs, config: str, variants: list[dict[str, Any]], tags: list[dict[str, str]], **live: Any
) -> None:
    """The three calls that read an endpoint: DescribeEndpoint, DescribeEndpointConfig, ListTags."""
    stubs.sm.add_response("describe_endpoint", endpoint(config, **live), {"EndpointName": "churn"})
    stubs.sm.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": config,
            "EndpointConfigArn": f"{ARN}:endpoint-config/{config}",
            "ProductionVariants": variants,
            "CreationTime": NOW,
        },
        {"EndpointConfigName": config},
    )
    stubs.sm.add_response("list_tags", {"Tags": tags}, {"ResourceArn": f"{ARN}:endpoint-config/{config}"})


def expect_model(stubs: Stubs, version: str, bundle: Path) -> str:
    """The upload of ``bundle`` and the CreateModel of ``version``; returns the model's name."""
    package = pack(bundle, "project")
    key = f"hybridml/churn/{version}/{package.sha256[:16]}/model.tar.gz"
    stubs.s3.add_client_error(
        "head_object", service_error_code="404", http_status_code=404, expected_params={"Bucket": BUCKET, "Key": key}
    )
    stubs.s3.add_response("put_object", {}, {"Bucket": BUCKET, "Key": key, "Body": package.data})
    manifest = key.replace("model.tar.gz", "hybridml.json")
    stubs.s3.add_response(
        "put_object", {}, {"Bucket": BUCKET, "Key": manifest, "Body": (bundle / "hybridml.json").read_bytes()}
    )
    url = f"s3://{BUCKET}/{key}"
    model = model_name("churn", version, {"data": url, "image": IMAGE, "role": ROLE, "serving": "project"})
    missing(stubs.sm, "describe_model", "model", {"ModelName": model})
    stubs.sm.add_response(
        "create_model",
        {"ModelArn": f"{ARN}:model/{model}"},
        {
            "ModelName": model,
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {
                "Image": IMAGE,
                "ModelDataUrl": url,
                "Environment": {"HYBRIDML_MODEL_NAME": "churn", "HYBRIDML_MODEL_VERSION": version},
            },
            "Tags": ANY,
        },
    )
    return model


def expect_cleanup(stubs: Stubs, configs: list[str], models: list[str]) -> None:
    """The listing of this endpoint's configs and models (all tagged as its own), in that order."""
    stubs.sm.add_response(
        "list_endpoint_configs",
        {
            "EndpointConfigs": [
                {"EndpointConfigName": c, "EndpointConfigArn": f"{ARN}:endpoint-config/{c}", "CreationTime": NOW}
                for c in configs
            ]
        },
        {"NameContains": "churn-c"},
    )
    for c in configs:
        stubs.sm.add_response(
            "list_tags",
            {"Tags": [{"Key": "hybridml:endpoint", "Value": "churn"}]},
            {"ResourceArn": f"{ARN}:endpoint-config/{c}"},
        )
    stubs.sm.add_response(
        "list_models",
        {"Models": [{"ModelName": m, "ModelArn": f"{ARN}:model/{m}", "CreationTime": NOW} for m in models]},
        {"NameContains": "churn-v"},
    )
    for m in models:
        stubs.sm.add_response(
            "list_tags", {"Tags": [{"Key": "hybridml:endpoint", "Value": "churn"}]}, {"ResourceArn": f"{ARN}:model/{m}"}
        )


def done(stubs: Stubs) -> None:
    for stubber in (stubs.sm, stubs.runtime, stubs.s3):
        stubber.assert_no_pending_responses()


BLUE_GREEN = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20},
            "WaitIntervalInSeconds": 300,
        },
        "TerminationWaitInSeconds": 120,
        "MaximumExecutionTimeoutInSeconds": 600,
    },
    "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "churn-5xx"}, {"AlarmName": "churn-latency"}]},
}


# ----- the update path -----


def test_replacing_stable_is_a_blue_green_canary_update_with_rollback_alarms(
    stubs: Stubs, bundles: dict[str, Path]
) -> None:
    ref = model_ref("churn", "2", bundles["v2"].as_uri())
    features = features_tag(ref.schema.names)
    m1 = "churn-v1-0000000001"
    c1 = "churn-c000000000001"
    expect_read(stubs, c1, [variant("stable", m1, 100.0)], config_tags(features, stable="1"))
    m2 = expect_model(stubs, "2", bundles["v2"])
    c2 = config_name("churn", {"variants": {"stable": [m2, 100]}, "shadow": None, "instances": ["ml.m5.large", 1]})
    missing(stubs.sm, "describe_endpoint_config", "endpoint configuration", {"EndpointConfigName": c2})
    stubs.sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"{ARN}:endpoint-config/{c2}"},
        {
            "EndpointConfigName": c2,
            "ProductionVariants": [variant("stable", m2, 100.0)],
            "Tags": config_tags(features, stable="2"),
        },
    )
    stubs.sm.add_response(
        "update_endpoint",
        {"EndpointArn": f"{ARN}:endpoint/churn"},
        {"EndpointName": "churn", "EndpointConfigName": c2, "DeploymentConfig": BLUE_GREEN},
    )
    stubs.sm.add_response("describe_endpoint", endpoint(c1, "Updating"), {"EndpointName": "churn"})
    stubs.sm.add_response("describe_endpoint", endpoint(c2), {"EndpointName": "churn"})
    expect_cleanup(stubs, [c1, c2], [m1, m2])
    stubs.sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": c1})
    stubs.sm.add_response("delete_model", {}, {"ModelName": m1})
    expect_read(stubs, c2, [variant("stable", m2, 100.0)], config_tags(features, stable="2"))

    deployed = stubs.target.deploy(ref)
    assert (deployed.stable_version, deployed.canary_version, deployed.ready) == ("2", None, True)
    assert stubs.clock.sleeps == [0.05]
    done(stubs)
    policy = stubs.target.deployment_config()["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["CanarySize"]["Value"] <= 50


def test_adding_a_canary_variant_is_a_plain_update_with_weights_from_the_percent(
    stubs: Stubs, bundles: dict[str, Path]
) -> None:
    ref = model_ref("churn", "2", bundles["v2"].as_uri())
    features = features_tag(ref.schema.names)
    m1, c1 = "churn-v1-0000000001", "churn-c000000000001"
    expect_read(stubs, c1, [variant("stable", m1, 100.0)], config_tags(features, stable="1"))
    m2 = expect_model(stubs, "2", bundles["v2"])
    layout = {"variants": {"stable": [m1, 70], "canary": [m2, 30]}, "shadow": None, "instances": ["ml.m5.large", 1]}
    c2 = config_name("churn", layout)
    missing(stubs.sm, "describe_endpoint_config", "endpoint configuration", {"EndpointConfigName": c2})
    stubs.sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"{ARN}:endpoint-config/{c2}"},
        {
            "EndpointConfigName": c2,
            "ProductionVariants": [variant("stable", m1, 70.0), variant("canary", m2, 30.0)],
            "Tags": config_tags(features, stable="1", canary="2"),
        },
    )
    # Guardrails need the old and new configs to have the same variant names: adding "canary" cannot use them.
    stubs.sm.add_response(
        "update_endpoint", {"EndpointArn": f"{ARN}:endpoint/churn"}, {"EndpointName": "churn", "EndpointConfigName": c2}
    )
    stubs.sm.add_response(
        "describe_endpoint", endpoint(c2, weights={"stable": 70.0, "canary": 30.0}), {"EndpointName": "churn"}
    )
    expect_cleanup(stubs, [c1, c2], [m1, m2])
    stubs.sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": c1})
    expect_read(
        stubs,
        c2,
        [variant("stable", m1, 70.0), variant("canary", m2, 30.0)],
        config_tags(features, stable="1", canary="2"),
        weights={"stable": 70.0, "canary": 30.0},
    )

    deployed = stubs.target.deploy(ref, traffic_percent=30)
    assert (deployed.stable_version, deployed.canary_version, deployed.canary_percent) == ("1", "2", 30)
    assert deployed.detail == f"serving 1 (70%) and canary 2 (30%) on SageMaker endpoint churn (config {c2})"
    assert stubs.clock.sleeps == []
    done(stubs)


def test_set_traffic_and_promote_send_exactly_these_requests(stubs: Stubs) -> None:
    features = "f" * 16
    c2 = "churn-c000000000002"
    two = [variant("stable", "churn-v1-0000000001", 70.0), variant("canary", "churn-v2-0000000002", 30.0)]
    tags = config_tags(features, stable="1", canary="2")
    expect_read(stubs, c2, two, tags, weights={"stable": 70.0, "canary": 30.0})
    stubs.sm.add_response(
        "update_endpoint_weights_and_capacities",
        {"EndpointArn": f"{ARN}:endpoint/churn"},
        {
            "EndpointName": "churn",
            "DesiredWeightsAndCapacities": [
                {"VariantName": "stable", "DesiredWeight": 90.0},
                {"VariantName": "canary", "DesiredWeight": 10.0},
            ],
        },
    )
    stubs.sm.add_response(
        "describe_endpoint", endpoint(c2, weights={"stable": 90.0, "canary": 10.0}), {"EndpointName": "churn"}
    )
    expect_read(stubs, c2, two, tags, weights={"stable": 90.0, "canary": 10.0})
    moved = stubs.target.set_traffic("churn", 10)
    assert (moved.canary_percent, moved.ready) == (10, True)

    expect_read(stubs, c2, two, tags, weights={"stable": 90.0, "canary": 10.0})
    c3 = config_name(
        "churn", {"variants": {"stable": ["churn-v2-0000000002", 100]}, "shadow": None, "instances": ["ml.m5.large", 1]}
    )
    missing(stubs.sm, "describe_endpoint_config", "endpoint configuration", {"EndpointConfigName": c3})
    stubs.sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"{ARN}:endpoint-config/{c3}"},
        {
            "EndpointConfigName": c3,
            "ProductionVariants": [variant("stable", "churn-v2-0000000002", 100.0)],
            "Tags": config_tags(features, stable="2"),
        },
    )
    stubs.sm.add_response(
        "update_endpoint", {"EndpointArn": f"{ARN}:endpoint/churn"}, {"EndpointName": "churn", "EndpointConfigName": c3}
    )
    stubs.sm.add_response("describe_endpoint", endpoint(c3), {"EndpointName": "churn"})
    expect_cleanup(stubs, [c2, c3], ["churn-v1-0000000001", "churn-v2-0000000002"])
    stubs.sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": c2})
    stubs.sm.add_response("delete_model", {}, {"ModelName": "churn-v1-0000000001"})
    expect_read(stubs, c3, [variant("stable", "churn-v2-0000000002", 100.0)], config_tags(features, stable="2"))
    promoted = stubs.target.promote("churn")
    assert (promoted.stable_version, promoted.canary_version, promoted.canary_percent) == ("2", None, 0)
    done(stubs)


def test_an_update_rolled_back_by_an_alarm_raises_and_cleans_nothing(stubs: Stubs, bundles: dict[str, Path]) -> None:
    ref = model_ref("churn", "2", bundles["v2"].as_uri())
    features = features_tag(ref.schema.names)
    m1, c1 = "churn-v1-0000000001", "churn-c000000000001"
    expect_read(stubs, c1, [variant("stable", m1, 100.0)], config_tags(features, stable="1"))
    m2 = expect_model(stubs, "2", bundles["v2"])
    c2 = config_name("churn", {"variants": {"stable": [m2, 100]}, "shadow": None, "instances": ["ml.m5.large", 1]})
    stubs.sm.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": c2,
            "EndpointConfigArn": f"{ARN}:endpoint-config/{c2}",
            "ProductionVariants": [variant("stable", m2, 100.0)],
            "CreationTime": NOW,
        },
        {"EndpointConfigName": c2},
    )
    stubs.sm.add_response(
        "update_endpoint",
        {"EndpointArn": f"{ARN}:endpoint/churn"},
        {"EndpointName": "churn", "EndpointConfigName": c2, "DeploymentConfig": BLUE_GREEN},
    )
    stubs.sm.add_response("describe_endpoint", endpoint(c1, "Updating"), {"EndpointName": "churn"})
    reason = "Alarm churn-5xx went into ALARM state during the canary step"
    stubs.sm.add_response("describe_endpoint", endpoint(c1, FailureReason=reason), {"EndpointName": "churn"})
    with pytest.raises(NotReadyError) as caught:
        stubs.target.deploy(ref)
    assert caught.value.message == (
        f"SageMaker rolled back the update of 'churn' to config {c2}: {reason}; {c1} keeps serving"
    )
    done(stubs)


# ----- failure paths -----


def test_a_failed_creation_surfaces_the_reason_and_deletes_the_failed_endpoint(
    stubs: Stubs, bundles: dict[str, Path]
) -> None:
    ref = model_ref("churn", "1", bundles["v1"].as_uri())
    missing(stubs.sm, "describe_endpoint", "endpoint", {"EndpointName": "churn"})
    m1 = expect_model(stubs, "1", bundles["v1"])
    c1 = config_name("churn", {"variants": {"stable": [m1, 100]}, "shadow": None, "instances": ["ml.m5.large", 1]})
    missing(stubs.sm, "describe_endpoint_config", "endpoint configuration", {"EndpointConfigName": c1})
    stubs.sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"{ARN}:endpoint-config/{c1}"},
        {"EndpointConfigName": c1, "ProductionVariants": [variant("stable", m1, 100.0)], "Tags": ANY},
    )
    stubs.sm.add_response(
        "create_endpoint",
        {"EndpointArn": f"{ARN}:endpoint/churn"},
        {"EndpointName": "churn", "EndpointConfigName": c1, "Tags": [{"Key": "hybridml:endpoint", "Value": "churn"}]},
    )
    stubs.sm.add_response("describe_endpoint", endpoint(c1, "Creating"), {"EndpointName": "churn"})
    reason = "The primary container for production variant stable did not pass the ping health check."
    stubs.sm.add_response("describe_endpoint", endpoint(c1, "Failed", FailureReason=reason), {"EndpointName": "churn"})
    stubs.sm.add_response("delete_endpoint", {}, {"EndpointName": "churn"})
    with pytest.raises(NotReadyError) as caught:
        stubs.target.deploy(ref)
    assert caught.value.message == (
        f"SageMaker endpoint 'churn' failed: {reason} (the failed endpoint was deleted; endpoint config {c1} and its"
        " models are kept)"
    )
    done(stubs)


def test_a_budget_overrun_is_a_clear_error_listing_what_is_left(bundles: dict[str, Path]) -> None:
    stubs = make_stubs(ready_timeout_s=1.0)
    ref = model_ref("churn", "1", bundles["v1"].as_uri())
    missing(stubs.sm, "describe_endpoint", "endpoint", {"EndpointName": "churn"})
    m1 = expect_model(stubs, "1", bundles["v1"])
    c1 = config_name("churn", {"variants": {"stable": [m1, 100]}, "shadow": None, "instances": ["ml.m5.large", 1]})
    missing(stubs.sm, "describe_endpoint_config", "endpoint configuration", {"EndpointConfigName": c1})
    stubs.sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"{ARN}:endpoint-config/{c1}"},
        {"EndpointConfigName": c1, "ProductionVariants": ANY, "Tags": ANY},
    )
    stubs.sm.add_response(
        "create_endpoint",
        {"EndpointArn": f"{ARN}:endpoint/churn"},
        {"EndpointName": "churn", "EndpointConfigName": c1, "Tags": ANY},
    )
    for _ in range(6):  # polls at 0, 0.05, 0.15, 0.35, 0.75 and the deadline, 1.0
        stubs.sm.add_response("describe_endpoint", endpoint(c1, "Creating"), {"EndpointName": "churn"})
    stubs.sm.add_response("describe_endpoint", endpoint(c1, "Creating"), {"EndpointName": "churn"})
    expect_cleanup(stubs, [c1], [m1])
    with pytest.raises(NotReadyError) as caught:
        stubs.target.deploy(ref)
    assert caught.value.message == (
        f"SageMaker endpoint 'churn' not InService on config {c1} after 1s; left as is: endpoint churn Creating on"
        f" config {c1}; configs {c1}; models {m1}"
    )
    assert stubs.clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.25])
    done(stubs)


def test_throttling_is_retried_with_backoff_then_succeeds(stubs: Stubs) -> None:
    for _ in range(2):
        stubs.sm.add_client_error(
            "describe_endpoint",
            service_error_code="ThrottlingException",
            service_message="Rate exceeded",
            http_status_code=400,
        )
    expect_read(stubs, "churn-c1", [variant("stable", "churn-v1-1", 100.0)], config_tags("f", stable="1"))
    assert stubs.target.status("churn").stable_version == "1"
    assert stubs.clock.sleeps == [0.5, 1.0]
    done(stubs)


def test_throttling_gives_up_after_max_attempts() -> None:
    stubs = make_stubs(max_attempts=3)
    for _ in range(3):
        stubs.sm.add_client_error(
            "describe_endpoint",
            service_error_code="ThrottlingException",
            service_message="Rate exceeded",
            http_status_code=400,
        )
    with pytest.raises(
        NotReadyError,
        match=r"^SageMaker DescribeEndpoint still throttled after 3 attempts: ThrottlingException: Rate exceeded$",
    ):
        stubs.target.status("churn")
    assert stubs.clock.sleeps == [0.5, 1.0]
    done(stubs)


def test_a_validation_error_is_not_retried(stubs: Stubs, bundles: dict[str, Path]) -> None:
    ref = model_ref("churn", "1", bundles["v1"].as_uri())
    missing(stubs.sm, "describe_endpoint", "endpoint", {"EndpointName": "churn"})
    package = pack(bundles["v1"], "project")
    key = f"hybridml/churn/1/{package.sha256[:16]}/model.tar.gz"
    stubs.s3.add_response("head_object", {}, {"Bucket": BUCKET, "Key": key})  # already uploaded: no put
    url = f"s3://{BUCKET}/{key}"
    model = model_name("churn", "1", {"data": url, "image": IMAGE, "role": ROLE, "serving": "project"})
    missing(stubs.sm, "describe_model", "model", {"ModelName": model})
    stubs.sm.add_client_error(
        "create_model",
        service_error_code="ValidationException",
        service_message="Image does not exist or access denied",
        http_status_code=400,
    )
    with pytest.raises(InvalidInputError) as caught:
        stubs.target.deploy(ref)
    assert caught.value.message == (
        "SageMaker CreateModel failed: ValidationException: Image does not exist or access denied"
    )
    assert stubs.clock.sleeps == []
    done(stubs)


def test_changes_wait_for_in_service(stubs: Stubs) -> None:
    expect_read(
        stubs,
        "churn-c1",
        [variant("stable", "m1", 50.0), variant("canary", "m2", 50.0)],
        config_tags("f", stable="1", canary="2"),
        status="Updating",
    )
    with pytest.raises(
        ConflictError, match="endpoint 'churn' is Updating; SageMaker changes an endpoint only when it is InService"
    ):
        stubs.target.promote("churn")
    done(stubs)


# ----- invoke -----


def test_invoke_sends_json_rows_to_the_project_image(stubs: Stubs) -> None:
    expect_read(stubs, "churn-c1", [variant("stable", "m1", 100.0)], config_tags("f", stable="1"))
    stubs.runtime.add_response(
        "invoke_endpoint",
        {"Body": _body(b'{"predictions": [0.125, 0.875]}'), "ContentType": "application/json"},
        {
            "EndpointName": "churn",
            "Body": b'{"instances": [{"a": 1.5, "b": "x"}, {"a": 2, "b": null}]}',
            "ContentType": "application/json",
            "Accept": "application/json",
        },
    )
    assert stubs.target.invoke("churn", [{"a": 1.5, "b": "x"}, {"a": 2, "b": None}]) == [0.125, 0.875]
    done(stubs)


def test_invoke_sends_csv_in_feature_order_to_the_builtin_image(stubs: Stubs) -> None:
    tags = [
        t if t["Key"] != "hybridml:serving" else {"Key": t["Key"], "Value": "xgboost-builtin"}
        for t in config_tags("f", stable="1")
    ]
    expect_read(stubs, "churn-c1", [variant("stable", "m1", 100.0)], tags)
    stubs.sm.add_response(
        "describe_model",
        {
            "ModelName": "m1",
            "ModelArn": f"{ARN}:model/m1",
            "CreationTime": NOW,
            "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/p/churn/1/d/model.tar.gz"},
        },
        {"ModelName": "m1"},
    )
    manifest = b'{"schema": {"features": [{"name": "b", "dtype": "bool"}, {"name": "a", "dtype": "float"}]}}'
    stubs.s3.add_response(
        "get_object", {"Body": _body(manifest)}, {"Bucket": BUCKET, "Key": "p/churn/1/d/hybridml.json"}
    )
    stubs.runtime.add_response(
        "invoke_endpoint",
        {"Body": _body(b"0.25\n0.75\n"), "ContentType": "text/csv"},
        {"EndpointName": "churn", "Body": b"1,1.5\n0,\n", "ContentType": "text/csv", "Accept": "text/csv"},
    )
    assert stubs.target.invoke("churn", [{"a": 1.5, "b": True}, {"a": None, "b": False}]) == [0.25, 0.75]
    done(stubs)


def test_invoke_maps_the_container_refusal_to_invalid_input(stubs: Stubs) -> None:
    expect_read(stubs, "churn-c1", [variant("stable", "m1", 100.0)], config_tags("f", stable="1"))
    stubs.runtime.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        http_status_code=424,
        service_message="Received client error (400) from primary",
        response_meta={},
        modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": "feature 'a' must be a number"},
    )
    with pytest.raises(
        InvalidInputError, match=r"^endpoint 'churn' refused the rows \(400\): feature 'a' must be a number$"
    ):
        stubs.target.invoke("churn", [{"a": "x"}])
    done(stubs)


def _body(data: bytes) -> Any:
    import io

    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))


# ----- shadow -----


def test_a_shadow_is_a_shadow_production_variant_beside_the_single_stable_one(
    stubs: Stubs, bundles: dict[str, Path]
) -> None:
    ref = model_ref("churn", "2", bundles["v2"].as_uri())
    features = features_tag(ref.schema.names)
    m1, c1 = "churn-v1-0000000001", "churn-c000000000001"
    expect_read(stubs, c1, [variant("stable", m1, 100.0)], config_tags(features, stable="1"))
    m2 = expect_model(stubs, "2", bundles["v2"])
    c2 = config_name("churn", {"variants": {"stable": [m1, 100]}, "shadow": m2, "instances": ["ml.m5.large", 1]})
    missing(stubs.sm, "describe_endpoint_config", "endpoint configuration", {"EndpointConfigName": c2})
    tags = [*config_tags(features, stable="1", shadow="2"), {"Key": "hybridml:shadow-model", "Value": m2}]
    stubs.sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"{ARN}:endpoint-config/{c2}"},
        {
            "EndpointConfigName": c2,
            "ProductionVariants": [variant("stable", m1, 100.0)],
            "ShadowProductionVariants": [variant("shadow", m2, 100.0)],
            "Tags": tags,
        },
    )
    stubs.sm.add_response(
        "update_endpoint",
        {"EndpointArn": f"{ARN}:endpoint/churn"},
        {"EndpointName": "churn", "EndpointConfigName": c2, "DeploymentConfig": BLUE_GREEN},
    )
    stubs.sm.add_response("describe_endpoint", endpoint(c2), {"EndpointName": "churn"})
    expect_cleanup(stubs, [c1, c2], [m1, m2])
    stubs.sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": c1})
    expect_read(stubs, c2, [variant("stable", m1, 100.0)], tags)
    shadowed = stubs.target.shadow("churn", ref)
    assert (shadowed.stable_version, shadowed.canary_version, shadowed.shadow_version) == ("1", None, "2")
    assert shadowed.detail.endswith(", shadowed by 2")
    done(stubs)


def test_a_shadow_and_a_canary_never_share_an_endpoint(stubs: Stubs, bundles: dict[str, Path]) -> None:
    ref = model_ref("churn", "3", bundles["v2"].as_uri())
    features = features_tag(ref.schema.names)
    two = [variant("stable", "m1", 80.0), variant("canary", "m2", 20.0)]
    expect_read(stubs, "churn-c1", two, config_tags(features, stable="1", canary="2"))
    with pytest.raises(InvalidInputError, match="promote or roll back the canary '2' of 'churn' first"):
        stubs.target.shadow("churn", ref)
    tags = [*config_tags(features, stable="1", shadow="2"), {"Key": "hybridml:shadow-model", "Value": "m2"}]
    expect_read(stubs, "churn-c2", [variant("stable", "m1", 100.0)], tags)
    with pytest.raises(InvalidInputError, match="remove the shadow '2' of 'churn' before deploying a canary"):
        stubs.target.deploy(ref, traffic_percent=10)
    done(stubs)


def test_invoke_is_retried_when_throttled(stubs: Stubs) -> None:
    expect_read(stubs, "churn-c1", [variant("stable", "m1", 100.0)], config_tags("f", stable="1"))
    stubs.runtime.add_client_error(
        "invoke_endpoint", service_error_code="ThrottlingException", service_message="slow", http_status_code=400
    )
    stubs.runtime.add_response(
        "invoke_endpoint", {"Body": _body(b'{"predictions": [0.5]}'), "ContentType": "application/json"}
    )
    assert stubs.target.invoke("churn", [{"a": 1}]) == [0.5]
    assert stubs.clock.sleeps == [0.5]
    done(stubs)
