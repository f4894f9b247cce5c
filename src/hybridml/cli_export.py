"""`hybridml export`: the AWS side's definitions (Step Functions state machine, EventBridge rule)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Export AWS definitions: step-functions, eventbridge-rule.")

FLOWS = ("deploy", "retrain")


def _write(text: str, output: Path | None) -> None:
    """``text`` to ``output`` (its folder made), or to stdout; a file write is confirmed on stderr."""
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    typer.echo(f"wrote {output}", err=True)


@app.command("step-functions")
def step_functions(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")] = None,
    flow: Annotated[str, typer.Option(help="deploy (CreateModel ... InService) or retrain (hybridml run).")] = "deploy",
    poll_seconds: Annotated[int, typer.Option(help="Deploy flow: seconds between DescribeEndpoint calls.")] = 30,
    timeout_seconds: Annotated[int, typer.Option(help="Time budget of one execution (default per flow).")] = 0,
) -> None:
    """Write a state machine as Amazon States Language JSON (the deploy flow by default)."""
    from hybridml.aws import stepfunctions
    from hybridml.cli import _errors
    from hybridml.errors import InvalidInputError

    with _errors(ctx):
        if flow not in FLOWS:
            raise InvalidInputError(f"--flow must be one of {', '.join(FLOWS)}, got {flow!r}")
        if flow == "deploy":
            budget = timeout_seconds or stepfunctions.DEFAULT_TIMEOUT_S
            definition = stepfunctions.deploy_definition(poll_seconds=poll_seconds, timeout_seconds=budget)
        else:
            definition = stepfunctions.retrain_definition(
                timeout_seconds=timeout_seconds or stepfunctions.DEFAULT_RETRAIN_TIMEOUT_S
            )
        _write(stepfunctions.to_json(definition), output)


@app.command("eventbridge-rule")
def eventbridge_rule(
    ctx: typer.Context,
    bucket: Annotated[str, typer.Option(help="Data bucket whose new objects start a retraining run.")],
    prefix: Annotated[str, typer.Option(help="Key prefix of new data objects (not empty).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")] = None,
    name: Annotated[str, typer.Option(help="Rule name.")] = "hybridml-retrain-on-new-data",
    target_arn: Annotated[str, typer.Option(help="Retraining state machine ARN (default: a placeholder).")] = "",
    role_arn: Annotated[str, typer.Option(help="Role EventBridge assumes (default: a placeholder).")] = "",
    constants: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE for the retraining run's input (image_uri, role_arn, ...); repeatable."),
    ] = None,
) -> None:
    """Write the EventBridge rule (S3 Object Created under a prefix) and its target as PutRule/PutTargets JSON."""
    from hybridml.aws import eventbridge
    from hybridml.cli import _errors
    from hybridml.errors import InvalidInputError

    with _errors(ctx):
        values: dict[str, str] = {}
        for pair in constants or []:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise InvalidInputError(f"--set takes KEY=VALUE, got {pair[:100]!r}")
            if key in eventbridge.INPUT_PATHS:
                raise InvalidInputError(f"--set {key} is taken from the S3 event, not set")
            values[key] = value
        document = eventbridge.rule(
            bucket, prefix, name=name, target_arn=target_arn or None, role_arn=role_arn or None, constants=values
        )
        _write(json.dumps(document, indent=2) + "\n", output)
