"""Register, approve, deploy, wait-until-ready and inference steps, and the run summary."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hybridml.config import Settings
from hybridml.core import approval
from hybridml.errors import ConflictError, InvalidInputError
from hybridml.steps.runtime import code_version

if TYPE_CHECKING:
    from hybridml.deploy import DeployTarget, Fetch


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


def deploy_target(target: str, home: str, deploy_config: str = "", fetch: Fetch | None = None) -> DeployTarget:
    """The deploy target named ``target`` (empty: the config's ``target``, else ``local``), through the factory.

    Args:
        target: ``local``, ``kserve`` or ``sagemaker`` (the pipeline parameter ``deploy_target``).
        home: hybridml home (the local target keeps its state under it); empty: from the environment.
        deploy_config: the target's options as a JSON or YAML object (the pipeline parameter ``deploy_config``).
        fetch: how the target reads model URIs (default: paths, ``file://`` and ``s3://``).
    """
    from hybridml.deploy import config_from, fetch_artifact, make_target, parse_config

    settings = Settings.from_env(home=home or None)
    config = config_from(target or None, parse_config(deploy_config, "deploy_config"), settings)
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
) -> str:
    """Deploy an Approved version by reference and record where it runs; returns the endpoint URL.

    The target fetches the model itself from the version's artifact URI (through MLflow where the URI is an
    MLflow one); only the manifest and reference profile are read here, to build the reference.
    """
    from hybridml.deploy import mlflow_fetch, model_ref

    registry = _registry(tracking_uri, user="deployer")
    info = registry.get_version(model_name, version)
    if info.status != approval.APPROVED:
        # The graph only reaches deploy for Approved versions; this guards manual and retried calls too.
        raise ConflictError(f"{model_name} version {version} is {info.status}, only Approved versions are deployed")
    fetch = mlflow_fetch(tracking_uri)
    ref = model_ref(info.name, info.version, info.source or f"models:/{info.name}/{info.version}", fetch)
    deployment = deploy_target(target, home, deploy_config, fetch=fetch).deploy(ref, traffic_percent=traffic_percent)
    where = {"target": deployment.target, "endpoint": deployment.endpoint}
    registry.set_version_tag(model_name, version, "deployment", json.dumps(where))
    role = "canary" if traffic_percent < 100 else "stable"
    detail = f"{deployment.target} {deployment.name}: {role} at {traffic_percent}%"
    registry.record_event(model_name, version, "deployment", detail, reason=json.dumps(where, separators=(",", ":")))
    return deployment.endpoint


def wait_ready(*, model_name: str, target: str, timeout_s: float, home: str, deploy_config: str = "") -> str:
    """Block until the deployment answers ready or the time budget is spent; returns its endpoint."""
    return deploy_target(target, home, deploy_config).wait_until_ready(model_name, timeout_s=timeout_s).endpoint


def infer(
    *,
    model_name: str,
    test_path: str,
    schema_path: str,
    n_rows: int,
    target: str = "local",
    home: str = "",
    deploy_config: str = "",
) -> list[float]:
    """Score held-out rows (the model's features only) through the deployment's target; returns the scores."""
    from hybridml.steps.prepare import load_split

    frame, schema = load_split(test_path, schema_path)
    rows = frame[schema.names].head(max(1, n_rows))
    records = json.loads(rows.to_json(orient="records"))
    return deploy_target(target, home, deploy_config).invoke(model_name, records, protocol="v2")


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
