"""`hybridml monitor`: drift of a model's inputs and predictions against its reference profile."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Drift against the reference profile: drift (one check), watch (a job).")
