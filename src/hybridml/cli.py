"""The `hybridml` command: run and compile the pipeline, manage registered models, serve, predict and label."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
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


def _fetch(ctx: typer.Context, registry: Any, ref: str) -> tuple[Any, Path]:
    """Resolve ``ref`` in the registry and download the bundle under home/downloads/NAME/VERSION."""
    info = registry.resolve(ref)
    destination = _state(ctx).settings.home / "downloads" / info.name / str(info.version)
    return info, Path(registry.download(info.name, info.version, destination).path)


@app.command()
def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Stable version: NAME@alias or NAME/VERSION.")],
    canary: Annotated[
        str | None, typer.Option(help="Canary NAME/VERSION:PCT answering PCT% (1-99) of requests.")
    ] = None,
    shadow: Annotated[
        str | None, typer.Option(help="Shadow NAME/VERSION getting a copy of every request (answers only logged).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Port (default: the endpoint's current one if free, else any).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait until ready.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Start (or replace) the local KServe endpoint for registered versions; prints its URL and logs."""
    from hybridml.deploy.local import LocalTarget
    from hybridml.serving.cli_support import parse_canary, parse_shadow

    settings = _state(ctx).settings
    with _errors(ctx):
        # Parse every flag before the registry is touched, so a typo fails fast.
        canary_ref = parse_canary(canary) if canary else None
        shadow_ref = parse_shadow(shadow) if shadow else None
        registry = _registry(ctx)
        info, stable_dir = _fetch(ctx, registry, model)
        name = info.name

        def label(ref_name: str, version: Any) -> str:
            # A variant from another registered model gets its name in the label: versions must stay distinct.
            return str(version) if ref_name == name else f"{ref_name}-{version}"

        canary_spec = shadow_spec = None
        if canary_ref is not None:
            canary_info, canary_dir = _fetch(ctx, registry, f"{canary_ref.name}/{canary_ref.version}")
            canary_spec = (label(canary_info.name, canary_info.version), canary_dir, canary_ref.percent)
        if shadow_ref is not None:
            shadow_info, shadow_dir = _fetch(ctx, registry, f"{shadow_ref.name}/{shadow_ref.version}")
            shadow_spec = (label(shadow_info.name, shadow_info.version), shadow_dir)
        target = LocalTarget(settings.deployments_dir, host=host, start_timeout_s=timeout)
        target.serve(name, (str(info.version), stable_dir), canary=canary_spec, shadow=shadow_spec, port=port)
        deployment = target.wait_until_ready(name, timeout_s=timeout)
        shadow_state = target.state(name).get("shadow")
    payload = {
        **asdict(deployment),
        "shadow_version": shadow_state["version"] if shadow_state else None,
        "payload_log": str(target.payload_log(name)),
        "feedback_log": str(target.feedback_log(name)),
    }
    _emit(payload, as_json)


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


def _label(text: str) -> Any:
    """A CLI label as the server reads it: 0/1 and true/false as such, anything else as a class name."""
    lowered = text.strip().lower()
    if lowered in ("0", "1"):
        return int(lowered)
    if lowered in ("true", "false"):
        return lowered == "true"
    return text.strip()


def _feedback_file(path: Path) -> dict[str, Any]:
    import csv

    if not path.is_file():
        raise InvalidInputError(f"feedback file not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"request_id", "label"} <= set(reader.fieldnames):
            raise InvalidInputError(f"{path} must have the columns request_id and label")
        labels = {}
        for line, record in enumerate(reader, start=2):
            if not record["request_id"] or record["label"] is None or not record["label"].strip():
                raise InvalidInputError(f"{path} line {line}: request_id and label must not be empty")
            labels[record["request_id"]] = _label(record["label"])
    return labels


@app.command()
def feedback(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Argument(help="CSV with the columns request_id and label (instead of the flags).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Local endpoint name.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Base URL of the server (instead of --model).")] = None,
    request_id: Annotated[str | None, typer.Option(help="Request id (the X-Request-Id of the prediction).")] = None,
    label: Annotated[str | None, typer.Option(help="True label: 0, 1, true, false or a class name.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Attach ground-truth labels to served predictions (appended to the endpoint's feedback log)."""
    from hybridml.deploy.local import LocalTarget
    from hybridml.serving.cli_support import send_feedback

    with _errors(ctx):
        if (model is None) == (endpoint is None):
            raise InvalidInputError("give exactly one of --model and --endpoint")
        if (file is None) == (request_id is None and label is None):
            raise InvalidInputError("give either a CSV file or --request-id with --label")
        if file is not None:
            labels = _feedback_file(file)
        elif request_id is None or label is None:
            raise InvalidInputError("--request-id and --label go together")
        else:
            labels = {request_id: _label(label)}
        url = endpoint or LocalTarget(_state(ctx).settings.deployments_dir).state(str(model))["endpoint"]
        accepted = send_feedback(url, labels)
    _emit({"endpoint": url, "accepted": accepted}, as_json)


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


@endpoints_app.command("promote")
def endpoints_promote(ctx: typer.Context, name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Make the canary the stable version at 100% (no restart when the endpoint runs a router)."""
    from hybridml.deploy.local import LocalTarget

    with _errors(ctx):
        deployment = LocalTarget(_state(ctx).settings.deployments_dir).promote(name)
    _emit(asdict(deployment), as_json)


@endpoints_app.command("rollback")
def endpoints_rollback(ctx: typer.Context, name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Drop the canary so the stable version answers all requests (no restart when a router runs)."""
    from hybridml.deploy.local import LocalTarget

    with _errors(ctx):
        deployment = LocalTarget(_state(ctx).settings.deployments_dir).rollback(name)
    _emit(asdict(deployment), as_json)


@endpoints_app.command("traffic")
def endpoints_traffic(
    ctx: typer.Context,
    name: str,
    percent: Annotated[int, typer.Argument(help="Canary share of new requests, 0-100.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Change the canary's share of requests (no restart when a router runs)."""
    from hybridml.deploy.local import LocalTarget

    with _errors(ctx):
        deployment = LocalTarget(_state(ctx).settings.deployments_dir).set_traffic(name, percent)
    _emit(asdict(deployment), as_json)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
