"""SageMakerConfig and KServeConfig validation the mutation run (issue 12) found unasserted: each refusal as one exact
line, each range at both ends and one step past them, and what each field is normalised to."""

from __future__ import annotations

from typing import Any

import pytest

from hybridml.deploy.config import KServeConfig, SageMakerConfig, parse_config
from hybridml.errors import InvalidInputError

pytestmark = pytest.mark.unit

ROLE = "arn:aws:iam::123456789012:role/hybridml-sagemaker"
NON_EMPTY = "a non-empty string"
QUANTITY = "a Kubernetes quantity such as 500m, 1 or 512Mi"


def refusal(config: type[SageMakerConfig] | type[KServeConfig], **fields: Any) -> str:
    with pytest.raises(InvalidInputError) as caught:
        config(**fields)
    return str(caught.value)


# ----- SageMakerConfig ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "wanted"),
    [
        ("image_uri", "", NON_EMPTY),
        ("image_uri", "  ", NON_EMPTY),
        ("image_uri", 7, NON_EMPTY),
        ("role_arn", " ", NON_EMPTY),
        ("bucket", "", NON_EMPTY),
        ("region", " ", NON_EMPTY),
        ("endpoint_name", "", NON_EMPTY),
        ("endpoint_name", 3, NON_EMPTY),
        ("role_arn", "arn:aws:iam::12345678901:role/x", "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        ("role_arn", "arn:aws:iam::123456789012:user/x", "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        ("role_arn", f"{ROLE}\n", "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        ("bucket", "ab", "an S3 bucket name (3-63 lower-case letters, digits, '.' and '-')"),
        ("bucket", "a" * 64, "an S3 bucket name (3-63 lower-case letters, digits, '.' and '-')"),
        ("bucket", "-abc", "an S3 bucket name (3-63 lower-case letters, digits, '.' and '-')"),
        ("region", "eu-west", "an AWS region such as eu-west-1"),
        ("region", "EU-west-1", "an AWS region such as eu-west-1"),
        ("prefix", "/models", "an S3 key prefix without leading or doubled '/'"),
        ("prefix", "a//b", "an S3 key prefix without leading or doubled '/'"),
        ("prefix", 5, "an S3 key prefix without leading or doubled '/'"),
        ("instance_type", "m5.large", "a SageMaker instance type such as ml.m5.large"),
        ("instance_type", None, "a SageMaker instance type such as ml.m5.large"),
        ("instance_count", 0, "an integer from 1 to 100"),
        ("instance_count", 101, "an integer from 1 to 100"),
        ("instance_count", 2.0, "an integer from 1 to 100"),
        ("instance_count", True, "an integer from 1 to 100"),
        ("canary_size_percent", 0, "an integer from 1 to 50"),
        ("canary_size_percent", 51, "an integer from 1 to 50"),
        ("canary_wait_s", -1, "an integer from 0 to 3600"),
        ("canary_wait_s", 3601, "an integer from 0 to 3600"),
        ("termination_wait_s", -1, "an integer from 0 to 3600"),
        ("termination_wait_s", 3601, "an integer from 0 to 3600"),
        ("max_attempts", 0, "an integer from 1 to 20"),
        ("max_attempts", 21, "an integer from 1 to 20"),
        ("ready_timeout_s", 0, "a positive number"),
        ("ready_timeout_s", -0.5, "a positive number"),
        ("ready_timeout_s", True, "a positive number"),
        ("ready_timeout_s", "60", "a positive number"),
        ("poll_s", 0.0, "a positive number"),
        ("poll_s", False, "a positive number"),
        ("serving", "tensorflow", "one of project, xgboost-builtin"),
        ("rollback_alarms", [""], "a list of CloudWatch alarm names"),
        ("rollback_alarms", ["ok", " "], "a list of CloudWatch alarm names"),
        ("rollback_alarms", ["ok", 3], "a list of CloudWatch alarm names"),
        ("rollback_alarms", {"a"}, "a list of CloudWatch alarm names"),
        ("rollback_alarms", [f"a{i}" for i in range(11)], "at most 10 alarm names"),
        ("rollback_alarms", ",".join(f"a{i}" for i in range(11)), "at most 10 alarm names"),
    ],
)
def test_each_sagemaker_refusal_is_one_exact_line(key: str, value: Any, wanted: str) -> None:
    assert refusal(SageMakerConfig, **{key: value}) == f"sagemaker deploy config: {key} must be {wanted}, got {value!r}"


def test_a_bad_endpoint_name_is_refused_by_the_naming_rule() -> None:
    assert refusal(SageMakerConfig, endpoint_name="Bad_Name").startswith("invalid model name 'Bad_Name': use ")


def test_every_sagemaker_range_is_inclusive_at_both_ends() -> None:
    low = SageMakerConfig(
        instance_count=1, canary_size_percent=1, canary_wait_s=0, termination_wait_s=0, max_attempts=1
    )
    high = SageMakerConfig(
        instance_count=100, canary_size_percent=50, canary_wait_s=3600, termination_wait_s=3600, max_attempts=20
    )
    fields = ("instance_count", "canary_size_percent", "canary_wait_s", "termination_wait_s", "max_attempts")
    assert [getattr(low, f) for f in fields] == [1, 1, 0, 0, 1]
    assert [getattr(high, f) for f in fields] == [100, 50, 3600, 3600, 20]
    tiny = SageMakerConfig(ready_timeout_s=1e-9, poll_s=1)
    assert (tiny.ready_timeout_s, tiny.poll_s) == (1e-9, 1)


def test_valid_sagemaker_values_are_kept_as_given() -> None:
    config = SageMakerConfig(
        image_uri="123.dkr.ecr.eu-west-1.amazonaws.com/predictor:1",
        role_arn="arn:aws-cn:iam::123456789012:role/path/name+=,.@-_",
        bucket="a.b",
        region="us-gov-west-1",
        endpoint_name="churn-model",
        instance_type="ml.c5.xlarge",
        serving="xgboost-builtin",
        rollback_alarms=("x",),
    )
    assert (config.region, config.endpoint_name, config.serving, config.bucket) == (
        "us-gov-west-1",
        "churn-model",
        "xgboost-builtin",
        "a.b",
    )
    assert config.role_arn == "arn:aws-cn:iam::123456789012:role/path/name+=,.@-_"
    assert SageMakerConfig(bucket="a" * 63, region="eu-west-1").bucket == "a" * 63


def test_sagemaker_defaults() -> None:
    config = SageMakerConfig()
    assert (config.image_uri, config.role_arn, config.bucket, config.region, config.endpoint_name) == (None,) * 5
    assert (config.prefix, config.instance_type, config.instance_count, config.serving) == (
        "hybridml",
        "ml.m5.large",
        1,
        "project",
    )
    assert (config.ready_timeout_s, config.poll_s, config.rollback_alarms) == (1800.0, 30.0, ())
    assert (config.canary_size_percent, config.canary_wait_s, config.termination_wait_s, config.max_attempts) == (
        10,
        300,
        120,
        5,
    )


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("a, b,,c", ("a", "b", "c")),
        (" a ", ("a",)),
        ("", ()),
        (["x", "y"], ("x", "y")),
        ([f"a{i}" for i in range(10)], tuple(f"a{i}" for i in range(10))),
        ((), ()),
    ],
)
def test_alarms_become_a_tuple(given: Any, kept: tuple[str, ...]) -> None:
    assert SageMakerConfig(rollback_alarms=given).rollback_alarms == kept


