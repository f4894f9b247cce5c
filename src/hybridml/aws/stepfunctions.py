"""The AWS orchestration as Amazon States Language: the deploy flow and the retraining run (pure data, no boto3).

The deploy flow is the original design's: CreateModel → CreateEndpointConfig → CreateEndpoint → DescribeEndpoint →
Choice (InService: done; Failed: fail with SageMaker's ``FailureReason``; creating or updating: Wait and describe
again), through Step Functions' optimised SageMaker integrations (``arn:aws:states:::sagemaker:*``) and the AWS
SDK integration for DescribeEndpoint. Every call retries throttling with backoff and catches everything else into
one failure state that keeps the error and its cause. The whole execution has a time budget (``TimeoutSeconds``),
since an endpoint can hang in ``Creating``.

Execution input of the deploy flow (:data:`DEPLOY_INPUT`): ``model_name`` (the SageMaker model, also the endpoint
config's name), ``image_uri``, ``role_arn`` (SageMaker execution role), ``model_data_url`` (``s3://.../model.tar.gz``),
``endpoint_name``, ``instance_type``.

The retraining run (:func:`retrain_definition`) is what the EventBridge rule starts when a new object lands under
the data prefix: one SageMaker training job running the project's pipeline image with ``hybridml run --data
s3://BUCKET/KEY --no-auto-approve``, so the new version is registered as pending and deployed only once approved.
"""

from __future__ import annotations

import json
from typing import Any

from hybridml.errors import InvalidInputError

DEPLOY_INPUT = ("model_name", "image_uri", "role_arn", "model_data_url", "endpoint_name", "instance_type")
RETRAIN_INPUT = (
    "image_uri", "role_arn", "instance_type", "model_name", "target", "tracking_uri", "output_path",
)  # fmt: skip
VARIANT = "stable"
DEFAULT_POLL_S = 30
DEFAULT_TIMEOUT_S = 3600  # real endpoints take 5-30 minutes; Creating can hang
DEFAULT_RETRAIN_TIMEOUT_S = 4 * 3600
# Step Functions names a service error "<Service>.<Exception>"; throttling is the one worth waiting out.
THROTTLING = ["SageMaker.ThrottlingException", "ThrottlingException"]
_SAGEMAKER = "arn:aws:states:::sagemaker:"
DESCRIBE_ENDPOINT = "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint"
# Endpoint states that will not become InService by waiting (DescribeEndpoint's EndpointStatus values).
STUCK = ("OutOfService", "RollingBack", "Deleting", "UpdateRollbackFailed")
WAITING = ("Creating", "Updating", "SystemUpdating")


def _retry() -> list[dict[str, Any]]:
    return [
        {
            "ErrorEquals": list(THROTTLING),
            "IntervalSeconds": 5,
            "BackoffRate": 2.0,
            "MaxAttempts": 6,
            "MaxDelaySeconds": 120,
            "JitterStrategy": "FULL",
        }
    ]


def _catch(to: str = "DeployFailed") -> list[dict[str, Any]]:
    # ResultPath keeps the execution input beside the error, so the failure state can name both.
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": to}]


def _task(resource: str, parameters: dict[str, Any], result_path: str, next_state: str) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": resource,
        "Parameters": parameters,
        "ResultPath": result_path,
        "Retry": _retry(),
        "Catch": _catch(),
        "Next": next_state,
    }


