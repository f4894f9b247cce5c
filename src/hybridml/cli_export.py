"""`hybridml export`: the AWS side's definitions (Step Functions state machine, EventBridge rule)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Export AWS definitions: step-functions, eventbridge-rule.")
