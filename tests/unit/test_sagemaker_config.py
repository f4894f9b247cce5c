"""SageMakerConfig: every field checked with a message naming it; config_from and the factory build the target."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hybridml.config import Settings
from hybridml.deploy import config_from, make_target
from hybridml.deploy.config import SageMakerConfig
from hybridml.errors import InvalidInputError

ROLE = "arn:aws:iam::123456789012:role/hybridml-sagemaker"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("role_arn", "arn:aws:iam::1:user/x", "role_arn must be an IAM role ARN"),
        ("role_arn", "", "role_arn must be a non-empty string"),
        ("bucket", "Bad_Bucket", "bucket must be an S3 bucket name"),
        ("region", "mars", "region must be an AWS region such as eu-west-1"),
        ("endpoint_name", "Bad_Name", "invalid model name 'Bad_Name'"),
        ("prefix", "/abs", "prefix must be an S3 key prefix"),
        ("instance_type", "m5.large", "instance_type must be a SageMaker instance type"),
        ("instance_count", 0, "instance_count must be an integer from 1 to 100"),
        ("instance_count", True, "instance_count must be an integer from 1 to 100"),
        ("canary_size_percent", 51, "canary_size_percent must be an integer from 1 to 50"),
        ("canary_size_percent", 0, "canary_size_percent must be an integer from 1 to 50"),
        ("canary_wait_s", -1, "canary_wait_s must be an integer from 0 to 3600"),
        ("termination_wait_s", 3601, "termination_wait_s must be an integer from 0 to 3600"),
        ("max_attempts", 0, "max_attempts must be an integer from 1 to 20"),
        ("ready_timeout_s", 0, "ready_timeout_s must be a positive number"),
        ("poll_s", -1.0, "poll_s must be a positive number"),
        ("serving", "tensorflow", "serving must be one of project, xgboost-builtin"),
        ("rollback_alarms", [""], "rollback_alarms must be a list of CloudWatch alarm names"),
        ("rollback_alarms", [f"a{i}" for i in range(11)], "rollback_alarms must be at most 10 alarm names"),
    ],
)
def test_every_bad_value_is_refused_naming_its_field(key: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        SageMakerConfig(**{key: value})


def test_boundaries_and_normalisation() -> None:
    config = SageMakerConfig(
        role_arn=ROLE, bucket="b-1.x", canary_size_percent=50, rollback_alarms="a, b,,c", prefix="models/"
    )
    assert (config.canary_size_percent, config.rollback_alarms, config.prefix) == (50, ("a", "b", "c"), "models")
    assert SageMakerConfig(canary_size_percent=1, instance_count=100, max_attempts=20).instance_count == 100


def test_deploying_needs_image_role_and_bucket_and_says_which_flags_give_them() -> None:
    SageMakerConfig(image_uri="i", role_arn=ROLE, bucket="bkt").require_deploy_settings()
    with pytest.raises(
        InvalidInputError,
        match=re.escape("sagemaker deploy needs image_uri, role_arn (give --image-uri, --role-arn or put them in"),
    ):
        SageMakerConfig(bucket="bkt").require_deploy_settings()


def test_config_from_builds_a_sagemaker_config_and_names_unknown_keys(tmp_path: Path) -> None:
    settings = Settings.from_env({}, home=tmp_path)
    config = config_from("sagemaker", {"role_arn": ROLE, "bucket": "bkt", "rollback_alarms": ["x"]}, settings)
    assert isinstance(config, SageMakerConfig)
    assert (config.role_arn, config.bucket, config.rollback_alarms, config.serving) == (ROLE, "bkt", ("x",), "project")
    assert isinstance(config_from(None, {"target": "sagemaker"}, settings), SageMakerConfig)
    with pytest.raises(InvalidInputError, match="unknown sagemaker deploy config key 'state_dir'"):
        config_from("sagemaker", {"state_dir": "x"}, settings)
    assert config_from("kserve", {}, settings).kind == "kserve"


def test_the_factory_builds_the_target_without_touching_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: building must not call it
    target = make_target(SageMakerConfig(region="eu-west-1"))
    assert (target.target_name, target.clients.sagemaker.meta.region_name) == ("sagemaker", "eu-west-1")
    assert target.clients.runtime.meta.endpoint_url == "http://127.0.0.1:9"
