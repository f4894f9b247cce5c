"""The `hybridml` command: run and compile the pipeline, manage registered models, serve and predict."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from hybridml.config import Settings
from hybridml.errors import HybridmlError, InvalidInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
models_app = typer.Typer(no_args_is_help=True, help="Registered models: list, show, history, approve, reject.")
endpoints_app = typer.Typer(no_args_is_help=True, help="Local endpoints started by deploy or serve.")
app.add_typer(models_app, name="models")
app.add_typer(endpoints_app, name="endpoints")

err = Console(stderr=True)
out = Console(soft_wrap=True)


@dataclass
class State:
    """Options shared by every command, resolved once in the callback."""

    settings: Settings
    verbose: bool


def _state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(help="State directory of the embedded defaults (env HYBRIDML_HOME, default ./.hybridml)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and step logs.")] = False,
) -> None:
    settings = Settings.from_env(home=home)
    # Steps run as subprocesses of kfp.local and read their settings from the environment (their edge).
    os.environ["HYBRIDML_HOME"] = str(settings.home)
    # MLflow logs schema migrations and downloads at INFO on stderr, which would bury the one-line errors.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # in case MLflow was imported before this callback
    ctx.obj = State(settings=settings, verbose=verbose)


def fail(exc: BaseException, verbose: bool) -> NoReturn:
    """Print one readable line (the traceback too with --verbose) and exit with the error's code."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    message = exc.message if isinstance(exc, HybridmlError) else f"{type(exc).__name__}: {exc}"
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code if isinstance(exc, HybridmlError) else 1)


@contextlib.contextmanager
def _errors(ctx: typer.Context) -> Any:
    try:
        yield
    except (HybridmlError, OSError, ValueError) as exc:
        fail(exc, _state(ctx).verbose)


def _emit(payload: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(payload, default=str))
    else:
        out.print_json(json.dumps(payload, default=str))


# ----------------------------------------------------------------------------------------------------------- run


