"""`hybridml canary` and `hybridml ab`: canary analysis on quality and HTTP figures, and A/B test reports."""

from __future__ import annotations

import typer

canary_app = typer.Typer(no_args_is_help=True, help="Canary analysis: analyze (one decision), watch (until decided).")
ab_app = typer.Typer(no_args_is_help=True, help="A/B tests between two variants: report.")
