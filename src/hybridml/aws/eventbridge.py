"""The EventBridge rule that starts a retraining run when a new data object lands under an S3 prefix (pure data).

S3 sends ``Object Created`` events to EventBridge once the bucket's EventBridge notifications are on
(``aws_s3_bucket_notification { eventbridge = true }`` in ``infra/aws``). The rule matches those of one bucket and
key prefix; its target is the *retraining* state machine (:func:`hybridml.aws.stepfunctions.retrain_definition`),
not the deploy flow: new data means a new pipeline run, whose version waits for approval before any deploy. The
target's input transformer hands the state machine the object's bucket and key plus the run's constants.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from hybridml.errors import InvalidInputError

# S3 bucket names: 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RULE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEFAULT_RULE_NAME = "hybridml-retrain-on-new-data"


def check_prefix(prefix: str) -> str:
    """``prefix`` without a leading slash; refuses an empty prefix (every object would retrain) and wildcards."""
    cleaned = prefix.lstrip("/")
    if not cleaned:
        raise InvalidInputError("the key prefix must not be empty: every object in the bucket would start a retraining")
    if any(c in cleaned for c in "*?\x00") or len(cleaned) > 1024:
        raise InvalidInputError(f"the key prefix {prefix[:100]!r} must be a plain S3 key prefix (no wildcards)")
    return cleaned


def event_pattern(bucket: str, prefix: str) -> dict[str, Any]:
    """The event pattern: S3 ``Object Created`` in ``bucket`` with a key starting with ``prefix``.

    Raises:
        InvalidInputError: a bucket name S3 would refuse, or an empty or wildcard prefix.
    """
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidInputError(f"{bucket[:100]!r} is not a valid S3 bucket name")
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": check_prefix(prefix)}]}},
    }


# Paths of the event the transformer reads, and the state machine input it writes (constants filled by Terraform).
INPUT_PATHS = {"bucket": "$.detail.bucket.name", "key": "$.detail.object.key"}


def input_template(constants: Mapping[str, str]) -> str:
    """The input transformer's template: ``{"bucket": <bucket>, "key": <key>, **constants}`` as EventBridge wants it.

    EventBridge substitutes ``<bucket>`` and ``<key>`` (quoted, since they are strings); the constants are plain
    JSON strings.
    """
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in constants.items())
    return '{"bucket": <bucket>, "key": <key>' + (f", {body}" if body else "") + "}"


def rule(
    bucket: str,
    prefix: str,
    *,
    name: str = DEFAULT_RULE_NAME,
    target_arn: str | None = None,
    role_arn: str | None = None,
    constants: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The rule and its target as PutRule / PutTargets arguments.

    Args:
        bucket: the data bucket.
        prefix: key prefix of new data objects.
        name: rule name.
        target_arn: the retraining state machine's ARN (None: a placeholder for Terraform or the caller to fill).
        role_arn: the role EventBridge assumes to start the execution (None: a placeholder).
        constants: the retraining run's constants (:data:`hybridml.aws.stepfunctions.RETRAIN_INPUT`).
    """
    if not _RULE_NAME.match(name):
        raise InvalidInputError(f"rule name {name[:100]!r} must be 1-64 letters, digits, '.', '-' or '_'")
    pattern = event_pattern(bucket, prefix)
    transformer = {"InputPathsMap": dict(INPUT_PATHS), "InputTemplate": input_template(constants or {})}
    return {
        "Rule": {
            "Name": name,
            "Description": f"New object under s3://{bucket}/{check_prefix(prefix)} starts a hybridml retraining run",
            "EventPattern": json.dumps(pattern),
            "State": "ENABLED",
        },
        "Targets": [
            {
                "Id": "retrain",
                "Arn": target_arn or "${retrain_state_machine_arn}",
                "RoleArn": role_arn or "${events_role_arn}",
                "InputTransformer": transformer,
            }
        ],
    }


__all__ = ["DEFAULT_RULE_NAME", "INPUT_PATHS", "check_prefix", "event_pattern", "input_template", "rule"]
