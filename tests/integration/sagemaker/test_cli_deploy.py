"""`hybridml deploy --target sagemaker` and `hybridml endpoints ... --target sagemaker` against a moto_server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber
from typer.testing import CliRunner

from hybridml.deploy.config import SageMakerConfig
from hybridml.deploy.sagemaker import Clients, SageMakerTarget
from hybridml.registry import Registry
from tests.integration.sagemaker.conftest import RegistryHome
from tests.integration.sagemaker.motoserver import BUCKET, IMAGE_URI, REGION, ROLE_ARN, MotoServer

HYBRIDML = str(Path(sys.executable).with_name("hybridml"))


def cli(home: Path, env: dict[str, str], *args: str) -> tuple[int, Any, str]:
    """Run the real `hybridml` as a subprocess (no daemon) with ``home``; (exit code, JSON stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HYBRIDML_", "MLFLOW_TRACKING"))}
    environ.update(env, HYBRIDML_HOME=str(home), HYBRIDML_DAEMON="0")
    done = subprocess.run([HYBRIDML, *args], env=environ, capture_output=True, text=True, timeout=240)
    payload = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None
    return done.returncode, payload, done.stderr


def in_process(home: Path, *args: str) -> tuple[int, Any, str]:
    """The same command in this process (typer's runner; the AWS chain is this process's, set by ``aws``)."""
    import hybridml.cli

    result = CliRunner().invoke(hybridml.cli.app, ["--home", str(home), *args])
    payload = json.loads(result.stdout) if result.exit_code == 0 and result.stdout.strip() else None
    return result.exit_code, payload, result.stderr


def test_deploy_leaves_an_in_service_endpoint_and_the_endpoint_commands_work(
    aws: MotoServer, registry_home: RegistryHome
) -> None:
    name = "cli-churn"
    version = registry_home.register(name)
    registry = Registry(registry_home.tracking_uri, user="alice")
    flags = ["--role-arn", ROLE_ARN, "--bucket", BUCKET, "--image-uri", IMAGE_URI, "--region", REGION]
    args = ["deploy", "--target", "sagemaker", "--model", f"{name}/{version}", "--endpoint-name", "cli-ep", *flags]

    code, _, stderr = in_process(registry_home.home, *args, "--json")
    assert code == 4 and f"{name} version {version} is PendingManualApproval, only Approved" in stderr
    registry.set_status(name, version, "Approved", reason="ok")
    before = len(registry.history(name, version))

    code, payload, stderr = cli(registry_home.home, aws.env, *args, "--json")
    assert code == 0, stderr
    assert (payload["name"], payload["target"], payload["stable_version"], payload["ready"]) == (
        "cli-ep",
        "sagemaker",
        str(version),
        True,
    )
    assert payload["changed"] is True
    sm = aws.client("sagemaker")
    described = sm.describe_endpoint(EndpointName="cli-ep")
    assert described["EndpointStatus"] == "InService"
    assert [(v["VariantName"], v["CurrentWeight"]) for v in described["ProductionVariants"]] == [("stable", 100.0)]
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    assert [v["ModelName"].startswith(f"cli-ep-v{version}-") for v in config["ProductionVariants"]] == [True]
    events = registry.history(name, version)[before:]
    assert [(e.action, e.detail) for e in events] == [("deployment", "sagemaker cli-ep: stable at 100%")]
    assert json.loads(events[0].reason) == {
        "target": "sagemaker",
        "endpoint": f"{aws.url}/endpoints/cli-ep/invocations",
        "traffic_percent": 100,
        "stable": str(version),
        "canary": None,
    }

    # The same version again: nothing changes, nothing is recorded.
    code, again, stderr = in_process(registry_home.home, *args, "--json")
    assert code == 0, stderr
    assert again["changed"] is False
    assert len(registry.history(name, version)) == before + 1

    code, listed, stderr = in_process(registry_home.home, "endpoints", "list", "--target", "sagemaker", "--json")
    assert code == 0, stderr
    assert [(d["name"], d["stable_version"], d["ready"]) for d in listed] == [("cli-ep", str(version), True)]
    code, _, stderr = in_process(registry_home.home, "endpoints", "promote", "cli-ep", "--target", "sagemaker")
    assert code == 4 and "deployment 'cli-ep' has no canary to promote" in stderr
    code, _, stderr = in_process(registry_home.home, "endpoints", "delete", "cli-ep", "--target", "sagemaker")
    assert code == 0, stderr
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []


def test_a_failed_endpoint_records_nothing_in_the_registry(
    registry_home: RegistryHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hybridml.cli
    from tests.contract.harness import FakeClock

    name = "cli-fails"
    version = registry_home.register(name)
    registry = Registry(registry_home.tracking_uri, user="alice")
    registry.set_status(name, version, "Approved", reason="ok")
    history = registry.history(name, version)

    import boto3

    session = boto3.session.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name=REGION)
    clients = Clients(session.client("sagemaker"), session.client("sagemaker-runtime"), session.client("s3"))
    clock = FakeClock()
    config = SageMakerConfig(image_uri=IMAGE_URI, role_arn=ROLE_ARN, bucket=BUCKET, ready_timeout_s=60)
    sm, s3 = Stubber(clients.sagemaker), Stubber(clients.s3)
    missing = {"service_error_code": "ValidationException", "service_message": "Could not find it."}
    sm.add_client_error("describe_endpoint", **missing)  # the CLI's look before the deploy
    sm.add_client_error("describe_endpoint", **missing)
    s3.add_client_error("head_object", service_error_code="404", http_status_code=404)
    s3.add_response("put_object", {}, {"Bucket": BUCKET, "Key": ANY, "Body": ANY})
    s3.add_response("put_object", {}, {"Bucket": BUCKET, "Key": ANY, "Body": ANY})
    sm.add_client_error("describe_model", **missing)
    sm.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:1:model/m"})
    sm.add_client_error("describe_endpoint_config", **missing)
    sm.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"})
    sm.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/e"})
    failed = {
        "EndpointName": name,
        "EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/e",
        "EndpointStatus": "Failed",
        "FailureReason": "CannotStartContainerError: ping failed",
        "CreationTime": "2026-01-01T00:00:00Z",
        "LastModifiedTime": "2026-01-01T00:00:00Z",
    }
    sm.add_response("describe_endpoint", failed)
    sm.add_response("delete_endpoint", {})
    sm.activate()
    s3.activate()
    target = SageMakerTarget(config, clock=clock, sleep=clock.sleep, clients=clients)
    monkeypatch.setattr(hybridml.cli, "_target", lambda *args, **kwargs: target)

    result = CliRunner().invoke(
        hybridml.cli.app,
        ["--home", str(registry_home.home), "deploy", "--target", "sagemaker", "--model", f"{name}/{version}"],
    )
    assert result.exit_code == 5
    assert "failed: CannotStartContainerError: ping failed (the failed endpoint was deleted" in result.output
    assert registry.history(name, version) == history
    sm.assert_no_pending_responses()
    s3.assert_no_pending_responses()


def test_the_pipeline_deploy_step_takes_the_sagemaker_target_and_records_the_deployment(
    aws: MotoServer, registry_home: RegistryHome
) -> None:
    from hybridml.steps import release

    name = "step-churn"
    version = registry_home.register(name)
    registry = Registry(registry_home.tracking_uri, user="alice")
    registry.set_status(name, version, "Approved", reason="ok")
    deploy_config = json.dumps(
        {"role_arn": ROLE_ARN, "bucket": BUCKET, "image_uri": IMAGE_URI, "ready_timeout_s": 20, "poll_s": 0.5}
    )
    common = {
        "model_name": name,
        "target": "sagemaker",
        "home": str(registry_home.home),
        "deploy_config": deploy_config,
    }
    endpoint = release.deploy(**common, version=version, traffic_percent=100, tracking_uri=registry_home.tracking_uri)
    assert endpoint == f"{aws.url}/endpoints/{name}/invocations"
    assert release.wait_ready(**common, timeout_s=10) == endpoint
    assert aws.client("sagemaker").describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    last = registry.history(name, version)[-1]
    assert (last.action, last.detail, last.actor) == ("deployment", f"sagemaker {name}: stable at 100%", "deployer")
    assert json.loads(last.reason) == {"target": "sagemaker", "endpoint": endpoint}


def test_deploy_is_generic_over_targets_the_local_one_too(registry_home: RegistryHome) -> None:
    name = "cli-local"
    version = registry_home.register(name)
    registry = Registry(registry_home.tracking_uri, user="alice")
    registry.set_status(name, version, "Approved", reason="ok")
    home = registry_home.home
    try:
        code, payload, stderr = in_process(home, "deploy", "--model", f"{name}@champion", "--json")
        assert code == 0, stderr
        assert (payload["target"], payload["stable_version"], payload["ready"], payload["changed"]) == (
            "local",
            str(version),
            True,
            True,
        )
        assert payload["endpoint"].startswith("http://127.0.0.1:")
        last = registry.history(name, version)[-1]
        assert (last.action, last.detail) == ("deployment", f"local {name}: stable at 100%")
        code, _, stderr = in_process(home, "deploy", "--model", f"{name}/{version}", "--canary", "100")
        assert code == 2 and "--canary must be 1-99" in stderr
        code, _, stderr = in_process(home, "deploy", "--model", f"{name}/{version}", "--role-arn", "x")
        assert code == 2 and "unknown local deploy config key 'role_arn'" in stderr
    finally:
        in_process(home, "endpoints", "delete", name)


def test_models_mirror_pushes_and_pulls(aws: MotoServer, registry_home: RegistryHome) -> None:
    import hybridml.cli
    from hybridml import cli_deploy

    registered = [c.callback for c in hybridml.cli.models_app.registered_commands]
    added = cli_deploy.mirror not in registered  # the lead wires it as `hybridml models mirror`
    if added:
        hybridml.cli.models_app.command("mirror")(cli_deploy.mirror)
    try:
        name = "cli-mirror"
        version = registry_home.register(name)
        home = registry_home.home
        code, pushed, stderr = in_process(home, "models", "mirror", name, str(version), "--json")
        assert code == 0, stderr
        assert (pushed["direction"], pushed["status"], pushed["changed"]) == ("push", "PendingManualApproval", True)
        aws.client("sagemaker").update_model_package(
            ModelPackageArn=pushed["package_arn"],
            ModelApprovalStatus="Rejected",
            CustomerMetadataProperties={"hybridml:version": str(version), "hybridml:mirrored-status": "x"},
        )
        code, pulled, stderr = in_process(home, "models", "mirror", name, str(version), "--pull", "--json")
        assert code == 0, stderr
        assert (pulled["direction"], pulled["status"]) == ("pull", "Rejected")
        assert Registry(registry_home.tracking_uri, user="a").get_version(name, version).status == "Rejected"
        code, _, stderr = in_process(home, "models", "mirror", "ghost-model", "1", "--pull")
        assert code == 3 and "ghost-model" in stderr
    finally:
        if added:
            hybridml.cli.models_app.registered_commands.pop()