@pytest.mark.parametrize(("given", "kept"), [("models/", "models"), ("a/b/", "a/b"), ("", ""), ("x", "x"), ("X/", "X")])
def test_the_prefix_loses_its_trailing_slash(given: str, kept: str) -> None:
    assert SageMakerConfig(prefix=given).prefix == kept


def test_deploying_without_any_setting_names_all_three_and_their_flags() -> None:
    with pytest.raises(InvalidInputError) as caught:
        SageMakerConfig().require_deploy_settings()
    assert str(caught.value) == (
        "sagemaker deploy needs image_uri, role_arn, bucket "
        "(give --image-uri, --role-arn, --bucket or put them in --deploy-config)"
    )
    with pytest.raises(InvalidInputError) as caught:
        SageMakerConfig(image_uri="i", role_arn=ROLE).require_deploy_settings()
    assert str(caught.value) == "sagemaker deploy needs bucket (give --bucket or put them in --deploy-config)"


# ----- KServeConfig ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "wanted"),
    [
        ("namespace", "Bad", "a Kubernetes namespace name"),
        ("namespace", "a" * 64, "a Kubernetes namespace name"),
        ("namespace", "-a", "a Kubernetes namespace name"),
        ("namespace", "a.b", "a Kubernetes namespace name"),
        ("namespace", None, "a Kubernetes namespace name"),
        ("kserve_namespace", "", "a Kubernetes namespace name"),
        ("kserve_namespace", "a-", "a Kubernetes namespace name"),
        ("runtime", None, "a Kubernetes object name"),
        ("runtime", "a" * 254, "a Kubernetes object name"),
        ("runtime", "a.", "a Kubernetes object name"),
        ("service_account", "", "a Kubernetes object name"),
        ("service_account", "Sa", "a Kubernetes object name"),
        ("service_account", 1, "a Kubernetes object name"),
        ("storage_container", "", "a Kubernetes object name"),
        ("storage_container", "Upper", "a Kubernetes object name"),
        ("kubeconfig", "", NON_EMPTY),
        ("kubeconfig", 5, NON_EMPTY),
        ("context", " ", NON_EMPTY),
        ("image", None, NON_EMPTY),
        ("image", "", NON_EMPTY),
        ("field_manager", None, NON_EMPTY),
        ("field_manager", " ", NON_EMPTY),
        ("cpu_request", "1.", QUANTITY),
        ("cpu_request", ".5", QUANTITY),
        ("cpu_request", 1, QUANTITY),
        ("cpu_limit", "1m1", QUANTITY),
        ("memory_request", "1GB", QUANTITY),
        ("memory_request", "Mi", QUANTITY),
        ("memory_limit", "1gi", QUANTITY),
        ("memory_limit", "", QUANTITY),
        ("min_replicas", -1, "an integer from 0 to 1000"),
        ("min_replicas", 1001, "an integer from 0 to 1000"),
        ("min_replicas", True, "an integer from 0 to 1000"),
        ("min_replicas", 1.0, "an integer from 0 to 1000"),
        ("max_replicas", 0, "an integer from 1 to 1000"),
        ("max_replicas", 1001, "an integer from 1 to 1000"),
        ("max_attempts", 0, "an integer from 1 to 20"),
        ("max_attempts", 21, "an integer from 1 to 20"),
        ("max_attempts", False, "an integer from 1 to 20"),
        ("scale_metric", "gpu", "one of cpu, memory, concurrency, rps"),
        ("scale_metric", "", "one of cpu, memory, concurrency, rps"),
        ("scale_target", 0, "a positive integer"),
        ("scale_target", True, "a positive integer"),
        ("scale_target", 2.0, "a positive integer"),
        ("storage_uri_prefix", "file:///x", "a URI the cluster reads, such as s3://bucket/models"),
        ("storage_uri_prefix", "bucket/models", "a URI the cluster reads, such as s3://bucket/models"),
        ("storage_uri_prefix", 3, "a URI the cluster reads, such as s3://bucket/models"),
        ("mode", "ModelMesh", "one of auto, Serverless, Standard, RawDeployment, Knative"),
        ("mode", "serverless", "one of auto, Serverless, Standard, RawDeployment, Knative"),
        ("ready_timeout_s", 0, "a positive number"),
        ("ready_timeout_s", True, "a positive number"),
        ("ready_timeout_s", "5", "a positive number"),
        ("poll_s", -1, "a positive number"),
        ("poll_s", 0.0, "a positive number"),
    ],
)
def test_each_kserve_refusal_is_one_exact_line(key: str, value: Any, wanted: str) -> None:
    assert refusal(KServeConfig, **{key: value}) == f"kserve deploy config: {key} must be {wanted}, got {value!r}"


