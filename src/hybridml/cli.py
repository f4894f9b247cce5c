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

from hybridml.cli_options import ContextOption, DeployConfigOption, KubeconfigOption, NamespaceOption
from hybridml.config import Settings
from hybridml.errors import HybridmlError, InvalidInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
models_app = typer.Typer(no_args_is_help=True, help="Registered models: list, show, history, approve, reject.")
endpoints_app = typer.Typer(
    no_args_is_help=True,
    help="Endpoints of a deploy target (local by default): list, status, traffic, promote, rollback, shadow, delete.",
)
app.add_typer(models_app, name="models")
app.add_typer(endpoints_app, name="endpoints")
daemon_app = typer.Typer(
    no_args_is_help=True, help="The background process that keeps this home's imports warm: status, stop."
)
app.add_typer(daemon_app, name="daemon")

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


TargetOption = Annotated[
    str | None,
    typer.Option("--target", help="Deploy target: local, kserve or sagemaker; default: local."),
]
CLUSTER_FLAGS = ("namespace", "kubeconfig", "context")


# ----------------------------------------------------------------------------------------------------------- run


@app.command()
def run(
    ctx: typer.Context,
    data: Annotated[
        str, typer.Option(help="CSV/Parquet path or URI (file://, s3://); default: bundled breast cancer.")
    ] = "",
    target: Annotated[str, typer.Option(help="Label column (two classes).")] = "",
    drop: Annotated[
        list[str] | None, typer.Option("--drop", help="Column not to use as a feature (repeatable).")
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", help="Column to use as a feature even if it looks like an identifier (repeatable)."),
    ] = None,
    positive_class: Annotated[
        str, typer.Option(help="Label value scored as positive (default: the second in sorted order).")
    ] = "",
    model_name: Annotated[
        str, typer.Option(help="Registered model name: lower-case letters, digits and '-', at most 40.")
    ] = "hybridml-model",
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
    hpo_workers: Annotated[
        int, typer.Option(help="HPO worker processes sharing the study (kfp.local runs at most 2 at once).")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed for the split, the model and the sampler.")] = 42,
    deploy_target: Annotated[str, typer.Option(help="local, kserve or sagemaker.")] = "local",
    deploy_config: DeployConfigOption = None,
    sagemaker_bridge: Annotated[
        Path | None,
        typer.Option(
            "--sagemaker-bridge",
            help="Also mirror the approval to SageMaker and serve the Approved version there: a JSON or YAML file of"
            " the sagemaker target's options (role_arn, bucket, image_uri, endpoint_name, canary...).",
        ),
    ] = None,
    traffic: Annotated[int, typer.Option(help="Traffic percent for the new version (100 replaces stable).")] = 100,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for the endpoint to be ready.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run the training pipeline locally through kfp.local (the same pipeline that is compiled for Kubeflow).

    Columns that look like identifiers (row numbers, text unique per row) are left out with a warning;
    --drop and --keep override.
    """
    from hybridml.core.data import DROPPED_ON_REQUEST
    from hybridml.pipelines import local_run

    state = _state(ctx)
    with _errors(ctx):
        arguments = {
            "data_uri": local_run.absolute_uri(data),
            "target": target,
            # JSON lists: a column name may hold a comma.
            "drop_columns": json.dumps(drop or []),
            "keep_columns": json.dumps(keep or []),
            "positive_class": positive_class,
            "model_name": model_name,
            "model_type": model_type,
            "params_json": params,
            "threshold": threshold,
            "tolerance": tolerance,
            "auto_approve": auto_approve,
            "n_trials": n_trials,
            "hpo_timeout_s": hpo_timeout,
            "hpo_storage": hpo_storage or state.settings.hpo_storage,
            "hpo_workers": hpo_workers,
            "seed": seed,
            "deploy_target": deploy_target,
            # Read and checked here, so a bad file fails before the pipeline starts; steps get it as JSON.
            "deploy_config": json.dumps(_config_file(deploy_config)) if deploy_config is not None else "",
            "sagemaker_bridge": json.dumps(_config_file(sagemaker_bridge)) if sagemaker_bridge is not None else "",
            "traffic_percent": traffic,
            "ready_timeout_s": ready_timeout,
        }
        result = local_run.run(state.settings, arguments, progress=None if as_json else err, verbose=state.verbose)
    summary = {**result.summary, "run_dir": str(result.run_dir), "seconds": round(result.seconds, 2)}
    detected = {c: r for c, r in (summary.get("dropped") or {}).items() if r != DROPPED_ON_REQUEST}
    if detected:
        # One line on stderr, so --json output stays one object on stdout.
        shown = "; ".join(f"{c} ({r})" for c, r in detected.items())
        typer.echo(f"warning: columns left out, they look like identifiers: {shown}; --keep COL keeps one", err=True)
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
    cache_preprocess: Annotated[
        bool,
        typer.Option(
            help="Let Kubeflow reuse a preprocess result with the same inputs (a file replaced in place under the"
            " same data URI is then not re-read). Every other step always runs."
        ),
    ] = False,
) -> None:
    """Compile the pipeline to KFP IR YAML for the Kubeflow Pipelines UI."""
    from hybridml.pipelines import compile_to

    with _errors(ctx):
        path = compile_to(output, cache_preprocess=cache_preprocess)
    err.print(f"wrote {path}" + (" (preprocess cacheable)" if cache_preprocess else " (no step cached)"))


# -------------------------------------------------------------------------------------------------------- models


def _registry(ctx: typer.Context) -> Any:
    from hybridml.registry import Registry

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


ExpectOption = Annotated[
    str | None,
    typer.Option(
        "--expect",
        help="Change it only if its status is still this one (PendingManualApproval, Approved or Rejected): another"
        " reviewer's decision in between makes this a conflict (exit 4) instead of overriding it.",
    ),
]


def _set_status(
    ctx: typer.Context, name: str, version: int, status: str, reason: str, expect: str | None, as_json: bool
) -> None:
    with _errors(ctx):
        if not reason.strip():
            raise InvalidInputError("--reason must not be empty: it is kept in the model's history")
        info = _registry(ctx).set_status(name, version, status, reason=reason, expected=expect)
    _emit(asdict(info), as_json)


@models_app.command("approve")
def models_approve(
    ctx: typer.Context,
    name: str,
    version: int,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")],
    expect: ExpectOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Approve a version; it becomes the champion."""
    _set_status(ctx, name, version, "Approved", reason, expect, as_json)


@models_app.command("reject")
def models_reject(
    ctx: typer.Context,
    name: str,
    version: int,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")],
    expect: ExpectOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Reject a version (a rejected champion loses the alias)."""
    _set_status(ctx, name, version, "Rejected", reason, expect, as_json)


# -------------------------------------------------------------------------------------------- serving / predict


def _config_file(path: Path) -> dict[str, Any]:
    from hybridml.deploy import read_config_file

    return read_config_file(path)


def _target(
    ctx: typer.Context, target: str | None, deploy_config: Path | None, *, fetch: Any = None, **flags: Any
) -> Any:
    """The deploy target from --target, --deploy-config and a command's own flags (which win), via the factory."""
    from hybridml.deploy import config_from, fetch_artifact, make_target

    options = _config_file(deploy_config) if deploy_config is not None else {}
    given = [f"--{key}" for key in CLUSTER_FLAGS if flags.get(key) is not None]
    name = target or options.get("target") or "local"
    if given and name != "kserve":
        raise InvalidInputError(f"{', '.join(given)}: only for --target kserve (the {name} target has no cluster)")
    options.update({key: value for key, value in flags.items() if value is not None})
    return make_target(config_from(target, options, _state(ctx).settings), fetch=fetch or fetch_artifact)


def _model_ref(registry: Any, ref: str, fetch: Any) -> Any:
    """The registered version ``ref`` (NAME/VERSION or NAME@alias) as a ModelRef; its target fetches the files."""
    from hybridml.deploy import model_ref

    info = registry.resolve(ref)
    source = info.source or f"models:/{info.name}/{info.version}"
    return model_ref(info.name, info.version, source, fetch, pipeline_run_id=info.pipeline_run_id or "")


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
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: the endpoint's current one if free, else any).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait until ready (default: the target's start timeout, 120).")
    ] = None,
    deploy_config: DeployConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Start (or replace) the local KServe endpoint for registered versions; prints its URL and logs."""
    from hybridml.deploy import mlflow_fetch
    from hybridml.deploy.local import LocalTarget
    from hybridml.serving.cli_support import parse_canary, parse_shadow

    settings = _state(ctx).settings
    with _errors(ctx):
        # Parse every flag before the registry is touched, so a typo fails fast.
        canary_ref = parse_canary(canary) if canary else None
        shadow_ref = parse_shadow(shadow) if shadow else None
        fetch = mlflow_fetch(settings.tracking_uri)
        target = _target(ctx, "local", deploy_config, fetch=fetch, host=host, start_timeout_s=timeout)
        if not isinstance(target, LocalTarget):  # config_from("local", ...) builds nothing else
            raise InvalidInputError("serve starts local endpoints only")
        registry = _registry(ctx)
        stable = _model_ref(registry, model, fetch)
        canary_spec = None
        if canary_ref is not None:
            canary_spec = (_model_ref(registry, f"{canary_ref.name}/{canary_ref.version}", fetch), canary_ref.percent)
        shadow_spec = _model_ref(registry, f"{shadow_ref.name}/{shadow_ref.version}", fetch) if shadow_ref else None
        target.serve(stable.name, stable, canary=canary_spec, shadow=shadow_spec, port=port)
        deployment = target.wait_until_ready(stable.name, timeout_s=target.config.start_timeout_s)
    _say_where_control_listens(target.config.host, target.config.control_token_file)
    payload = {
        **asdict(deployment),
        "payload_log": str(target.payload_log(stable.name)),
        "feedback_log": str(target.feedback_log(stable.name)),
    }
    _emit(payload, as_json)


def _say_where_control_listens(host: str, token_file: str | None) -> None:
    """Tell a user who opened inference beyond loopback without a token that control did not follow it."""
    from hybridml.serving.auth import TOKEN_ENV, is_loopback_host

    if not is_loopback_host(host) and token_file is None and not os.environ.get(TOKEN_ENV):
        err.print(
            f"note: inference listens on {host}; control (promote, rollback, traffic, feedback) stays on loopback"
            f" because no control token is set (--deploy-config control_token_file or {TOKEN_ENV})",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def predict(
    ctx: typer.Context,
    rows: Annotated[Path, typer.Argument(help="CSV or Parquet file of feature rows (a label column is ignored).")],
    model: Annotated[str, typer.Option("--model", help="Model name on the endpoint.")],
    endpoint: Annotated[
        str | None, typer.Option(help="Base URL; default: the deployment of --model on the target.")
    ] = None,
    protocol: Annotated[str, typer.Option(help="v1 or v2.")] = "v2",
    drop: Annotated[list[str] | None, typer.Option(help="Columns to drop before sending (e.g. the label).")] = None,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Send rows to an endpoint and print the positive-class probabilities."""
    from hybridml.core.data import load_table
    from hybridml.serving import client

    with _errors(ctx):
        frame = load_table(rows)
        frame = frame.drop(columns=[c for c in (drop or []) if c in frame.columns])
        records = json.loads(frame.to_json(orient="records"))
        if endpoint is not None:
            url, scores = endpoint, client.predict(endpoint, model, records, protocol=protocol)
        else:
            deployed = _target(ctx, target, deploy_config)
            url, scores = deployed.status(model).endpoint, deployed.invoke(model, records, protocol=protocol)
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
    model: Annotated[str | None, typer.Option("--model", help="Deployment name on the target.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Base URL of the server (instead of --model).")] = None,
    request_id: Annotated[str | None, typer.Option(help="Request id (the X-Request-Id of the prediction).")] = None,
    label: Annotated[str | None, typer.Option(help="True label: 0, 1, true, false or a class name.")] = None,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="Bearer token for a server off loopback (default: env HYBRIDML_CONTROL_TOKEN, if set)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Attach ground-truth labels to served predictions (appended to the endpoint's feedback log)."""
    from hybridml.serving.auth import read_token
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
        url = endpoint or _target(ctx, target, deploy_config).status(str(model)).endpoint
        token = read_token(str(token_file) if token_file else None, os.environ)
        accepted = send_feedback(url, labels, token=token.decode() if token is not None else None)
    _emit({"endpoint": url, "accepted": accepted}, as_json)


@endpoints_app.command("list")
def endpoints_list(
    ctx: typer.Context,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Deployments of the target and whether they are ready."""
    with _errors(ctx):
        deployed = _target(ctx, target, deploy_config, namespace=namespace, kubeconfig=kubeconfig, context=context)
        items = [asdict(d) for d in deployed.list()]
    _emit(items, as_json)


@endpoints_app.command("status")
def endpoints_status(
    ctx: typer.Context,
    name: str,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One deployment as its target reports it now: versions, split, ready and why not (no waiting)."""
    with _errors(ctx):
        deployed = _target(ctx, target, deploy_config, namespace=namespace, kubeconfig=kubeconfig, context=context)
        deployment = deployed.status(name)
    _emit(asdict(deployment), as_json)


def _record(ctx: typer.Context, deployment: Any, version: str | None, detail: str) -> None:
    """Record a kserve endpoint change in the history of registered version NAME/``version`` (NAME: the endpoint).

    Other targets record only ``hybridml deploy``. An endpoint that is no registered model (an A/B service named
    NAME-vVERSION) gets a note on stderr instead.
    """
    from hybridml.errors import NotFoundError

    if deployment.target != "kserve" or version is None:
        return
    figures = {
        "target": deployment.target,
        "endpoint": deployment.endpoint,
        "stable": deployment.stable_version,
        "canary": deployment.canary_version,
        "canary_percent": deployment.canary_percent,
    }
    try:
        _registry(ctx).record_event(
            deployment.name, version, "deployment", detail, reason=json.dumps(figures, separators=(",", ":"))
        )
    except NotFoundError as exc:
        err.print(f"not recorded in the registry: {exc}", highlight=False, soft_wrap=True)


@endpoints_app.command("delete")
def endpoints_delete(
    ctx: typer.Context,
    name: str,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Stop an endpoint and remove it (the local target keeps its logs)."""
    with _errors(ctx):
        deployed = _target(ctx, target, deploy_config, namespace=namespace, kubeconfig=kubeconfig, context=context)
        before = deployed.status(name) if deployed.target_name == "kserve" else None
        deployed.delete(name)
        if before is not None:
            _record(ctx, before, before.stable_version, f"kserve {name}: deleted")
    err.print(f"deleted endpoint {name}")


@endpoints_app.command("promote")
def endpoints_promote(
    ctx: typer.Context,
    name: str,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Make the canary the stable version at 100% (no restart when the endpoint runs a router)."""
    with _errors(ctx):
        deployed = _target(ctx, target, deploy_config, namespace=namespace, kubeconfig=kubeconfig, context=context)
        deployment = deployed.promote(name)
        _record(ctx, deployment, deployment.stable_version, f"kserve {name}: canary promoted, stable at 100%")
    _emit(asdict(deployment), as_json)


@endpoints_app.command("rollback")
def endpoints_rollback(
    ctx: typer.Context,
    name: str,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Drop the canary so the stable version answers all requests (no restart when a router runs)."""
    with _errors(ctx):
        deployed = _target(ctx, target, deploy_config, namespace=namespace, kubeconfig=kubeconfig, context=context)
        before = deployed.status(name) if deployed.target_name == "kserve" else None
        deployment = deployed.rollback(name)
        if before is not None:
            detail = f"kserve {name}: canary rolled back, stable {deployment.stable_version} at 100%"
            _record(ctx, deployment, before.canary_version, detail)
    _emit(asdict(deployment), as_json)


@endpoints_app.command("traffic")
def endpoints_traffic(
    ctx: typer.Context,
    name: str,
    percent: Annotated[int, typer.Argument(help="Canary share of new requests, 0-100.")],
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Change the canary's share of requests (no restart when a router runs)."""
    with _errors(ctx):
        deployed = _target(ctx, target, deploy_config, namespace=namespace, kubeconfig=kubeconfig, context=context)
        deployment = deployed.set_traffic(name, percent)
        _record(ctx, deployment, deployment.canary_version, f"kserve {name}: canary at {percent}%")
    _emit(asdict(deployment), as_json)


@endpoints_app.command("shadow")
def endpoints_shadow(
    ctx: typer.Context,
    name: str,
    model: Annotated[
        str | None, typer.Option("--model", help="Registered version to shadow with: NAME/VERSION or NAME@alias.")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Remove the shadow.")] = False,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Copy every request to another version (its answers are only logged), or stop doing so with --off."""
    from hybridml.deploy import mlflow_fetch

    with _errors(ctx):
        if (model is None) == (not off):
            raise InvalidInputError("give exactly one of --model and --off")
        fetch = mlflow_fetch(_state(ctx).settings.tracking_uri)
        deployed = _target(ctx, target, deploy_config, fetch=fetch)
        ref = _model_ref(_registry(ctx), model, fetch) if model is not None else None
        deployment = deployed.shadow(name, ref)
    _emit(asdict(deployment), as_json)


# -------------------------------------------------------------------------------------------------------- daemon


@daemon_app.command("status")
def daemon_status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Whether this home's daemon runs: pid, home, version, uptime, idle timeout, socket (never starts one)."""
    from hybridml.daemon import client

    with _errors(ctx):
        info = client.status(str(_state(ctx).settings.home))
    if as_json:
        _emit(info, True)
        return
    table = Table(title="hybridml daemon", show_header=False)
    for key in ("running", "pid", "home", "version", "current", "uptime_s", "idle_timeout_s", "idle_s",
                "running_commands", "served", "loaded", "socket", "log"):  # fmt: skip
        if key in info:
            table.add_row(key, str(info[key]))
    out.print(table)


@daemon_app.command("stop")
def daemon_stop(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Stop this home's daemon (commands it is running finish first); the next command starts a fresh one."""
    from hybridml.daemon import client

    with _errors(ctx):
        info = client.stop(str(_state(ctx).settings.home))
    if as_json:
        _emit(info, True)
    elif info["stopped"]:
        err.print(f"stopped daemon {info['pid']} of {info['home']}", highlight=False, soft_wrap=True)
    else:
        err.print(f"no daemon runs for {info['home']}", highlight=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]


# ---------------------------------------------------------------- sub-commands kept in their own modules
# Imported last: those modules import the helpers above (fail, _errors, _emit, _state) from this one.
from hybridml import cli_canary, cli_deploy, cli_export, cli_hybrid, cli_kfp, cli_monitor, cli_trigger  # noqa: E402

app.add_typer(cli_monitor.app, name="monitor")
app.add_typer(cli_canary.canary_app, name="canary")
app.add_typer(cli_canary.ab_app, name="ab")
app.add_typer(cli_trigger.app, name="trigger")
app.add_typer(cli_export.app, name="export")
app.command("deploy")(cli_deploy.deploy)
app.command("rollout")(cli_hybrid.rollout)
app.command("submit")(cli_kfp.submit)
app.command("schedule")(cli_kfp.schedule)
models_app.command("mirror")(cli_deploy.mirror)
