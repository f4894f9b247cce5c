"""The exported AWS definitions: deploy and retrain state machines, EventBridge rule, and `hybridml export`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hybridml.aws import eventbridge, stepfunctions
from hybridml.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "infra" / "aws" / "definitions"


def _paths(value: Any) -> set[str]:
    """Every ``$.x`` input field a definition reads (JSONPath values and intrinsic arguments)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for item in value.values():
            found |= _paths(item)
    elif isinstance(value, list):
        for item in value:
            found |= _paths(item)
    elif isinstance(value, str):
        for token in value.replace(",", " ").replace(")", " ").split():
            if token.startswith("$.") and not token.startswith("$.$"):
                found.add(token[2:].split(".")[0])
    return found


def test_deploy_flow_is_the_original_chain_with_a_wait_loop() -> None:
    definition = stepfunctions.deploy_definition(poll_seconds=20, timeout_seconds=1800, instance_count=2)
    states = definition["States"]
    assert definition["StartAt"] == "CreateModel"
    assert definition["TimeoutSeconds"] == 1800
    chain = ["CreateModel", "CreateEndpointConfig", "CreateEndpoint", "DescribeEndpoint", "EndpointStatus"]
    for here, there in itertools.pairwise(chain):
        assert states[here]["Next"] == there
    assert states["CreateModel"]["Resource"] == "arn:aws:states:::sagemaker:createModel"
    assert states["CreateEndpointConfig"]["Resource"] == "arn:aws:states:::sagemaker:createEndpointConfig"
    assert states["CreateEndpoint"]["Resource"] == "arn:aws:states:::sagemaker:createEndpoint"
    assert states["DescribeEndpoint"]["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint"
    variant = states["CreateEndpointConfig"]["Parameters"]["ProductionVariants"]
    assert variant == [
        {
            "VariantName": "stable", "ModelName.$": "$.model_name", "InstanceType.$": "$.instance_type",
            "InitialInstanceCount": 2, "InitialVariantWeight": 1,
        }
    ]  # fmt: skip
    assert states["CreateModel"]["Parameters"] == {
        "ModelName.$": "$.model_name",
        "ExecutionRoleArn.$": "$.role_arn",
        "PrimaryContainer": {"Image.$": "$.image_uri", "ModelDataUrl.$": "$.model_data_url"},
    }
    choice = states["EndpointStatus"]
    routes = {c["StringEquals"]: c["Next"] for c in choice["Choices"]}
    assert all(c["Variable"] == "$.endpoint.EndpointStatus" for c in choice["Choices"])
    assert routes == {
        "InService": "Deployed", "Failed": "EndpointFailed", "OutOfService": "EndpointNotServing",
        "RollingBack": "EndpointNotServing", "Deleting": "EndpointNotServing",
        "UpdateRollbackFailed": "EndpointNotServing",
    }  # fmt: skip
    assert choice["Default"] == "WaitForEndpoint"
    assert states["WaitForEndpoint"] == {"Type": "Wait", "Seconds": 20, "Next": "DescribeEndpoint"}
    assert states["EndpointFailed"] == {
        "Type": "Fail",
        "Error": "EndpointFailed",
        "CausePath": "$.endpoint.FailureReason",
    }
    assert states["DeployFailed"] == {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}
    assert _paths(definition) - {"endpoint", "error", "created"} == set(stepfunctions.DEPLOY_INPUT)


def test_every_task_retries_throttling_only_and_catches_the_rest() -> None:
    for definition, failure in (
        (stepfunctions.deploy_definition(), "DeployFailed"),
        (stepfunctions.retrain_definition(), "RetrainFailed"),
    ):
        tasks = [s for s in definition["States"].values() if s["Type"] == "Task"]
        assert tasks
        for task in tasks:
            (retry,) = task["Retry"]
            assert retry["ErrorEquals"] == ["SageMaker.ThrottlingException", "ThrottlingException"]
            assert (retry["IntervalSeconds"], retry["BackoffRate"], retry["MaxAttempts"]) == (5, 2.0, 6)
            assert task["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failure}]


def test_retrain_run_is_a_training_job_of_hybridml_run() -> None:
    definition = stepfunctions.retrain_definition(timeout_seconds=7200)
    states = definition["States"]
    assert definition["StartAt"] == "DataUri"
    assert states["DataUri"]["Parameters"] == {"uri.$": "States.Format('s3://{}/{}', $.bucket, $.key)"}
    job = states["RunPipeline"]
    assert job["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    algorithm = job["Parameters"]["AlgorithmSpecification"]
    assert algorithm["ContainerEntrypoint"] == ["hybridml"]
    assert "'run', '--data', $.data.uri" in algorithm["ContainerArguments.$"]
    assert "'--no-auto-approve'" in algorithm["ContainerArguments.$"]
    assert job["Parameters"]["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert job["Parameters"]["TrainingJobName.$"].startswith("States.Format('hybridml-retrain-{}'")
    assert _paths(definition) - {"data", "training", "error", "bucket", "key"} == set(stepfunctions.RETRAIN_INPUT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poll_seconds": 0}, "must be at least 1"),
        ({"instance_count": 0}, "must be at least 1"),
        ({"poll_seconds": 60, "timeout_seconds": 60}, r"poll_seconds \(60\) must be shorter than the budget \(60 s\)"),
    ],
)
def test_deploy_definition_refuses_bad_settings(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        stepfunctions.deploy_definition(**kwargs)


def test_the_definitions_terraform_reads_are_the_current_export() -> None:
    # infra/aws reads these files; regenerate with `hybridml export step-functions [--flow retrain] -o FILE`.
    assert (DEFINITIONS / "deploy.asl.json").read_text() == stepfunctions.to_json(stepfunctions.deploy_definition())
    assert (DEFINITIONS / "retrain.asl.json").read_text() == stepfunctions.to_json(stepfunctions.retrain_definition())


def test_event_pattern_matches_created_objects_under_the_prefix() -> None:
    assert eventbridge.event_pattern("data-lake", "/incoming/") == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": ["data-lake"]}, "object": {"key": [{"prefix": "incoming/"}]}},
    }


@pytest.mark.parametrize(
    ("bucket", "prefix", "message"),
    [
        ("Data", "x/", "'Data' is not a valid S3 bucket name"),
        ("ab", "x/", "'ab' is not a valid S3 bucket name"),
        ("a..b", "x/", "not a valid S3 bucket name"),
        ("lake", "", "must not be empty"),
        ("lake", "/", "must not be empty"),
        ("lake", "data/*", "no wildcards"),
    ],
)
def test_event_pattern_refusals(bucket: str, prefix: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        eventbridge.event_pattern(bucket, prefix)


def test_rule_targets_the_retrain_machine_with_the_object_and_constants() -> None:
    document = eventbridge.rule(
        "lake", "new/", target_arn="arn:aws:states:us-east-1:1:stateMachine:r", role_arn="arn:aws:iam::1:role/e",
        constants={"image_uri": "img:1", "model_name": 'a"b'},
    )  # fmt: skip
    assert document["Rule"]["Name"] == "hybridml-retrain-on-new-data"
    assert json.loads(document["Rule"]["EventPattern"]) == eventbridge.event_pattern("lake", "new/")
    (target,) = document["Targets"]
    assert (target["Arn"], target["RoleArn"]) == ("arn:aws:states:us-east-1:1:stateMachine:r", "arn:aws:iam::1:role/e")
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {"bucket": "$.detail.bucket.name", "key": "$.detail.object.key"}
    # EventBridge puts the quoted strings in place of <bucket> and <key>.
    filled = transformer["InputTemplate"].replace("<bucket>", '"lake"').replace("<key>", '"new/x.csv"')
    assert json.loads(filled) == {"bucket": "lake", "key": "new/x.csv", "image_uri": "img:1", "model_name": 'a"b'}
    with pytest.raises(InvalidInputError, match="rule name"):
        eventbridge.rule("lake", "new/", name="bad name")


def test_export_cli_writes_both_definitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hybridml.cli import app

    monkeypatch.setenv("HYBRIDML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HYBRIDML_DAEMON", "0")
    runner = CliRunner()
    done = runner.invoke(app, ["export", "step-functions", "-o", str(tmp_path / "sf" / "deploy.json")])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "sf" / "deploy.json").read_text()) == stepfunctions.deploy_definition()
    done = runner.invoke(app, ["export", "step-functions", "--flow", "retrain", "--timeout-seconds", "600"])
    assert done.exit_code == 0 and json.loads(done.stdout) == stepfunctions.retrain_definition(timeout_seconds=600)
    done = runner.invoke(
        app, ["export", "eventbridge-rule", "--bucket", "lake", "--prefix", "new/", "--set", "image_uri=img:1"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == eventbridge.rule("lake", "new/", constants={"image_uri": "img:1"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["step-functions", "--flow", "train"], "error: --flow must be one of deploy, retrain, got 'train'"),
        (["step-functions", "--poll-seconds", "0"], "error: poll_seconds, timeout_seconds and instance_count"),
        (["eventbridge-rule", "--bucket", "lake", "--prefix", ""], "error: the key prefix must not be empty"),
        (["eventbridge-rule", "--bucket", "lake", "--prefix", "p/", "--set", "x"], "error: --set takes KEY=VALUE"),
        (["eventbridge-rule", "--bucket", "lake", "--prefix", "p/", "--set", "key=k"], "error: --set key is taken"),
    ],
)
def test_export_cli_refusals_exit_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    from hybridml.cli import app

    monkeypatch.setenv("HYBRIDML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HYBRIDML_DAEMON", "0")
    done = CliRunner().invoke(app, ["export", *args])
    assert done.exit_code == 2
    assert done.stderr.strip().startswith(message), done.stderr