def test_fewer_max_than_min_replicas_is_refused_naming_the_minimum() -> None:
    assert refusal(KServeConfig, min_replicas=4, max_replicas=3) == (
        "kserve deploy config: max_replicas must be at least min_replicas (4), got 3"
    )


def test_every_kserve_range_is_inclusive_at_both_ends() -> None:
    low = KServeConfig(min_replicas=0, max_replicas=1, max_attempts=1, scale_target=1)
    assert (low.min_replicas, low.max_replicas, low.max_attempts, low.scale_target) == (0, 1, 1, 1)
    high = KServeConfig(min_replicas=1000, max_replicas=1000, max_attempts=20)
    assert (high.min_replicas, high.max_replicas, high.max_attempts) == (1000, 1000, 20)
    equal = KServeConfig(min_replicas=3, max_replicas=3)
    assert (equal.min_replicas, equal.max_replicas) == (3, 3)
    tiny = KServeConfig(ready_timeout_s=1e-9, poll_s=1)
    assert (tiny.ready_timeout_s, tiny.poll_s) == (1e-9, 1)


def test_longest_names_and_valid_values_are_kept() -> None:
    config = KServeConfig(
        namespace="a" * 63,
        kserve_namespace="k-1",
        runtime="my.runtime-" + "r" * 242,
        service_account="sa.x",
        storage_container="hybridml-restricted",
        kubeconfig="/k",
        context="c",
        cpu_request="250m",
        cpu_limit="1.5",
        memory_request="100M",
        memory_limit="2Gi",
        scale_metric="rps",
        scale_target=7,
        mode="RawDeployment",
    )
    assert (config.namespace, config.kserve_namespace, len(config.runtime), config.service_account) == (
        "a" * 63,
        "k-1",
        253,
        "sa.x",
    )
    assert (config.kubeconfig, config.context, config.cpu_request, config.cpu_limit) == ("/k", "c", "250m", "1.5")
    assert config.storage_container == "hybridml-restricted"
    assert (config.memory_request, config.memory_limit, config.scale_metric, config.scale_target, config.mode) == (
        "100M",
        "2Gi",
        "rps",
        7,
        "RawDeployment",
    )


