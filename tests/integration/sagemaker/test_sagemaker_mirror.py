"""Approval mirrored to a SageMaker model package group on a moto_server, and pulled back, with history."""

from __future__ import annotations

import json

import pytest

from hybridml.errors import NotFoundError
from hybridml.registry import Registry
from hybridml.registry.sagemaker_mirror import MirrorResult, SageMakerMirror
from tests.integration.sagemaker.conftest import RegistryHome
from tests.integration.sagemaker.motoserver import MotoServer


def test_push_creates_group_and_package_then_updates_on_change(aws: MotoServer, registry_home: RegistryHome) -> None:
    name = "mirror-push"
    version = registry_home.register(name)
    registry = Registry(registry_home.tracking_uri, user="alice")
    sm = aws.client("sagemaker")
    mirror = SageMakerMirror(registry, sm)

    first = mirror.push(name, version)
    assert (first.direction, first.status, first.changed) == ("push", "PendingManualApproval", True)
    assert first.detail == "registry -> sagemaker: none -> PendingManualApproval"
    assert sm.describe_model_package_group(ModelPackageGroupName=name)["ModelPackageGroupName"] == name
    package = sm.describe_model_package(ModelPackageName=first.package_arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["CustomerMetadataProperties"] == {
        "hybridml:model": name,
        "hybridml:version": str(version),
        "hybridml:mirrored-status": "PendingManualApproval",
    }
    again = mirror.push(name, version)  # nothing changed: nothing written, nothing recorded
    assert again == MirrorResult(
        name, version, "none", "PendingManualApproval", first.package_arn, False,
        "SageMaker model package already PendingManualApproval",
    )  # fmt: skip

    registry.set_status(name, version, "Approved", reason="reviewed the ROC curve")
    pushed = mirror.push(name, version)
    assert (pushed.direction, pushed.status, pushed.package_arn) == ("push", "Approved", first.package_arn)
    package = sm.describe_model_package(ModelPackageName=first.package_arn)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["CustomerMetadataProperties"]["hybridml:mirrored-status"] == "Approved"
    assert len(sm.list_model_packages(ModelPackageGroupName=name)["ModelPackageSummaryList"]) == 1
    events = [e for e in registry.history(name, version) if e.action == "mirror"]
    assert [e.detail for e in events] == [
        "registry -> sagemaker: none -> PendingManualApproval",
        "registry -> sagemaker: PendingManualApproval -> Approved",
    ]
    assert json.loads(events[1].reason) == {
        "group": name,
        "package": first.package_arn,
        "previous": "PendingManualApproval",
    }
    assert events[1].actor == "alice"


def test_a_status_set_on_aws_is_pulled_back_with_a_reason_naming_sagemaker(
    aws: MotoServer, registry_home: RegistryHome
) -> None:
    name = "mirror-pull"
    version = registry_home.register(name)
    registry = Registry(registry_home.tracking_uri, user="alice")
    sm = aws.client("sagemaker")
    mirror = SageMakerMirror(registry, sm)
    arn = mirror.push(name, version).package_arn
    nothing = mirror.pull(name, version)
    assert (nothing.direction, nothing.changed, nothing.detail) == (
        "none",
        False,
        "both sides are PendingManualApproval",
    )

    # A reviewer approves in SageMaker Studio (the AWS side).
    sm.update_model_package(
        ModelPackageArn=arn,
        ModelApprovalStatus="Approved",
        ApprovalDescription="approved in Studio by the risk team",
        CustomerMetadataProperties=sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"],
    )
    pulled = mirror.pull(name, version)
    assert (pulled.direction, pulled.status, pulled.changed) == ("pull", "Approved", True)
    info = registry.get_version(name, version)
    assert (info.status, info.is_champion) == ("Approved", True)
    status_event = [e for e in registry.history(name, version) if e.action == "status"][-1]
    assert status_event.detail == "PendingManualApproval -> Approved"
    assert (
        status_event.reason
        == f"set in SageMaker model package {arn} (group {name}): approved in Studio by the risk team"
    )
    assert status_event.actor == "sagemaker-mirror"
    last = registry.history(name, version)[-1]
    assert (last.action, last.detail) == ("mirror", "sagemaker -> registry: PendingManualApproval -> Approved")
    assert (
        sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]["hybridml:mirrored-status"]
        == "Approved"
    )
    assert mirror.pull(name, version).changed is False

    # The registry moves on (rejection); SageMaker still shows what was last mirrored, so pulling changes nothing.
    registry.set_status(name, version, "Rejected", reason="drift found")
    stale = mirror.pull(name, version)
    assert (stale.direction, stale.status, stale.changed) == ("none", "Rejected", False)
    assert stale.detail == "SageMaker still has Approved, as last pushed; the registry's Rejected is newer (push it)"
    assert registry.get_version(name, version).status == "Rejected"


def test_pull_of_a_version_never_pushed_is_not_found(aws: MotoServer, registry_home: RegistryHome) -> None:
    name = "mirror-none"
    version = registry_home.register(name)
    mirror = SageMakerMirror(Registry(registry_home.tracking_uri, user="a"), aws.client("sagemaker"))
    with pytest.raises(NotFoundError, match=f"{name} version {version} has no model package in SageMaker group"):
        mirror.pull(name, version)
    with pytest.raises(NotFoundError):
        mirror.push(name, 99)
