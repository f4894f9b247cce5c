"""The pipeline's sagemaker_bridge step against a real moto server: the step alone, then one whole kfp.local run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hybridml.errors import ConflictError, InvalidInputError, NotReadyError
from hybridml.registry import Registry
from hybridml.steps import release
from tests.integration.sagemaker.conftest import RegistryHome
from tests.integration.sagemaker.motoserver import BUCKET, IMAGE_URI, ROLE_ARN, MotoServer

HYBRIDML = Path(sys.executable).with_name("hybridml")
BRIDGE = {"role_arn": ROLE_ARN, "bucket": BUCKET, "image_uri": IMAGE_URI, "ready_timeout_s": 20, "poll_s": 0.5}


def _inventory(moto: MotoServer) -> dict[str, list[str]]:
    """Every SageMaker resource and S3 key the bridge could create."""
    sm, s3 = moto.client("sagemaker"), moto.client("s3")
    return {
        "endpoints": [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
        "configs": [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]],
        "models": [m["ModelName"] for m in sm.list_models()["Models"]],
        "groups": [g["ModelPackageGroupName"] for g in sm.list_model_package_groups()["ModelPackageGroupSummaryList"]],
        "keys": [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])],
    }


EMPTY = {"endpoints": [], "configs": [], "models": [], "groups": [], "keys": []}


def _packages(moto: MotoServer, group: str) -> list[dict[str, object]]:
    sm = moto.client("sagemaker")
    summaries = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    return [sm.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries]


def test_the_bridge_mirrors_then_serves_and_a_rerun_changes_nothing(
    aws: MotoServer, registry_home: RegistryHome
) -> None:
    name = "bridge-step"
    version = registry_home.register(name)
    registry = Registry(registry_home.tracking_uri, user="alice")
    registry.set_status(name, version, "Approved", reason="ok")
    call = {"model_name": name, "version": version, "home": str(registry_home.home)}
    done = release.sagemaker_bridge(**call, bridge=json.dumps(BRIDGE), tracking_uri=registry_home.tracking_uri)
    assert done is not None
    sm = aws.client("sagemaker")
    described = sm.describe_endpoint(EndpointName=name)
    assert described["EndpointStatus"] == "InService"
    assert [(v["VariantName"], v["CurrentWeight"]) for v in described["ProductionVariants"]] == [("stable", 100.0)]
    (package,) = _packages(aws, name)
    assert package["ModelApprovalStatus"] == "Approved"
    assert json.loads(done.to_json()) == {
        "model_name": name,
        "model_version": version,
        "approval_status": "Approved",
        "package_arn": package["ModelPackageArn"],
        "mirrored": True,
        "endpoint_name": name,
        "endpoint": f"{aws.url}/endpoints/{name}/invocations",
        "stable_version": str(version),
        "canary_version": None,
        "canary_percent": 0,
        "deployed": True,
        "detail": done.detail,
    }
    assert done.detail.startswith(f"serving {version} on SageMaker endpoint {name} (config {name}-c")
    mirror, deployment = registry.history(name, version)[-2:]
    assert (mirror.action, mirror.detail) == ("mirror", "registry -> sagemaker: none -> Approved")
    assert (deployment.action, deployment.actor) == ("deployment", "sagemaker-bridge")
    assert deployment.detail == f"sagemaker {name}: stable at 100% (sagemaker_bridge)"
    figures = json.loads(deployment.reason)
    assert figures.pop("seconds") >= 0
    assert figures == {
        "target": "sagemaker",
        "endpoint": done.endpoint,
        "traffic_percent": 100,
        "stable": str(version),
        "canary": None,
        "package": package["ModelPackageArn"],
    }
    before = _inventory(aws)
    again = release.sagemaker_bridge(**call, bridge=json.dumps(BRIDGE), tracking_uri=registry_home.tracking_uri)
    assert again is not None and (again.mirrored, again.deployed) == (False, False)
    assert _inventory(aws) == before
    assert registry.history(name, version)[-1] == deployment  # nothing recorded by the re-run


def test_the_bridge_refuses_a_version_that_is_not_approved_and_creates_nothing(
    aws: MotoServer, registry_home: RegistryHome
) -> None:
    name = "bridge-pending"
    version = registry_home.register(name)
    with pytest.raises(ConflictError, match=rf"^{name} version {version} is PendingManualApproval, only Approved"):
        release.sagemaker_bridge(
            model_name=name, version=version, bridge=json.dumps(BRIDGE), tracking_uri=registry_home.tracking_uri
        )
    assert _inventory(aws) == EMPTY
    assert [e.action for e in Registry(registry_home.tracking_uri, user="alice").history(name, version)] == [
        "registered"
    ]


def test_an_empty_bridge_is_off_and_touches_nothing(aws: MotoServer, registry_home: RegistryHome) -> None:
    assert release.sagemaker_bridge(model_name="x", version=1, bridge=" ", tracking_uri="sqlite:///nowhere") is None
    assert _inventory(aws) == EMPTY


def test_a_canary_bridge_deploys_beside_the_stable_version(aws: MotoServer, registry_home: RegistryHome) -> None:
    name = "bridge-canary"
    version = registry_home.register(name)
    Registry(registry_home.tracking_uri, user="alice").set_status(name, version, "Approved", reason="ok")
    bridge = json.dumps({**BRIDGE, "canary": 10})
    with pytest.raises(InvalidInputError, match=rf"cannot deploy '{version}' as a canary: '{name}' has no stable"):
        release.sagemaker_bridge(
            model_name=name, version=version, bridge=bridge, tracking_uri=registry_home.tracking_uri
        )
    # The mirror ran first (approval is the AWS side's to know), the endpoint was never created.
    assert _inventory(aws)["endpoints"] == []
    assert [p["ModelApprovalStatus"] for p in _packages(aws, name)] == ["Approved"]


def test_a_failed_endpoint_fails_the_step_with_its_reason_and_records_no_deployment(
    aws: MotoServer, registry_home: RegistryHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hybridml.deploy.sagemaker.target as sagemaker_target

    original = sagemaker_target.default_clients

    def failing_clients(region: str | None) -> Any:
        def failed(parsed: dict[str, Any], **_: Any) -> None:
            parsed["EndpointStatus"] = "Failed"
            parsed["FailureReason"] = "CapacityError: Unable to provision requested ML compute capacity"

        made = original(region)
        made.sagemaker.meta.events.register("after-call.sagemaker.DescribeEndpoint", failed)
        return made

    monkeypatch.setattr(sagemaker_target, "default_clients", failing_clients)
    name = "bridge-failed"
    version = registry_home.register(name)
    registry = Registry(registry_home.tracking_uri, user="alice")
    registry.set_status(name, version, "Approved", reason="ok")
    with pytest.raises(NotReadyError) as caught:
        release.sagemaker_bridge(
            model_name=name, version=version, bridge=json.dumps(BRIDGE), tracking_uri=registry_home.tracking_uri
        )
    assert caught.value.message == (
        f"SageMaker endpoint {name!r} failed: CapacityError: Unable to provision requested ML compute capacity"
        f" (the failed endpoint was deleted; endpoint config {_inventory(aws)['configs'][0]} and its models are kept)"
    )
    assert _inventory(aws)["endpoints"] == []
    last = registry.history(name, version)[-1]  # the mirror ran first; no deployment is recorded after it
    assert (last.action, last.detail) == ("mirror", "registry -> sagemaker: none -> Approved")


def test_one_pipeline_run_with_the_bridge_leaves_an_in_service_endpoint_and_an_approved_package(
    aws: MotoServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    bridge = tmp_path / "bridge.yaml"
    bridge.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in {**BRIDGE, "endpoint_name": "aws-churn"}.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYBRIDML_", "AWS_"))}
    env.update(aws.env, HYBRIDML_DAEMON="0")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HYBRIDML), "--home", str(home), *args], capture_output=True, text=True, timeout=300, env=env
        )

    try:
        result = cli("run", "--model-name", "churn", "--sagemaker-bridge", str(bridge), "--json")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert (summary["approval_status"], summary["model_version"]) == ("Approved", 1)
        steps = [json.loads(line)["step"] for line in (Path(summary["run_dir"]) / "events.jsonl").open()]
        assert steps.count("sagemaker bridge") == 2  # start and end, once
    finally:
        cli("endpoints", "delete", "churn")  # the run's local endpoint
    described = aws.client("sagemaker").describe_endpoint(EndpointName="aws-churn")
    assert described["EndpointStatus"] == "InService"
    assert [(v["VariantName"], v["CurrentWeight"]) for v in described["ProductionVariants"]] == [("stable", 100.0)]
    (package,) = _packages(aws, "churn")
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["CustomerMetadataProperties"]["hybridml:version"] == "1"
    history = Registry(f"sqlite:///{home / 'mlflow.db'}", user="test").history("churn", 1)
    # The local deploy and the bridge are siblings under the approval: their order is the runner's choice.
    assert sorted(e.detail for e in history if e.action in ("mirror", "deployment")) == [
        "local churn: stable at 100%",
        "registry -> sagemaker: none -> Approved",
        "sagemaker aws-churn: stable at 100% (sagemaker_bridge)",
    ]
