"""Register, approve, deploy, wait-until-ready and inference steps, and the run summary."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hybridml.config import Settings
from hybridml.core import approval
from hybridml.errors import InvalidInputError
from hybridml.steps.runtime import code_version

if TYPE_CHECKING:
    from hybridml.deploy import Deployment, DeployTarget, Fetch
    from hybridml.deploy.config import SageMakerConfig


@dataclass(frozen=True)
class Registered:
    """A registered model version."""

    model_version: int
    roc_auc: float
    branch: str


def _registry(tracking_uri: str, user: str = "pipeline") -> Any:
    from hybridml.registry import Registry

    return Registry(tracking_uri, user=user)


def register(
    *,
    model_name: str,
    model_uri: str,
    run_id: str,
    roc_auc: float,
    data_hash: str,
    pipeline_run_id: str,
    branch: str,
    run_key: str,
    tracking_uri: str,
) -> Registered:
    """Create a version tagged ``PendingManualApproval``; a retried step returns the version it made before."""
    if not model_name:
        raise InvalidInputError("model_name must not be empty")
    info = _registry(tracking_uri).register(
        model_name,
        model_uri,
        run_id=run_id,
        run_key=run_key,
        tags={
            "roc_auc": f"{roc_auc:.6f}",
            "data_hash": data_hash,
            "pipeline_run_id": pipeline_run_id,
            "branch": branch,
            "code_version": code_version(),
        },
    )
    return Registered(model_version=int(info.version), roc_auc=roc_auc, branch=branch)


def approve(
    *, model_name: str, version: int, threshold: float, tolerance: float, auto_approve: bool, tracking_uri: str
) -> str:
    """Apply the approval policy (or leave the version pending when auto-approval is off); returns the status.

    The policy decides on the state read under the model's lock, so a champion approved meanwhile by another
    run is the one compared against, and a status a person set meanwhile stands (only pending versions are
    decided).
    """
    registry = _registry(tracking_uri, user="policy")
    if not auto_approve:
        return str(registry.get_version(model_name, version).status)
    approval.check_threshold("threshold", threshold)
    approval.check_threshold("tolerance", tolerance)
    from hybridml.registry import VersionInfo

    def policy(current: VersionInfo, champion: VersionInfo | None) -> approval.Decision | None:
        champion_roc = champion.roc_auc if champion is not None and champion.version != current.version else None
        return approval.auto_decision(current.status, current.roc_auc, threshold, champion_roc, tolerance)

    return str(registry.transition(model_name, version, policy).status)


def deploy_target(
    target: str,
    home: str,
    deploy_config: str = "",
    fetch: Fetch | None = None,
    *,
    kserve_namespace: str = "",
    kserve_service_account: str = "",
) -> DeployTarget:
    """The deploy target named ``target`` (empty: the config's ``target``, else ``local``), through the factory.

    Args:
        target: ``local``, ``kserve`` or ``sagemaker`` (the pipeline parameter ``deploy_target``).
        home: hybridml home (the local target keeps its state under it); empty: from the environment.
        deploy_config: the target's options as a JSON or YAML object (the pipeline parameter ``deploy_config``).
        fetch: how the target reads model URIs (default: paths, ``file://`` and ``s3://``).
        kserve_namespace: for the kserve target, the namespace of its InferenceServices, over ``deploy_config``'s
            (empty: the config's); ignored by the other targets.
        kserve_service_account: for the kserve target, the ServiceAccount its predictor pods run as
            (``KServeConfig.service_account``), over ``deploy_config``'s (empty: the config's); ignored by the others.

    In a pod the kserve target reaches the API server with the pod's own ServiceAccount (in-cluster config) unless
    ``deploy_config`` names a ``kubeconfig``.
    """
    from hybridml.deploy import config_from, fetch_artifact, make_target, parse_config

    settings = Settings.from_env(home=home or None)
    options = parse_config(deploy_config, "deploy_config")
    if (target or options.get("target")) == "kserve":
        # The parameters a Kubeflow user sets beside deploy_target, so the JSON object can stay the cluster default.
        if kserve_namespace:
            options["namespace"] = kserve_namespace
        if kserve_service_account:
            options["service_account"] = kserve_service_account
    config = config_from(target or None, options, settings)
    return make_target(config, fetch=fetch or fetch_artifact)


def deploy(
    *,
    model_name: str,
    version: int,
    target: str,
    traffic_percent: int,
    home: str,
    tracking_uri: str,
    deploy_config: str = "",
    kserve_namespace: str = "",
    kserve_service_account: str = "",
) -> str:
    """Deploy an Approved version by reference and record where it runs; returns the endpoint URL.

    The target fetches the model itself from the version's artifact URI (through MLflow where the URI is an
    MLflow one); only the manifest and reference profile are read here, to build the reference, which carries
    the version's pipeline run (the kserve target annotates its InferenceService with it). Every deployment, on
    any target, sets the version's ``deployment`` tag and records a ``deployment`` event in its history.
    """
    from hybridml.deploy import mlflow_fetch, model_ref

    registry = _registry(tracking_uri, user="deployer")
    info = registry.get_version(model_name, version)
    # The graph only reaches deploy for Approved versions; this guards manual and retried calls too.
    approval.check_approved(model_name, version, info.status)
    fetch = mlflow_fetch(tracking_uri)
    source = info.source or f"models:/{info.name}/{info.version}"
    ref = model_ref(info.name, info.version, source, fetch, pipeline_run_id=info.pipeline_run_id or "")
    chosen = deploy_target(
        target,
        home,
        deploy_config,
        fetch=fetch,
        kserve_namespace=kserve_namespace,
        kserve_service_account=kserve_service_account,
    )
    deployment = chosen.deploy(ref, traffic_percent=traffic_percent)
    where = {"target": deployment.target, "endpoint": deployment.endpoint}
    registry.set_version_tag(model_name, version, "deployment", json.dumps(where))
    role = "canary" if traffic_percent < 100 else "stable"
    detail = f"{deployment.target} {deployment.name}: {role} at {traffic_percent}%"
    registry.record_event(model_name, version, "deployment", detail, reason=json.dumps(where, separators=(",", ":")))
    return deployment.endpoint


def wait_ready(
    *,
    model_name: str,
    target: str,
    timeout_s: float,
    home: str,
    deploy_config: str = "",
    kserve_namespace: str = "",
    kserve_service_account: str = "",
) -> str:
    """Block until the deployment answers ready or the time budget is spent; returns its endpoint."""
    chosen = deploy_target(
        target,
        home,
        deploy_config,
        kserve_namespace=kserve_namespace,
        kserve_service_account=kserve_service_account,
    )
    return chosen.wait_until_ready(model_name, timeout_s=timeout_s).endpoint


def infer(
    *,
    model_name: str,
    test_path: str,
    schema_path: str,
    n_rows: int,
    target: str = "local",
    home: str = "",
    deploy_config: str = "",
    kserve_namespace: str = "",
    kserve_service_account: str = "",
) -> list[float]:
    """Score held-out rows (the model's features only) through the deployment's target; returns the scores."""
    from hybridml.steps.prepare import load_split

    frame, schema = load_split(test_path, schema_path)
    rows = frame[schema.names].head(max(1, n_rows))
    records = json.loads(rows.to_json(orient="records"))
    chosen = deploy_target(
        target,
        home,
        deploy_config,
        kserve_namespace=kserve_namespace,
        kserve_service_account=kserve_service_account,
    )
    return chosen.invoke(model_name, records, protocol="v2")


BRIDGE_KEYS = ("canary",)  # what a sagemaker_bridge object holds besides SageMakerConfig's fields


@dataclass(frozen=True)
class Bridge:
    """The ``sagemaker_bridge`` pipeline parameter, read and checked.

    Attributes:
        config: the SageMaker target's configuration (every ``SageMakerConfig`` field may be given).
        traffic_percent: the share the version gets on the endpoint: 100 (``canary`` absent) replaces the
            stable version, 1-99 deploys it as a canary beside it.
    """

    config: SageMakerConfig
    traffic_percent: int = 100


def parse_bridge(text: str, settings: Settings | None = None) -> Bridge | None:
    """The bridge described by ``text`` (a JSON or YAML object), or None when ``text`` is empty (bridge off).

    Raises:
        InvalidInputError: not an object; a ``target`` other than ``sagemaker``; an unknown key (named); a bad
            value; a ``canary`` that is not an integer from 1 to 99; or the image, role or bucket missing.
    """
    from hybridml.deploy import config_from, parse_config
    from hybridml.deploy.config import SageMakerConfig

    if not text.strip():
        return None
    options = parse_config(text, "sagemaker_bridge")
    if not options:
        raise InvalidInputError("sagemaker_bridge must name at least role_arn, bucket and image_uri (or be empty)")
    percent = options.pop("canary", None)
    if percent is None:
        percent = 100
    elif isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 99:
        raise InvalidInputError(f"sagemaker_bridge canary must be an integer from 1 to 99, got {percent!r}")
    try:
        config = config_from("sagemaker", options, settings or Settings.from_env())
    except InvalidInputError as exc:
        raise InvalidInputError(f"sagemaker_bridge: {exc.message}") from exc
    assert isinstance(config, SageMakerConfig)  # config_from("sagemaker", ...) builds nothing else
    config.require_deploy_settings()
    return Bridge(config=config, traffic_percent=percent)


@dataclass(frozen=True)
class Bridged:
    """What the ``sagemaker_bridge`` step did (the step's output, as JSON).

    Attributes:
        model_name: registered model (also the model package group).
        model_version: the version mirrored and deployed.
        approval_status: the status now on both sides.
        package_arn: the version's SageMaker model package.
        mirrored: whether the model package was written (False: it already had the status).
        endpoint_name: SageMaker endpoint serving the version.
        endpoint: its InvokeEndpoint URL.
        stable_version: version label the endpoint's stable variant serves.
        canary_version: version label of its canary variant, or None.
        canary_percent: the canary's share of requests.
        deployed: whether the endpoint changed (False: it already served this layout).
        detail: the endpoint's state, one line.
    """

    model_name: str
    model_version: int
    approval_status: str
    package_arn: str
    mirrored: bool
    endpoint_name: str
    endpoint: str
    stable_version: str
    canary_version: str | None
    canary_percent: int
    deployed: bool
    detail: str

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(asdict(self))


def _layout(deployment: Deployment | None) -> tuple[Any, ...] | None:
    if deployment is None:
        return None
    return (deployment.stable_version, deployment.canary_version, deployment.canary_percent, deployment.detail)


def sagemaker_bridge(
    *, model_name: str, version: int, bridge: str, tracking_uri: str, home: str = ""
) -> Bridged | None:
    """Mirror an Approved version's status to SageMaker and serve it on a SageMaker endpoint; None when off.

    In order: the approval status is pushed to the model package group named like the model (a ``mirror``
    event), the version is deployed to the endpoint (``endpoint_name``, default the model's name) at 100 % or
    as a ``canary``, and the endpoint is waited on until ``InService`` within ``ready_timeout_s`` (the deploy
    waits too; this bounds the whole step). A change of the endpoint records a ``deployment`` event with its
    figures; a re-run that finds the same layout in service records nothing. A failure raises with its
    one-line cause (a failed endpoint's ``FailureReason``); nothing is recorded for the failed deploy.

    Args:
        model_name: registered model.
        version: its version; only Approved versions go on (re-checked against the registry).
        bridge: the pipeline parameter ``sagemaker_bridge`` (see :func:`parse_bridge`); empty: do nothing.
        tracking_uri: the MLflow tracking URI of the registry.
        home: hybridml home (for the defaults of the settings); empty: from the environment.

    Raises:
        ConflictError: the version is not Approved.
        InvalidInputError: a bad ``bridge``; SageMaker refused a request.
        NotReadyError: the endpoint failed or was not InService within the budget.
    """
    import time

    from hybridml.deploy import make_target, mlflow_fetch, model_ref
    from hybridml.errors import NotFoundError
    from hybridml.registry.sagemaker_mirror import SageMakerMirror

    settings = Settings.from_env(home=home or None)
    parsed = parse_bridge(bridge, settings)
    if parsed is None:
        return None
    config = parsed.config
    started = time.monotonic()
    registry = _registry(tracking_uri, user="sagemaker-bridge")
    info = registry.get_version(model_name, version)
    approval.check_approved(model_name, version, info.status, "go to SageMaker")
    fetch = mlflow_fetch(tracking_uri)
    target = make_target(config, fetch=fetch)  # its clients (the standard AWS chain) serve the mirror too
    mirrored = SageMakerMirror(registry, target.clients.sagemaker, max_attempts=config.max_attempts).push(
        info.name, info.version
    )
    ref = model_ref(info.name, info.version, info.source or f"models:/{info.name}/{info.version}", fetch)
    name = config.endpoint_name or info.name
    try:
        before: Deployment | None = target.status(name)
    except NotFoundError:
        before = None
    target.deploy(ref, traffic_percent=parsed.traffic_percent)
    remaining = max(0.0, config.ready_timeout_s - (time.monotonic() - started))
    deployment = target.wait_until_ready(name, timeout_s=remaining)
    # The detail names the endpoint config in use, so a new layout of the same versions counts as a change.
    changed = _layout(before) != _layout(deployment)
    if changed:
        role = "canary" if parsed.traffic_percent < 100 else "stable"
        figures = {
            "target": deployment.target,
            "endpoint": deployment.endpoint,
            "traffic_percent": parsed.traffic_percent,
            "stable": deployment.stable_version,
            "canary": deployment.canary_version,
            "package": mirrored.package_arn,
            "seconds": round(time.monotonic() - started, 3),
        }
        registry.record_event(
            info.name,
            info.version,
            "deployment",
            f"sagemaker {deployment.name}: {role} at {parsed.traffic_percent}% (sagemaker_bridge)",
            reason=json.dumps(figures, separators=(",", ":")),
        )
    return Bridged(
        model_name=info.name,
        model_version=int(info.version),
        approval_status=mirrored.status,
        package_arn=mirrored.package_arn,
        mirrored=mirrored.changed,
        endpoint_name=deployment.name,
        endpoint=deployment.endpoint,
        stable_version=deployment.stable_version,
        canary_version=deployment.canary_version,
        canary_percent=deployment.canary_percent,
        deployed=changed,
        detail=deployment.detail,
    )


@dataclass(frozen=True)
class Summary:
    """The run's result, as `hybridml run --json` prints it."""

    roc_auc: float
    branch: str
    model_name: str
    model_version: int
    approval_status: str
    endpoint: str | None
    prediction: float | None
    next_step: str | None
    # Input columns not used as features and why (identifier-like, or dropped on request).
    dropped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(asdict(self))


def summarize(
    *,
    roc_auc: float,
    branch: str,
    model_name: str,
    version: int,
    status: str,
    endpoint: str,
    predictions_json: str,
    dropped_json: str = "",
    tracking_uri: str = "",
    experiment: str = "",
    pipeline_run_id: str = "",
) -> Summary:
    """Build the summary and end the pipeline's parent MLflow run; a version left pending ends with the command
    that approves it."""
    if tracking_uri and pipeline_run_id:
        from hybridml.adapters.tracking import Tracker

        Tracker(tracking_uri, experiment or "hybridml").finish_pipeline_run(pipeline_run_id)
    predictions = json.loads(predictions_json) if predictions_json else []
    dropped = json.loads(dropped_json) if dropped_json else {}
    next_step = None
    if status != approval.APPROVED:
        next_step = f"hybridml models approve {model_name} {version} --reason '...'"
    return Summary(
        roc_auc=round(float(roc_auc), 6),
        branch=branch,
        model_name=model_name,
        model_version=int(version),
        approval_status=status,
        endpoint=endpoint or None,
        prediction=float(predictions[0]) if predictions else None,
        next_step=next_step,
        dropped=dropped,
    )