@pytest.mark.parametrize("quantity", ["1", "10", "0.5", "100m", "1k", "1Ki", "1Mi", "1Gi", "1Ti", "1M", "1G", "1T"])
def test_every_quantity_suffix_is_accepted(quantity: str) -> None:
    assert KServeConfig(cpu_request=quantity, memory_limit=quantity).memory_limit == quantity


@pytest.mark.parametrize("metric", ["cpu", "memory", "concurrency", "rps"])
def test_every_scale_metric_is_accepted(metric: str) -> None:
    assert KServeConfig(scale_metric=metric).scale_metric == metric


@pytest.mark.parametrize("mode", ["auto", "Serverless", "Standard", "RawDeployment", "Knative"])
def test_every_mode_is_accepted(mode: str) -> None:
    assert KServeConfig(mode=mode).mode == mode


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("s3://bucket/models/", "s3://bucket/models"),
        ("gs://b//", "gs://b"),
        ("pvc://claim/x", "pvc://claim/x"),
        ("s3://bX/", "s3://bX"),
    ],
)
def test_the_storage_prefix_loses_its_trailing_slashes(given: str, kept: str) -> None:
    assert KServeConfig(storage_uri_prefix=given).storage_uri_prefix == kept


def test_kserve_defaults() -> None:
    config = KServeConfig()
    assert (config.namespace, config.kserve_namespace, config.runtime, config.field_manager, config.mode) == (
        "default",
        "kserve",
        "hybridml",
        "hybridml",
        "auto",
    )
    assert (config.kubeconfig, config.context, config.service_account, config.scale_metric) == (None,) * 4
    assert config.storage_container is None
    assert (config.scale_target, config.storage_uri_prefix, config.image) == (
        None,
        None,
        "ghcr.io/hybridml/predictor:latest",
    )
    assert (config.cpu_request, config.cpu_limit, config.memory_request, config.memory_limit) == (
        "500m",
        "1",
        "512Mi",
        "1Gi",
    )
    assert (config.min_replicas, config.max_replicas, config.ready_timeout_s, config.poll_s, config.max_attempts) == (
        1,
        3,
        600.0,
        10.0,
        5,
    )


# ----- reading config text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "first_line"),
    [("a: b: c", "mapping values are not allowed here"), ('{"a": 1', "while parsing a flow mapping")],
)
def test_broken_config_text_is_named_by_the_first_line_of_the_parser_error(text: str, first_line: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_config(text, "flags")
    assert str(caught.value) == f"flags is neither JSON nor YAML: {first_line}"
