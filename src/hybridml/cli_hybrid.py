"""`hybridml rollout`: one Approved version to two deploy targets at once (the hybrid rollout, deploy/hybrid.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer


def rollout(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Approved version to roll out: NAME/VERSION or NAME@alias.")],
    rows: Annotated[
        Path, typer.Option("--rows", help="CSV or Parquet file of feature rows the parity check sends to both sides.")
    ],
    target: Annotated[str, typer.Option("--target", help="First side: local (default) or sagemaker.")] = "local",
    deploy_config: Annotated[
        Path | None, typer.Option("--deploy-config", help="The first side's options as a JSON or YAML file.")
    ] = None,
    other: Annotated[str, typer.Option("--with", help="Second side: sagemaker (default) or local.")] = "sagemaker",
    other_config: Annotated[
        Path | None, typer.Option("--with-config", help="The second side's options as a JSON or YAML file.")
    ] = None,
    canary: Annotated[int, typer.Option("--canary", help="Canary share on each side (1-99).")] = 10,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Largest score difference parity allows between the two sides.")
    ] = 1e-6,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds each side may take to be ready.")] = 600.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Roll an Approved version out to two targets: canary on both, parity check, then promoted on both.

    If either side fails to deploy or become ready, or the two sides' scores of the same rows differ by more
    than --tolerance, both go back to their previous version. Every transition is recorded in the version's
    history. Prints the outcome; a rollout rolled back exits with code 4 and says why.
    """
    from hybridml.cli import _emit, _errors, _model_ref, _registry, _state, _target
    from hybridml.core.approval import check_approved
    from hybridml.core.data import load_table
    from hybridml.deploy import mlflow_fetch
    from hybridml.deploy.hybrid import HybridRollout, Side
    from hybridml.errors import ConflictError, InvalidInputError

    with _errors(ctx):
        if target == other:
            raise InvalidInputError(f"--target and --with name the same target {target!r}: a rollout needs two")
        registry = _registry(ctx)
        info = registry.resolve(model)
        check_approved(info.name, info.version, info.status, "are rolled out")
        fetch = mlflow_fetch(_state(ctx).settings.tracking_uri)
        ref = _model_ref(registry, f"{info.name}/{info.version}", fetch)
        frame = load_table(rows)
        missing = [name for name in ref.schema.names if name not in frame.columns]
        if missing:
            raise InvalidInputError(f"{rows} lacks feature {missing[0]!r} of {info.name} version {info.version}")
        records = json.loads(frame[ref.schema.names].to_json(orient="records"))  # a label column is left out
        sides = []
        for label, config in ((target, deploy_config), (other, other_config)):
            deployer = _target(ctx, label, config, fetch=fetch)
            sides.append(Side(label, deployer, getattr(deployer.config, "endpoint_name", None)))

        def resolve(version: str) -> Any:
            return _model_ref(registry, f"{info.name}/{version}", fetch)

        outcome = HybridRollout(
            sides, registry, canary_percent=canary, ready_timeout_s=timeout, tolerance=tolerance, resolve=resolve
        ).run(ref, records)
        payload = {
            "state": outcome.state,
            "reason": outcome.reason,
            "states": outcome.states,
            "sides": {k: asdict(v) if v is not None else None for k, v in outcome.sides.items()},
            "parity": asdict(outcome.parity) if outcome.parity is not None else None,
            "restore_errors": outcome.restore_errors,
        }
        _emit(payload, as_json)
        if outcome.state != "promoted":
            raise ConflictError(f"hybrid rollout of {info.name} version {info.version} rolled back: {outcome.reason}")
