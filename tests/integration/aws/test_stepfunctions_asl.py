"""The exported state machines pass the npm asl-validator and are created in a moto server on 127.0.0.1."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from hybridml.aws import eventbridge, stepfunctions
from tests.integration.serving.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]
TOOLS = ROOT / "infra" / "aws" / "tools"  # package.json + package-lock.json pin asl-validator
VALIDATOR = TOOLS / "node_modules" / ".bin" / "asl-validator"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def validator() -> Path:
    """The pinned asl-validator, installed with `npm ci` from the lock file when missing."""
    if not VALIDATOR.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: cannot install asl-validator (npm ci --prefix infra/aws/tools)")
        subprocess.run(
            ["npm", "ci", "--prefix", str(TOOLS), "--no-audit", "--no-fund"], check=True, timeout=300,
            capture_output=True,
        )  # fmt: skip
    return VALIDATOR


def _validate(validator: Path, definition: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(stepfunctions.to_json(definition))
    return subprocess.run(
        [str(validator), "--json-path", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("flow", ["deploy", "retrain"])
def test_exported_definitions_are_valid_asl(validator: Path, tmp_path: Path, flow: str) -> None:
    definition = stepfunctions.deploy_definition() if flow == "deploy" else stepfunctions.retrain_definition()
    done = _validate(validator, definition, tmp_path / f"{flow}.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid" in done.stdout


def _dangling_next(definition: dict[str, Any]) -> None:
    definition["States"]["WaitForEndpoint"]["Next"] = "NoSuchState"


def _bad_choice(definition: dict[str, Any]) -> None:
    del definition["States"]["EndpointStatus"]["Choices"]


def _wait_without_time(definition: dict[str, Any]) -> None:
    del definition["States"]["WaitForEndpoint"]["Seconds"]


def _bad_resource(definition: dict[str, Any]) -> None:
    definition["States"]["CreateModel"]["Resource"] = "sagemaker:createModel"


@pytest.mark.parametrize("breakage", [_dangling_next, _bad_choice, _wait_without_time, _bad_resource])
def test_broken_definitions_are_refused(validator: Path, tmp_path: Path, breakage: Any) -> None:
    definition = copy.deepcopy(stepfunctions.deploy_definition())
    breakage(definition)
    done = _validate(validator, definition, tmp_path / "broken.json")
    assert done.returncode != 0, done.stdout
    assert "is invalid" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {
        "endpoint_url": f"http://127.0.0.1:{port}", "region_name": REGION,
        "aws_access_key_id": "test", "aws_secret_access_key": "test",
    }  # fmt: skip
    try:
        yield options
    finally:
        server.stop()


def test_state_machines_are_created_and_described_in_moto(aws: dict[str, Any]) -> None:
    client = boto3.client("stepfunctions", **aws)
    role = "arn:aws:iam::123456789012:role/hybridml-step-functions"
    for name, definition in (
        ("hybridml-deploy", stepfunctions.deploy_definition()),
        ("hybridml-retrain", stepfunctions.retrain_definition()),
    ):
        created = client.create_state_machine(name=name, definition=stepfunctions.to_json(definition), roleArn=role)
        assert created["stateMachineArn"] == f"arn:aws:states:{REGION}:123456789012:stateMachine:{name}"
        described = client.describe_state_machine(stateMachineArn=created["stateMachineArn"])
        assert (described["name"], described["roleArn"], described["status"]) == (name, role, "ACTIVE")
        assert json.loads(described["definition"]) == definition
    names = sorted(m["name"] for m in client.list_state_machines()["stateMachines"])
    assert names == ["hybridml-deploy", "hybridml-retrain"]


def test_rule_and_target_are_accepted_by_events_in_moto(aws: dict[str, Any]) -> None:
    machine = f"arn:aws:states:{REGION}:123456789012:stateMachine:hybridml-retrain"
    document = eventbridge.rule(
        "lake", "data/incoming/", target_arn=machine, role_arn="arn:aws:iam::123456789012:role/hybridml-events",
        constants={"model_name": "hybridml-model"},
    )  # fmt: skip
    events = boto3.client("events", **aws)
    events.put_rule(**document["Rule"])
    events.put_targets(Rule=document["Rule"]["Name"], Targets=document["Targets"])
    rule = events.describe_rule(Name=document["Rule"]["Name"])
    assert json.loads(rule["EventPattern"]) == eventbridge.event_pattern("lake", "data/incoming/")
    assert rule["State"] == "ENABLED"
    (target,) = events.list_targets_by_rule(Rule=document["Rule"]["Name"])["Targets"]
    assert (target["Id"], target["Arn"]) == ("retrain", machine)
    assert target["InputTransformer"] == document["Targets"][0]["InputTransformer"]
    # The pattern matches a created object under the prefix and nothing else: moto's EventBridge matcher (its
    # TestEventPattern API is not implemented, so the matcher is called directly).
    from moto.events.models import EventPattern

    created = {"source": "aws.s3", "detail-type": "Object Created", "detail": {
        "bucket": {"name": "lake"}, "object": {"key": "data/incoming/new.csv"}}}  # fmt: skip
    matcher = EventPattern.load(document["Rule"]["EventPattern"])
    assert matcher.matches_event(created)
    for path, value in ((("detail", "object", "key"), "models/m.tar.gz"), (("detail", "bucket", "name"), "other"),
                        (("detail-type",), "Object Deleted")):  # fmt: skip
        other = copy.deepcopy(created)
        place: Any = other
        for key in path[:-1]:
            place = place[key]
        place[path[-1]] = value
        assert not matcher.matches_event(other), path
