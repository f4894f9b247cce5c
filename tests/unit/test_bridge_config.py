"""The sagemaker_bridge pipeline parameter: what turns the bridge on, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridml.config import Settings
from hybridml.deploy.config import SageMakerConfig
from hybridml.errors import InvalidInputError
from hybridml.steps.release import Bridge, parse_bridge

ROLE = "arn:aws:iam::123456789012:role/hybridml-sagemaker"
BASE = {"role_arn": ROLE, "bucket": "models-1", "image_uri": "123.dkr.ecr.eu-west-1.amazonaws.com/p:1"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(home=str(tmp_path))


@pytest.mark.parametrize("text", ["", "  ", "\n"])
def test_empty_is_off(text: str, settings: Settings) -> None:
    assert parse_bridge(text, settings) is None


def test_json_and_yaml_give_the_same_bridge(settings: Settings) -> None:
    options = {**BASE, "endpoint_name": "aws-churn", "region": "eu-west-1", "ready_timeout_s": 600}
    from_json = parse_bridge(json.dumps(options), settings)
    from_yaml = parse_bridge("".join(f"{k}: {json.dumps(v)}\n" for k, v in options.items()), settings)
    assert from_json == from_yaml == Bridge(config=SageMakerConfig(**options), traffic_percent=100)


@pytest.mark.parametrize("percent", [1, 50, 99])
def test_a_canary_is_a_traffic_share(percent: int, settings: Settings) -> None:
    bridge = parse_bridge(json.dumps({**BASE, "canary": percent}), settings)
    assert bridge == Bridge(config=SageMakerConfig(**BASE), traffic_percent=percent)


def test_a_sagemaker_target_key_is_accepted_and_another_refused(settings: Settings) -> None:
    assert parse_bridge(json.dumps({**BASE, "target": "sagemaker"}), settings) == Bridge(SageMakerConfig(**BASE))
    with pytest.raises(InvalidInputError, match=r"^sagemaker_bridge: deploy config is for target 'local', not "):
        parse_bridge(json.dumps({**BASE, "target": "local"}), settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "sagemaker_bridge must be an object of option names to values, got list"),
        ("a: [b", "sagemaker_bridge is neither JSON nor YAML: "),
        ("{}", "sagemaker_bridge must name at least role_arn, bucket and image_uri (or be empty)"),
        (json.dumps({**BASE, "canary": 0}), "sagemaker_bridge canary must be an integer from 1 to 99, got 0"),
        (json.dumps({**BASE, "canary": 100}), "sagemaker_bridge canary must be an integer from 1 to 99, got 100"),
        (json.dumps({**BASE, "canary": True}), "sagemaker_bridge canary must be an integer from 1 to 99, got True"),
        (json.dumps({**BASE, "canary": "10"}), "sagemaker_bridge canary must be an integer from 1 to 99, got '10'"),
        (json.dumps({**BASE, "colour": 1}), "sagemaker_bridge: unknown sagemaker deploy config key 'colour' (known: "),
        (json.dumps({**BASE, "role_arn": "admin"}), "sagemaker_bridge: sagemaker deploy config: role_arn must be"),
        (json.dumps({**BASE, "endpoint_name": "Bad_Name"}), "sagemaker_bridge: "),
        (
            json.dumps({"role_arn": ROLE}),
            "sagemaker deploy needs image_uri, bucket (give --image-uri, --bucket or put them in --deploy-config)",
        ),
    ],
)
def test_refusals_name_the_problem(text: str, message: str, settings: Settings) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_bridge(text, settings)
    assert caught.value.message.startswith(message)
    assert "\n" not in caught.value.message
