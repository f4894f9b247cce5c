"""Register, approve, deploy, wait-until-ready and inference steps, and the run summary."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridml.config import Settings
from hybridml.core import approval
from hybridml.errors import ConflictError, InvalidInputError
from hybridml.steps.runtime import code_version

if TYPE_CHECKING:
    from hybridml.deploy.base import DeployTarget

DEPLOY_TARGETS = ("local", "kserve", "sagemaker")


@dataclass(frozen=True)
class Registered:
    """A registered model version."""

    model_version: int
    roc_auc: float
    branch: str


def _registry(tracking_uri: str, user: str = "pipeline") -> Any:
    from hybridml.adapters.registry import Registry

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
    """Apply the approval policy (or leave the version pending when auto-approval is off)."""
    registry = _registry(tracking_uri, user="policy")
    info = registry.get_version(model_name, version)
    if not auto_approve:
        return str(info.status)
    champion = registry.champion(model_name)
    champion_roc = champion.roc_auc if champion is not None and champion.version != info.version else None
    decision = approval.decide(float(info.roc_auc), threshold, champion_roc, tolerance)
    if decision.status == info.status:
        return decision.status
    return str(registry.set_status(model_name, version, decision.status, reason=decision.reason).status)


def deploy_target(target: str, home: str) -> DeployTarget:
    """The deploy target named ``target`` (only ``local`` is built so far)."""
    if target == "local":
        from hybridml.deploy.local import LocalTarget

        return LocalTarget(Settings.from_env(home=home or None).deployments_dir)
    if target in DEPLOY_TARGETS:
        raise InvalidInputError(f"deploy target {target!r} is not implemented yet (use 'local')")
    raise InvalidInputError(f"unknown deploy target {target!r} (choose from {', '.join(DEPLOY_TARGETS)})")


def deploy(*, model_name: str, version: int, target: str, traffic_percent: int, home: str, tracking_uri: str) -> str:
    """Deploy an Approved version and record where it runs; returns the endpoint URL."""
    registry = _registry(tracking_uri, user="deployer")
    info = registry.get_version(model_name, version)
    if info.status != approval.APPROVED:
        # The graph only reaches deploy for Approved versions; this guards manual and retried calls too.
        raise ConflictError(f"{model_name} version {version} is {info.status}, only Approved versions are deployed")
    with tempfile.TemporaryDirectory(prefix="hybridml-deploy-") as scratch:
        # The target keeps its own copy of the model; the download is only a staging area.
        bundle = registry.download(model_name, version, Path(scratch))
        deployment = deploy_target(target, home).deploy(
            model_name, version, bundle.path, traffic_percent=traffic_percent
        )
    registry.set_version_tag(
        model_name, version, "deployment", json.dumps({"target": target, "endpoint": deployment.endpoint})
    )
    return deployment.endpoint


def wait_ready(*, model_name: str, target: str, timeout_s: float, home: str) -> str:
    """Block until the deployment answers ready or the time budget is spent; returns its endpoint."""
    return deploy_target(target, home).wait_until_ready(model_name, timeout_s=timeout_s).endpoint


def infer(*, endpoint: str, model_name: str, test_path: str, schema_path: str, n_rows: int) -> list[float]:
    """Send held-out rows (without the label) to the endpoint over the V2 protocol; returns the scores."""
    from hybridml.serving import client
    from hybridml.steps.prepare import load_split

    frame, schema = load_split(test_path, schema_path)
    rows = frame.drop(columns=[schema.target]).head(max(1, n_rows))
    records = json.loads(rows.to_json(orient="records"))
    return [float(p) for p in client.predict(endpoint, model_name, records, protocol="v2")]


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

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(asdict(self))


def summarize(
    *, roc_auc: float, branch: str, model_name: str, version: int, status: str, endpoint: str, predictions_json: str
) -> Summary:
    """Build the summary; a version left pending ends with the command that approves it."""
    predictions = json.loads(predictions_json) if predictions_json else []
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
    )
