"""``hybridml submit`` and ``hybridml schedule``: the committed pipeline on Kubeflow Pipelines through kfp.Client."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hybridml.cli import _emit, _errors

HostOption = Annotated[str, typer.Option("--host", help="KFP API endpoint, e.g. http://127.0.0.1:8080.")]
ExperimentOption = Annotated[str, typer.Option("--experiment", help="KFP experiment (made when missing).")]
NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", help="Kubeflow profile namespace (multi-user installations).")
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", help="Pipeline parameter KEY=VALUE (repeatable; checked against the compiled pipeline)."),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file", help="File holding a bearer token for the KFP API (else env KF_PIPELINES_TOKEN; never logged)."
    ),
]
NoClusterDefaultsOption = Annotated[
    bool,
    typer.Option(
        "--no-cluster-defaults",
        help="Send only --param values: keep the compiled defaults (local target, pod-local MLflow) the steps refuse"
        " in a pod.",
    ),
]
ServiceAccountOption = Annotated[
    str | None, typer.Option("--service-account", help="Kubernetes service account the run's pods use.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _prepare(params: list[str] | None, no_cluster_defaults: bool, token_file: Path | None) -> tuple[Any, ...]:
    # Everything the user typed is checked before the first request.
    from hybridml.adapters import kfp_client

    package = kfp_client.COMPILED_PIPELINE
    arguments = kfp_client.run_arguments(
        kfp_client.parse_params(params or []), cluster_defaults=not no_cluster_defaults, package=package
    )
    return package, kfp_client.pipeline_name(package), arguments, kfp_client.read_token(token_file)


def submit(
    ctx: typer.Context,
    host: HostOption,
    experiment: ExperimentOption = "hybridml",
    namespace: NamespaceOption = None,
    param: ParamOption = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="Run name (default: hybridml-<hash>).")] = None,
    token_file: TokenFileOption = None,
    no_cluster_defaults: NoClusterDefaultsOption = False,
    service_account: ServiceAccountOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload the committed pipeline to Kubeflow Pipelines (once per content) and start a run of it.

    Unless --no-cluster-defaults, the run gets the cluster's MLflow service, the kserve target and the chart's
    PostgreSQL for Optuna (hybridml.adapters.kfp_client.CLUSTER_DEFAULTS); --param overrides any of them.
    """
    from hybridml.adapters import kfp_client

    with _errors(ctx):
        package, name, arguments, token = _prepare(param, no_cluster_defaults, token_file)
        client = kfp_client.make_client(host, token=token, namespace=namespace)
        with kfp_client.api_errors(host):
            published = kfp_client.publish(client, package, name, namespace=namespace)
            run_id = kfp_client.start_run(
                client,
                published,
                experiment=experiment,
                run_name=run_name or published.version_name,
                arguments=arguments,
                namespace=namespace,
                service_account=service_account,
            )
    _emit(
        {
            "run_id": run_id,
            "pipeline_id": published.pipeline_id,
            "version_id": published.version_id,
            "version_name": published.version_name,
            "uploaded": published.uploaded,
            "experiment": experiment,
            "namespace": namespace,
            "arguments": arguments,
        },
        as_json,
    )


def schedule(
    ctx: typer.Context,
    host: HostOption,
    cron: Annotated[
        str | None,
        typer.Option("--cron", help="Cron expression: 5 fields (min hour dom month dow) or KFP's 6 (seconds first)."),
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", help="Interval between runs: 1d, 6h, 1h30m, 90s (at least 60s).")
    ] = None,
    experiment: ExperimentOption = "hybridml",
    namespace: NamespaceOption = None,
    param: ParamOption = None,
    name: Annotated[str, typer.Option("--name", help="Recurring run name.")] = "hybridml-retraining",
    max_concurrency: Annotated[int, typer.Option(help="Runs of this schedule at once.", min=1, max=10)] = 1,
    catchup: Annotated[bool, typer.Option(help="Run every missed interval after a pause (default: only the last).")] = (
        False
    ),
    token_file: TokenFileOption = None,
    no_cluster_defaults: NoClusterDefaultsOption = False,
    service_account: ServiceAccountOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a Kubeflow recurring run of the committed pipeline: scheduled retraining (--cron or --every)."""
    from hybridml.adapters import kfp_client
    from hybridml.errors import InvalidInputError

    with _errors(ctx):
        if (cron is None) == (every is None):
            raise InvalidInputError("hybridml schedule takes exactly one of --cron and --every")
        cron_expression = kfp_client.normalize_cron(cron) if cron is not None else None
        interval_s = kfp_client.parse_duration(every) if every is not None else None
        package, pipeline, arguments, token = _prepare(param, no_cluster_defaults, token_file)
        client = kfp_client.make_client(host, token=token, namespace=namespace)
        with kfp_client.api_errors(host):
            published = kfp_client.publish(client, package, pipeline, namespace=namespace)
            recurring_run_id = kfp_client.create_schedule(
                client,
                published,
                experiment=experiment,
                name=name,
                arguments=arguments,
                cron=cron_expression,
                interval_s=interval_s,
                namespace=namespace,
                max_concurrency=max_concurrency,
                catchup=catchup,
                service_account=service_account,
            )
    _emit(
        {
            "recurring_run_id": recurring_run_id,
            "pipeline_id": published.pipeline_id,
            "version_id": published.version_id,
            "version_name": published.version_name,
            "uploaded": published.uploaded,
            "experiment": experiment,
            "namespace": namespace,
            "cron": cron_expression,
            "interval_s": interval_s,
            "arguments": arguments,
        },
        as_json,
    )
