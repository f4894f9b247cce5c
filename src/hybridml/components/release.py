"""Components of the release half: register, approve, deploy, wait until ready, inference, SageMaker bridge, summary."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from hybridml.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(
    model_name: str,
    model_uri: str,
    run_id: str,
    roc_auc: float,
    data_hash: str,
    pipeline_run_id: str,
    branch: str,
    tracking_uri: str,
) -> NamedTuple("RegisterOutputs", [("model_version", int), ("roc_auc", float), ("branch", str)]):  # type: ignore[valid-type]
    """Register the model version (PendingManualApproval); idempotent per pipeline run and branch."""
    from collections import namedtuple

    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    out = run_step(
        f"register ({branch})",
        "hybridml.steps.release:register",
        model_name=model_name,
        model_uri=model_uri,
        run_id=run_id,
        roc_auc=roc_auc,
        data_hash=data_hash,
        pipeline_run_id=pipeline_run_id,
        branch=branch,
        run_key=f"{pipeline_run_id}/{branch}",
        tracking_uri=tracking_uri_or_default(tracking_uri),
    )
    return namedtuple("RegisterOutputs", ["model_version", "roc_auc", "branch"])(  # type: ignore[call-arg]
        out.model_version, out.roc_auc, out.branch
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def approve(
    model_name: str, version: int, threshold: float, tolerance: float, auto_approve: bool, tracking_uri: str
) -> str:
    """Apply the approval policy; returns the version's approval status."""
    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    return run_step(
        "approve",
        "hybridml.steps.release:approve",
        model_name=model_name,
        version=version,
        threshold=threshold,
        tolerance=tolerance,
        auto_approve=auto_approve,
        tracking_uri=tracking_uri_or_default(tracking_uri),
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
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
    """Deploy the approved version to the target (options: a JSON/YAML object; for kserve, a non-empty namespace
    or predictor service account overrides the config's); returns the endpoint URL."""
    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    return run_step(
        "deploy",
        "hybridml.steps.release:deploy",
        model_name=model_name,
        version=version,
        target=target,
        traffic_percent=traffic_percent,
        home=home,
        tracking_uri=tracking_uri_or_default(tracking_uri),
        deploy_config=deploy_config,
        kserve_namespace=kserve_namespace,
        kserve_service_account=kserve_service_account,
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def sagemaker_bridge(model_name: str, version: int, bridge: str, home: str, tracking_uri: str) -> str:
    """Mirror the Approved version's status to SageMaker and serve it on a SageMaker endpoint until InService
    (``bridge``: the target's options as a JSON/YAML object); returns what was done as JSON."""
    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    done = run_step(
        "sagemaker bridge",
        "hybridml.steps.release:sagemaker_bridge",
        model_name=model_name,
        version=version,
        bridge=bridge,
        home=home,
        tracking_uri=tracking_uri_or_default(tracking_uri),
    )
    return done.to_json() if done is not None else ""


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def wait_ready(
    model_name: str,
    target: str,
    timeout_s: float,
    home: str,
    endpoint: str,
    deploy_config: str = "",
    kserve_namespace: str = "",
    kserve_service_account: str = "",
) -> str:
    """Wait until the endpoint is ready (the DescribeEndpoint/WaitForEndpoint loop); returns the endpoint."""
    from hybridml.steps.runtime import run_step

    run_step(
        "wait until ready",
        "hybridml.steps.release:wait_ready",
        model_name=model_name,
        target=target,
        timeout_s=timeout_s,
        home=home,
        deploy_config=deploy_config,
        kserve_namespace=kserve_namespace,
        kserve_service_account=kserve_service_account,
    )
    return endpoint


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def inference(
    endpoint: str,
    model_name: str,
    test: Input[Dataset],
    schema: Input[Artifact],
    n_rows: int,
    predictions: Output[Artifact],
    target: str = "local",
    home: str = "",
    deploy_config: str = "",
    kserve_namespace: str = "",
    kserve_service_account: str = "",
) -> str:
    """Score held-out rows through the deployment's target (``endpoint`` orders it after the wait); returns
    the scores as a JSON list."""
    import json
    from pathlib import Path

    from hybridml.steps.runtime import run_step

    scores = run_step(
        "inference",
        "hybridml.steps.release:infer",
        model_name=model_name,
        test_path=test.path,
        schema_path=schema.path,
        n_rows=n_rows,
        target=target,
        home=home,
        deploy_config=deploy_config,
        kserve_namespace=kserve_namespace,
        kserve_service_account=kserve_service_account,
    )
    Path(predictions.path).write_text(json.dumps(scores))
    return json.dumps(scores)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def summarize(
    roc_auc: float,
    branch: str,
    model_name: str,
    version: int,
    status: str,
    endpoint: str,
    predictions_json: str,
    dropped_json: str,
    tracking_uri: str,
    experiment: str,
    pipeline_run_id: str,
) -> str:
    """The run's result as one JSON object (what `hybridml run --json` prints); ends the pipeline's MLflow run."""
    from hybridml.steps.runtime import run_step, tracking_uri_or_default

    summary = run_step(
        "summary",
        "hybridml.steps.release:summarize",
        roc_auc=roc_auc,
        branch=branch,
        model_name=model_name,
        version=version,
        status=status,
        endpoint=endpoint,
        predictions_json=predictions_json,
        dropped_json=dropped_json,
        tracking_uri=tracking_uri_or_default(tracking_uri),
        experiment=experiment,
        pipeline_run_id=pipeline_run_id,
    )
    return summary.to_json()