def deploy_definition(
    *, poll_seconds: int = DEFAULT_POLL_S, timeout_seconds: int = DEFAULT_TIMEOUT_S, instance_count: int = 1
) -> dict[str, Any]:
    """The deploy flow as an ASL document (a dict; :func:`to_json` writes it).

    Args:
        poll_seconds: wait between two DescribeEndpoint calls.
        timeout_seconds: budget of the whole execution; past it the execution fails with ``States.Timeout``.
        instance_count: instances of the production variant.

    Raises:
        InvalidInputError: a non-positive poll interval, budget or instance count, or a poll longer than the budget.
    """
    if poll_seconds < 1 or timeout_seconds < 1 or instance_count < 1:
        raise InvalidInputError("poll_seconds, timeout_seconds and instance_count must be at least 1")
    if poll_seconds >= timeout_seconds:
        raise InvalidInputError(f"poll_seconds ({poll_seconds}) must be shorter than the budget ({timeout_seconds} s)")
    states: dict[str, Any] = {
        "CreateModel": _task(
            _SAGEMAKER + "createModel",
            {
                "ModelName.$": "$.model_name",
                "ExecutionRoleArn.$": "$.role_arn",
                "PrimaryContainer": {"Image.$": "$.image_uri", "ModelDataUrl.$": "$.model_data_url"},
            },
            "$.created.model",
            "CreateEndpointConfig",
        ),
        "CreateEndpointConfig": _task(
            _SAGEMAKER + "createEndpointConfig",
            {
                "EndpointConfigName.$": "$.model_name",
                "ProductionVariants": [
                    {
                        "VariantName": VARIANT,
                        "ModelName.$": "$.model_name",
                        "InstanceType.$": "$.instance_type",
                        "InitialInstanceCount": instance_count,
                        "InitialVariantWeight": 1,
                    }
                ],
            },
            "$.created.endpoint_config",
            "CreateEndpoint",
        ),
        "CreateEndpoint": _task(
            _SAGEMAKER + "createEndpoint",
            {"EndpointName.$": "$.endpoint_name", "EndpointConfigName.$": "$.model_name"},
            "$.created.endpoint",
            "DescribeEndpoint",
        ),
        "DescribeEndpoint": _task(
            DESCRIBE_ENDPOINT, {"EndpointName.$": "$.endpoint_name"}, "$.endpoint", "EndpointStatus"
        ),
        "EndpointStatus": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.endpoint.EndpointStatus", "StringEquals": "InService", "Next": "Deployed"},
                {"Variable": "$.endpoint.EndpointStatus", "StringEquals": "Failed", "Next": "EndpointFailed"},
                *(
                    {"Variable": "$.endpoint.EndpointStatus", "StringEquals": status, "Next": "EndpointNotServing"}
                    for status in STUCK
                ),
            ],
            "Default": "WaitForEndpoint",  # Creating, Updating, SystemUpdating
        },
        "WaitForEndpoint": {"Type": "Wait", "Seconds": poll_seconds, "Next": "DescribeEndpoint"},
        "Deployed": {"Type": "Succeed", "OutputPath": "$.endpoint"},
        "EndpointFailed": {
            "Type": "Fail",
            "Error": "EndpointFailed",
            "CausePath": "$.endpoint.FailureReason",
        },
        "EndpointNotServing": {
            "Type": "Fail",
            "Error": "EndpointNotServing",
            "Cause": f"the endpoint went to one of {', '.join(STUCK)} while deploying",
        },
        "DeployFailed": {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"},
    }
    return {
        "Comment": (
            "hybridml deploy flow: CreateModel -> CreateEndpointConfig -> CreateEndpoint -> DescribeEndpoint until"
            f" InService (input: {', '.join(DEPLOY_INPUT)})"
        ),
        "StartAt": "CreateModel",
        "TimeoutSeconds": timeout_seconds,
        "States": states,
    }


def retrain_definition(*, timeout_seconds: int = DEFAULT_RETRAIN_TIMEOUT_S, volume_gb: int = 30) -> dict[str, Any]:
    """The retraining run as ASL: a SageMaker training job running ``hybridml run`` on the new data object.

    Its input is what the EventBridge target's input transformer writes (see
    :func:`hybridml.aws.eventbridge.input_template`): ``bucket`` and ``key`` of the new object, and the
    constants of :data:`RETRAIN_INPUT`.
    """
    if timeout_seconds < 60 or volume_gb < 1:
        raise InvalidInputError("timeout_seconds must be at least 60 and volume_gb at least 1")
    return {
        "Comment": "hybridml retraining run: hybridml run on a new data object, as a SageMaker training job",
        "StartAt": "DataUri",
        "TimeoutSeconds": timeout_seconds,
        "States": {
            "DataUri": {
                "Type": "Pass",
                "Parameters": {"uri.$": "States.Format('s3://{}/{}', $.bucket, $.key)"},
                "ResultPath": "$.data",
                "Next": "RunPipeline",
            },
            "RunPipeline": {
                "Type": "Task",
                "Resource": _SAGEMAKER + "createTrainingJob.sync",
                "Parameters": {
                    # Execution names are unique per state machine: one training job per run, retried safely.
                    "TrainingJobName.$": "States.Format('hybridml-retrain-{}', $$.Execution.Name)",
                    "RoleArn.$": "$.role_arn",
                    "AlgorithmSpecification": {
                        "TrainingImage.$": "$.image_uri",
                        "TrainingInputMode": "File",
                        "ContainerEntrypoint": ["hybridml"],
                        "ContainerArguments.$": (
                            "States.Array('run', '--data', $.data.uri, '--model-name', $.model_name,"
                            " '--target', $.target, '--no-auto-approve', '--json')"
                        ),
                    },
                    "Environment": {"MLFLOW_TRACKING_URI.$": "$.tracking_uri", "HYBRIDML_DAEMON": "0"},
                    "OutputDataConfig": {"S3OutputPath.$": "$.output_path"},
                    "ResourceConfig": {
                        "InstanceType.$": "$.instance_type",
                        "InstanceCount": 1,
                        "VolumeSizeInGB": volume_gb,
                    },
                    "StoppingCondition": {"MaxRuntimeInSeconds": timeout_seconds},
                },
                "ResultPath": "$.training",
                "Retry": _retry(),
                "Catch": _catch("RetrainFailed"),
                "Next": "Registered",
            },
            "Registered": {"Type": "Succeed"},
            "RetrainFailed": {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"},
        },
    }


def to_json(definition: dict[str, Any]) -> str:
    """The definition as the stable, indented JSON the export writes and Terraform reads."""
    return json.dumps(definition, indent=2, sort_keys=False) + "\n"


__all__ = [
    "DEPLOY_INPUT",
    "DESCRIBE_ENDPOINT",
    "RETRAIN_INPUT",
    "THROTTLING",
    "deploy_definition",
    "retrain_definition",
    "to_json",
]
