"""`hybridml deploy`: roll a registered version out to a deploy target (local, kserve, sagemaker), canary or whole."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer

from hybridml.cli_options import ContextOption, DeployConfigOption, KubeconfigOption, NamespaceOption


def deploy(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Approved version to deploy: NAME/VERSION or NAME@alias.")],
    target: Annotated[str | None, typer.Option("--target", help="local, kserve or sagemaker (default: local).")] = None,
    endpoint_name: Annotated[
        str | None, typer.Option("--endpoint-name", help="SageMaker endpoint (default: the model's name).")
    ] = None,
    canary: Annotated[
        int | None, typer.Option("--canary", help="Deploy as a canary answering PCT% (1-99) beside the stable one.")
    ] = None,
    role_arn: Annotated[str | None, typer.Option("--role-arn", help="SageMaker execution role ARN.")] = None,
    bucket: Annotated[str | None, typer.Option("--bucket", help="S3 bucket of the model.tar.gz.")] = None,
    image_uri: Annotated[str | None, typer.Option("--image-uri", help="Serving image (ECR URI).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS region (default: the AWS chain's).")] = None,
    serving: Annotated[
        str | None, typer.Option("--serving", help="SageMaker: project (default) or xgboost-builtin.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds the endpoint may take to be ready (target default).")
    ] = None,
    deploy_config: DeployConfigOption = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Deploy an Approved registered version to a target and record it in the version's history.

    Deploying what already serves changes nothing and records nothing. A failed deploy records nothing
    either: the previous deployment keeps serving.
    """
    from hybridml.cli import _emit, _errors, _model_ref, _registry, _state, _target
    from hybridml.core.approval import check_approved
    from hybridml.deploy import check_traffic_percent, mlflow_fetch
    from hybridml.errors import InvalidInputError, NotFoundError

    with _errors(ctx):
        percent = 100 if canary is None else check_traffic_percent(canary)
        if percent == 100 and canary is not None:
            raise InvalidInputError("--canary must be 1-99 (deploy without --canary to replace the stable version)")
        flags: dict[str, Any] = {"endpoint_name": endpoint_name, "role_arn": role_arn, "bucket": bucket}
        flags.update(image_uri=image_uri, region=region, serving=serving)
        flags.update(namespace=namespace, kubeconfig=kubeconfig, context=context)
        fetch = mlflow_fetch(_state(ctx).settings.tracking_uri)
        name = target or "local"
        timeout_key = "start_timeout_s" if name == "local" else "ready_timeout_s"
        deployer = _target(ctx, target, deploy_config, fetch=fetch, **flags, **{timeout_key: timeout})
        registry = _registry(ctx)
        info = registry.resolve(model)
        check_approved(info.name, info.version, info.status)
        ref = _model_ref(registry, f"{info.name}/{info.version}", fetch)
        endpoint = getattr(deployer.config, "endpoint_name", None) or ref.name
        try:
            before = deployer.status(endpoint)
        except NotFoundError:
            before = None
        deployment = deployer.deploy(ref, traffic_percent=percent)
        changed = _summary(before) != _summary(deployment)
        if changed:
            detail = f"{deployment.target} {deployment.name}: {'canary' if percent < 100 else 'stable'} at {percent}%"
            figures = {
                "target": deployment.target,
                "endpoint": deployment.endpoint,
                "traffic_percent": percent,
                "stable": deployment.stable_version,
                "canary": deployment.canary_version,
            }
            registry.record_event(
                info.name, info.version, "deployment", detail, reason=json.dumps(figures, separators=(",", ":"))
            )
    _emit({**asdict(deployment), "changed": changed}, as_json)


def _summary(deployment: Any) -> tuple[Any, ...] | None:
    """What a deploy can change: versions, split, and the detail (which names the SageMaker config in use)."""
    if deployment is None:
        return None
    return (
        deployment.stable_version,
        deployment.canary_version,
        deployment.canary_percent,
        deployment.shadow_version,
        deployment.detail,
    )


def mirror(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model (also the SageMaker model package group's name).")],
    version: Annotated[int, typer.Argument(help="Registered version.")],
    pull: Annotated[
        bool, typer.Option("--pull", help="Take the status set in SageMaker into the registry (default: push).")
    ] = False,
    region: Annotated[str | None, typer.Option("--region", help="AWS region (default: the AWS chain's).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Mirror a version's approval status to its SageMaker model package (or pull one set there back)."""
    from hybridml.cli import _emit, _errors, _registry
    from hybridml.deploy.sagemaker import default_clients
    from hybridml.registry.sagemaker_mirror import SageMakerMirror

    with _errors(ctx):
        sync = SageMakerMirror(_registry(ctx), default_clients(region).sagemaker)
        result = sync.pull(name, version) if pull else sync.push(name, version)
    _emit(asdict(result), as_json)