@app.command()
def run(
    ctx: typer.Context,
    data: Annotated[
        str, typer.Option(help="CSV/Parquet path or URI (file://, s3://); default: bundled breast cancer.")
    ] = "",
    target: Annotated[str, typer.Option(help="Label column (two classes).")] = "",
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = "hybridml-model",
    model_type: Annotated[
        str, typer.Option(help="xgboost | hist_gradient_boosting | random_forest | logistic_regression")
    ] = "xgboost",
    params: Annotated[str, typer.Option(help="Hyper-parameters as a JSON object.")] = "{}",
    threshold: Annotated[float, typer.Option(help="ROC AUC gate: below it the HPO branch runs.")] = 0.75,
    tolerance: Annotated[
        float, typer.Option(help="How much worse than the champion a version may be and still be approved.")
    ] = 0.01,
    auto_approve: Annotated[bool, typer.Option(help="Apply the approval policy (else versions stay pending).")] = True,
    n_trials: Annotated[int, typer.Option(help="HPO trials.")] = 20,
    hpo_timeout: Annotated[float, typer.Option(help="HPO time budget in seconds.")] = 600.0,
    hpo_storage: Annotated[str, typer.Option(help="Optuna storage URI (default: SQLite in the home directory).")] = "",
    seed: Annotated[int, typer.Option(help="Seed for the split, the model and the sampler.")] = 42,
    deploy_target: Annotated[str, typer.Option(help="local (kserve and sagemaker: not built yet).")] = "local",
    traffic: Annotated[int, typer.Option(help="Traffic percent for the new version (100 replaces stable).")] = 100,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for the endpoint to be ready.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run the training pipeline locally through kfp.local (the same pipeline that is compiled for Kubeflow)."""
    from hybridml.pipelines import local_run

    state = _state(ctx)
    with _errors(ctx):
        arguments = {
            "data_uri": local_run.absolute_uri(data),
            "target": target,
            "model_name": model_name,
            "model_type": model_type,
            "params_json": params,
            "threshold": threshold,
            "tolerance": tolerance,
            "auto_approve": auto_approve,
            "n_trials": n_trials,
            "hpo_timeout_s": hpo_timeout,
            "hpo_storage": hpo_storage or state.settings.hpo_storage,
            "seed": seed,
            "deploy_target": deploy_target,
            "traffic_percent": traffic,
            "ready_timeout_s": ready_timeout,
        }
        result = local_run.run(state.settings, arguments, progress=None if as_json else err, verbose=state.verbose)
    summary = {**result.summary, "run_dir": str(result.run_dir), "seconds": round(result.seconds, 2)}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    table = Table(title="hybridml run", show_header=False)
    for key, value in summary.items():
        table.add_row(key, "null" if value is None else str(value))
    out.print(table)


@app.command("compile")
def compile_(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the IR YAML.")],
) -> None:
    """Compile the pipeline to KFP IR YAML for the Kubeflow Pipelines UI."""
    from hybridml.pipelines import compile_to

    with _errors(ctx):
        path = compile_to(output)
    err.print(f"wrote {path}")


# -------------------------------------------------------------------------------------------------------- models


def _registry(ctx: typer.Context) -> Any:
    from hybridml.adapters.registry import Registry

    settings = _state(ctx).settings
    return Registry(settings.tracking_uri, user=settings.user)


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered models with their latest version and aliases."""
    with _errors(ctx):
        rows = [asdict(m) for m in _registry(ctx).list_models()]
    _emit(rows, as_json)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME (all versions), NAME/VERSION or NAME@alias.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One version, or every version of a model."""
    with _errors(ctx):
        registry = _registry(ctx)
        if "/" in ref or "@" in ref:
            payload: Any = asdict(registry.resolve(ref))
        else:
            payload = [asdict(v) for v in registry.list_versions(ref)]
    _emit(payload, as_json)


@models_app.command("history")
def models_history(
    ctx: typer.Context,
    name: str,
    version: Annotated[int | None, typer.Option(help="Only this version's events.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who changed which status or alias, when and why."""
    with _errors(ctx):
        events = _registry(ctx).history(name, version)
    if as_json:
        _emit([asdict(e) for e in events], True)
        return
    table = Table(title=f"history of {name}")
    for column in ("at", "actor", "action", "version", "detail", "reason"):
        table.add_column(column)
    for e in events:
        table.add_row(e.at, e.actor, e.action, "" if e.version is None else str(e.version), e.detail, e.reason)
    out.print(table)


def _set_status(ctx: typer.Context, name: str, version: int, status: str, reason: str, as_json: bool) -> None:
    with _errors(ctx):
        if not reason.strip():
            raise InvalidInputError("--reason must not be empty: it is kept in the model's history")
        info = _registry(ctx).set_status(name, version, status, reason=reason)
    _emit(asdict(info), as_json)


@models_app.command("approve")
def models_approve(
    ctx: typer.Context,
    name: str,
    version: int,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Approve a version; it becomes the champion."""
    _set_status(ctx, name, version, "Approved", reason, as_json)


@models_app.command("reject")
def models_reject(
    ctx: typer.Context,
    name: str,
    version: int,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Reject a version (a rejected champion loses the alias)."""
    _set_status(ctx, name, version, "Rejected", reason, as_json)


# -------------------------------------------------------------------------------------------- serving / predict


@app.command()
def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="NAME@alias or NAME/VERSION.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait until ready.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Start (or replace) the local KServe endpoint for a registered version; prints its URL."""
    from hybridml.deploy.local import LocalTarget

    settings = _state(ctx).settings
    with _errors(ctx):
        registry = _registry(ctx)
        info = registry.resolve(model)
        bundle = registry.download(info.name, info.version, settings.home / "downloads" / info.name / str(info.version))
        target = LocalTarget(settings.deployments_dir)
        target.deploy(info.name, info.version, bundle.path)
        deployment = target.wait_until_ready(info.name, timeout_s=timeout)
    _emit(asdict(deployment), as_json)


@app.command()
def predict(
    ctx: typer.Context,
    rows: Annotated[Path, typer.Argument(help="CSV or Parquet file of feature rows (a label column is ignored).")],
    model: Annotated[str, typer.Option("--model", help="Model name on the endpoint.")],
    endpoint: Annotated[str | None, typer.Option(help="Base URL; default: the local endpoint of --model.")] = None,
    protocol: Annotated[str, typer.Option(help="v1 or v2.")] = "v2",
    drop: Annotated[list[str] | None, typer.Option(help="Columns to drop before sending (e.g. the label).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Send rows to an endpoint and print the positive-class probabilities."""
    from hybridml.core.data import load_table
    from hybridml.deploy.local import LocalTarget
    from hybridml.serving import client

    settings = _state(ctx).settings
    with _errors(ctx):
        frame = load_table(rows)
        frame = frame.drop(columns=[c for c in (drop or []) if c in frame.columns])
        url = endpoint or LocalTarget(settings.deployments_dir).status(model).endpoint
        records = json.loads(frame.to_json(orient="records"))
        scores = client.predict(url, model, records, protocol=protocol)
    _emit({"endpoint": url, "model": model, "predictions": scores}, as_json)


@endpoints_app.command("list")
def endpoints_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Local deployments and whether they are ready."""
    from hybridml.deploy.local import LocalTarget

    with _errors(ctx):
        items = [asdict(d) for d in LocalTarget(_state(ctx).settings.deployments_dir).list()]
    _emit(items, as_json)


@endpoints_app.command("delete")
def endpoints_delete(ctx: typer.Context, name: str) -> None:
    """Stop a local endpoint and remove its state."""
    from hybridml.deploy.local import LocalTarget

    with _errors(ctx):
        LocalTarget(_state(ctx).settings.deployments_dir).delete(name)
    err.print(f"deleted endpoint {name}")


def main() -> None:
    """Console-script entry point."""
    start = time.perf_counter()
    try:
        app()
    finally:
        if os.environ.get("HYBRIDML_TIMING"):
            err.print(f"took {time.perf_counter() - start:.2f}s")


__all__ = ["app", "main"]
