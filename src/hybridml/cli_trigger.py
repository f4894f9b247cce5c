"""`hybridml trigger`: start retraining runs on new data, a drift alert or a schedule."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Retraining triggers: serve (watch and receive), status.")
